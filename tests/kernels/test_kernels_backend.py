"""Backend dispatch: auto/torch/triton, the environment override, and imports."""

import ast
import pathlib
import subprocess
import sys

import pytest
import torch
from kernel_test_utils import needs_interpreter

import influence_kernels._backend as backend_mod
import influence_kernels.ce_head as ce_mod
import influence_kernels.projection as proj_mod
import influence_kernels.softmax_jacobian as sj_mod

KERNELS_DIR = pathlib.Path(ce_mod.__file__).parent


class TritonCalled(Exception):
    pass


@pytest.fixture
def spy_triton(monkeypatch):
    """Make every Triton wrapper raise TritonCalled, to see which path a call takes."""
    def boom(*args, **kwargs):
        raise TritonCalled

    for mod, name in [(ce_mod, "_ce_head_hvp_triton"), (proj_mod, "_project_triton"),
                      (sj_mod, "_softmax_jacobian_vp_triton")]:
        monkeypatch.setattr(mod, name, boom)


CALLS = {
    "ce_head_hvp": lambda b: ce_mod.ce_head_hvp(torch.ones(4, 3), torch.ones(4, 2) / 2, torch.ones(2, 3), backend=b),
    "project": lambda b: proj_mod.project(torch.ones(4, 3), 2, seed=0, backend=b),
    "softmax_jacobian_vp": lambda b: sj_mod.softmax_jacobian_vp(torch.ones(4, 2) / 2, torch.ones(4, 2), backend=b),
}


@pytest.mark.parametrize("op", CALLS)
def test_auto_on_cpu_uses_torch_and_env_overrides(op, spy_triton, monkeypatch):
    monkeypatch.delenv(backend_mod.ENV_BACKEND, raising=False)
    CALLS[op]("auto")
    CALLS[op]("torch")
    if backend_mod.interpreted():
        with pytest.raises(TritonCalled):
            CALLS[op]("triton")
        monkeypatch.setenv(backend_mod.ENV_BACKEND, "triton")
        with pytest.raises(TritonCalled):
            CALLS[op]("auto")
    monkeypatch.setenv(backend_mod.ENV_BACKEND, "torch")
    CALLS[op]("auto")
    monkeypatch.setenv(backend_mod.ENV_BACKEND, "cuda")
    with pytest.raises(ValueError, match=backend_mod.ENV_BACKEND):
        CALLS[op]("auto")


def test_auto_picks_triton_for_cuda_tensors(monkeypatch):
    fake_cuda = type("T", (), {"is_cuda": True, "requires_grad": False})()
    fake_cuda_grad = type("T", (), {"is_cuda": True, "requires_grad": True})()
    monkeypatch.delenv(backend_mod.ENV_BACKEND, raising=False)
    monkeypatch.setattr(backend_mod, "interpreted", lambda: False)
    has_triton = backend_mod.triton is not None
    assert backend_mod.use_triton("auto", [fake_cuda]) == has_triton
    assert not backend_mod.use_triton("auto", [fake_cuda, fake_cuda_grad])
    with torch.no_grad():
        assert backend_mod.use_triton("auto", [fake_cuda_grad]) == has_triton
    if has_triton:
        assert backend_mod.use_triton("triton", [fake_cuda])
        with pytest.raises(ValueError, match="requires grad"):
            backend_mod.use_triton("triton", [fake_cuda_grad])
    monkeypatch.setenv(backend_mod.ENV_BACKEND, "torch")
    assert not backend_mod.use_triton("auto", [fake_cuda])


@needs_interpreter
def test_inputs_requiring_grad_use_the_differentiable_twin(monkeypatch):
    monkeypatch.setenv(backend_mod.ENV_BACKEND, "triton")
    phi = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(torch.randn(6, 2, dtype=torch.float64), 1)
    out = ce_mod.ce_head_hvp(phi, probs, torch.ones(2, 3, dtype=torch.float64))
    assert out.grad_fn is not None
    with pytest.raises(ValueError, match="requires grad"):
        ce_mod.ce_head_hvp(phi, probs, torch.ones(2, 3, dtype=torch.float64), backend="triton")
    # Inside torch.func transforms the twin runs too (vmap over directions, grad through it).
    Z = torch.randn(4, 6, 2, dtype=torch.float64)
    batched = torch.func.vmap(lambda z: sj_mod.softmax_jacobian_vp(probs, z))(Z)
    assert torch.allclose(batched, sj_mod.softmax_jacobian_vp_torch(probs, Z), rtol=1e-14, atol=0)
    g = torch.func.grad(lambda z: sj_mod.softmax_jacobian_vp(probs, z).pow(2).sum())(Z[0])
    assert g.shape == (6, 2)


@needs_interpreter
def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend_mod, "interpreted", lambda: False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        CALLS["project"]("triton")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        CALLS["project"]("numpy")


def test_import_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch\n"
        "from influence_kernels.ce_head import ce_head_hvp\n"
        "from influence_kernels.projection import project\n"
        "out = ce_head_hvp(torch.ones(4, 3), torch.ones(4, 2) / 2, torch.ones(2, 3))\n"
        "assert out.shape == (2, 3)\n"
        "try:\n"
        "    project(torch.ones(2, 3), 2, 0, backend='triton')\n"
        "except ValueError as e:\n"
        "    assert 'triton package' in str(e)\n"
        "else:\n"
        "    raise AssertionError('backend=triton without triton must fail')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=KERNELS_DIR.parent)


def test_kernels_imports_only_torch_triton_and_stdlib():
    allowed = {"torch", "triton", "influence_kernels", "__future__"} | set(sys.stdlib_module_names)
    for path in KERNELS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
