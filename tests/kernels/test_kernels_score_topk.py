"""score_topk: block scores fused with the running top-k; Triton (interpreter), twin, float64."""

import pytest
import torch
from kernel_test_utils import BACKENDS, nan_padded, needs_interpreter

from influence_kernels import score_topk as op


def brute(Q, F, k):
    """float64 reference: the k largest and k smallest scores of Q @ Fᵀ per row."""
    S = Q.double() @ F.double().T
    w = min(k, S.shape[1])
    return S.topk(w, dim=1).values, S.topk(w, dim=1, largest=False).values, S


def streamed(Q, F, k, block, backend):
    running = None
    for lo in range(0, F.shape[0], block):
        running = op.score_topk(Q, F[lo:lo + block], k, offset=lo, running=running, backend=backend)
    return running


def check(result, Q, F, k, tol):
    top_ref, bot_ref, S = brute(Q, F, k)
    top_s, top_i, bot_s, bot_i = result
    assert top_i.dtype == bot_i.dtype == torch.int64 and top_s.dtype == Q.dtype
    torch.testing.assert_close(top_s.double(), top_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(bot_s.double(), bot_ref, rtol=tol, atol=tol)
    for s, i in ((top_s, top_i), (bot_s, bot_i)):  # each index's own score is the one reported
        torch.testing.assert_close(S.gather(1, i), s.double(), rtol=tol, atol=tol)
        assert all(len(set(row.tolist())) == row.numel() for row in i)  # no index twice


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m,n,d,k,block", [(1, 1, 1, 1, 1), (5, 77, 33, 7, 30),
                                           (19, 130, 70, 20, 64), (3, 9, 5, 12, 4)])  # last: k > n
def test_matches_float64_brute_force_on_odd_shapes(backend, m, n, d, k, block):
    g = torch.Generator().manual_seed(m + n)
    Q, F = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g)
    result = streamed(Q, F, k, block, backend)
    assert result[0].shape == (m, min(k, n))
    check(result, Q, F, k, tol=1e-5)


@needs_interpreter
def test_triton_ties_rank_the_lower_index_first_and_agree_with_the_twin():
    Q = torch.ones(3, 4)
    F = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [-1, 0, 0, 0]] * 5)  # 1, 0, 1, -1
    top_s, top_i, bot_s, bot_i = streamed(Q, F, 6, 7, "triton")
    assert top_i[0].tolist() == [0, 2, 4, 6, 8, 10] and bot_i[0].tolist() == [3, 7, 11, 15, 19, 1]
    twin = streamed(Q, F, 6, 7, "torch")
    assert torch.equal(top_s, twin[0]) and torch.equal(bot_s, twin[2])


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_inputs_accumulate_in_float32(dtype):
    g = torch.Generator().manual_seed(4)
    Q, F = torch.randn(6, 40, generator=g).to(dtype), torch.randn(50, 40, generator=g).to(dtype)
    top_s, top_i, bot_s, _ = op.score_topk(Q, F, 5, backend="triton")
    assert top_s.dtype == dtype
    top_ref, bot_ref, _ = brute(Q, F, 5)  # the same rounded inputs, in float64
    torch.testing.assert_close(top_s.double(), top_ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(bot_s.double(), bot_ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_nan_padded_inputs(backend):
    g = torch.Generator().manual_seed(5)
    Q, F = torch.randn(4, 9, generator=g), torch.randn(33, 9, generator=g)
    check(op.score_topk(nan_padded(Q), nan_padded(F), 4, backend=backend), Q, F, 4, tol=1e-5)


def test_non_finite_scores_surface_in_the_top_k():
    Q, F = torch.ones(2, 3), torch.randn(10, 3)
    F[6, 0] = float("nan")
    for backend in ["torch"] + (["triton"] if op.interpreted() else []):
        top_s, _, bot_s, _ = op.score_topk(Q, F, 2, backend=backend)
        assert not (torch.isfinite(top_s).all() and torch.isfinite(bot_s).all()), backend


def test_keys_order_like_the_scores():
    s = torch.tensor([-float("inf"), -3.5, -0.0, 0.0, 1e-30, 2.0, float("inf")])
    keys = op.encode(s, torch.arange(7))
    assert torch.equal(keys.argsort(), torch.arange(7))
    values, idx = op.decode(keys)
    assert torch.equal(values, s) and torch.equal(idx, torch.arange(7))


def test_auto_on_cpu_runs_the_twin_and_float64_never_the_kernel(monkeypatch):
    monkeypatch.setattr(op, "_score_topk_triton", lambda *a: pytest.fail("kernel ran"))
    Q, F = torch.randn(3, 4), torch.randn(8, 4)
    if not op.interpreted():
        op.score_topk(Q, F, 2)
    assert not op.uses_triton(Q.double(), F.double(), 2, backend="auto")
    with pytest.raises(ValueError, match="float64"):
        op.score_topk(Q.double(), F.double(), 2, backend="triton")
    with pytest.raises(ValueError, match="k <= 128"):
        op.score_topk(Q, F, 129, backend="triton")


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(k=0), ValueError, "k"), (dict(k=2.0), ValueError, "k"),
    (dict(offset=-1), ValueError, "offset"),
    (dict(features=torch.ones(5, 3)), ValueError, "same d"),
    (dict(queries=torch.ones(4)), ValueError, "queries"),
    (dict(features=torch.ones(5, 4, dtype=torch.int64)), TypeError, "features"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(running=(torch.ones(1, 1),)), ValueError, "running"),
])
def test_input_validation(kwargs, error, match):
    args = dict(queries=torch.ones(2, 4), features=torch.ones(5, 4), k=2) | kwargs
    with pytest.raises(error, match=match):
        op.score_topk(**args)
