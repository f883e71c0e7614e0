"""Untrusted files: checkpoints load only as safetensors or with `torch.load(weights_only=True)`,
a malicious pickle (one that would write a file) is refused by every loader, and no code path
can unpickle code (a static scan of the sources)."""

from __future__ import annotations

import ast
import io
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch

import influence as inf

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs `touch MARKER`: proof that a loader executed code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.fixture
def evil(tmp_path):
    """Malicious checkpoints in the formats a user may be handed, and the file they would create."""
    marker = tmp_path / "PWNED"
    files = {"torch-zip": tmp_path / "model.pt", "legacy-pickle": tmp_path / "model.pth",
             "disguised": tmp_path / "model.safetensors", "state-dict": tmp_path / "weights.bin"}
    torch.save({"weight": Payload(marker)}, files["torch-zip"])
    files["legacy-pickle"].write_bytes(pickle.dumps({"weight": Payload(marker)}))
    files["disguised"].write_bytes(pickle.dumps(Payload(marker)))
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hook": Payload(marker)}, files["state-dict"])
    # the payloads are armed: an unsafe load does run them
    torch.load(files["torch-zip"], weights_only=False)
    assert marker.exists()
    marker.unlink()
    return files, marker


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoints_are_refused_by_every_loader(evil, tmp_path, capsys):
    from influence_app.sources import load_weights
    from influence.cli import main as influence_cli
    from influence.report.inputs import read_state_dict

    files, marker = evil
    for kind, path in files.items():
        with pytest.raises(inf.InvalidArgumentError, match=r"`--old-weights`: .* is not a safetensors file or a torch "
                                                           r"checkpoint that loads with weights_only=True"):
            read_state_dict(str(path), "--old-weights")
        with pytest.raises(inf.InvalidArgumentError, match="--weights"):
            load_weights(torch.nn.Linear(64, 10), path)
        out = tmp_path / f"report-{kind}"
        code = influence_cli(["report", "--old-factory", "tests.hardening.app_factory:linear", "--old-weights",
                              str(path), "--new-weights", str(path), "--train", "train.parquet", "--eval",
                              "eval.parquet", "--group-by", "source", "--out", str(out)])
        assert code == 2 and "weights_only=True" in capsys.readouterr().err, kind
        assert not out.exists() and not marker.exists(), kind


def test_the_app_refuses_a_malicious_checkpoint(evil, tmp_path, capsys):
    pytest.importorskip("gradio")
    from influence_app.cli import main as app_cli

    files, marker = evil
    code = app_cli(["--index", str(tmp_path / "index"), "--factory", "tests.hardening.app_factory:tiny_digits",
                    "--weights", str(files["torch-zip"]), "--train", "t", "--eval", "e"])
    assert code == 2 and not marker.exists()
    assert "influence app: error: `--weights`" in capsys.readouterr().err


def test_the_mnist_reader_refuses_code_in_its_pickle(tmp_path):
    import numpy as np

    from influence.demos.data import _ArraysOnlyUnpickler

    marker = tmp_path / "PWNED"
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system"):
        _ArraysOnlyUnpickler.load(io.BytesIO(pickle.dumps([(np.zeros(3), Payload(marker))])))
    assert not marker.exists()
    arrays = _ArraysOnlyUnpickler.load(io.BytesIO(pickle.dumps((np.arange(3.0), np.arange(2)))))
    assert arrays[0].tolist() == [0.0, 1.0, 2.0]


# ---------------------------------------------------------------------------- static scan
UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "dill.load", "dill.loads",
                "joblib.load", "marshal.load", "marshal.loads", "shelve.open", "yaml.load", "yaml.unsafe_load",
                "torch.jit.load", "torch.package.PackageImporter", "eval", "exec"}
ALLOWED = {("influence/demos/data.py", "pickle.Unpickler")}  # _ArraysOnlyUnpickler: numpy arrays only


def dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return None


def test_no_code_path_can_unpickle_code():
    """Every `torch.load` says weights_only=True, `np.load` never allows pickles, and no other
    deserialiser that can run code is called anywhere in influence/, app/ or kernels/."""
    problems = []
    for package in ("influence", "app", "kernels"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Attribute) and dotted(node) in UNSAFE_CALLS - {"eval", "exec"}:
                    if (rel, dotted(node)) not in ALLOWED:
                        problems.append(f"{rel}:{node.lineno} uses {dotted(node)}")
                if not isinstance(node, ast.Call):
                    continue
                name = dotted(node.func)
                if name in ("eval", "exec"):
                    problems.append(f"{rel}:{node.lineno} calls {name}()")
                if name == "torch.load" and keyword(node, "weights_only") is not True:
                    problems.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
                if name in ("np.load", "numpy.load") and keyword(node, "allow_pickle") not in (None, False):
                    problems.append(f"{rel}:{node.lineno} np.load with allow_pickle")
                if keyword(node, "trust_remote_code") not in (None, False):
                    problems.append(f"{rel}:{node.lineno} trust_remote_code")
    assert problems == []
