"""`method="ekfac"` against Kronecker factors and GGNs built independently, per example.

Within one layer EK-FAC is not K-FAC: with `correct_eigenvalues=False` the block must equal
the exact Kronecker product S ⊗ A; with the correction it must equal
Q diag(diag(Qᵀ F Q)) Qᵀ, Q = Q_S ⊗ Q_A, F the exact GGN block of the layer.
"""

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

import influence as inf
from tests.methods._reference import ggn, per_example_grads

DAMPING = 0.02


def tilde_order(out_features, in_features, w_offset, b_offset):
    """Flat-θ positions of W̃ = [W | b] (row-major, bias last column)."""
    W = w_offset + torch.arange(out_features * in_features).view(out_features, in_features)
    b = b_offset + torch.arange(out_features).view(out_features, 1)
    return torch.cat([W, b], dim=1).reshape(-1)


def softmax_hessians(logits):
    P = torch.softmax(logits, dim=1)
    return torch.diag_embed(P) - P[:, :, None] * P[:, None, :]


def block_matrix(A, S, F_block, correct, shift):
    """K-FAC (S ⊗ A) or its eigenvalue-corrected version, plus shift·I."""
    if correct:
        Q = torch.kron(torch.linalg.eigh(S)[1], torch.linalg.eigh(A)[1])
        M = Q @ torch.diag(torch.diagonal(Q.T @ F_block @ Q)) @ Q.T
    else:
        M = torch.kron(S, A)
    return M + shift * torch.eye(len(M), dtype=M.dtype)


def block_scores(blocks, Gt, Gtr):
    """Σ over blocks (positions, matrix) of Gt[:, pos] M⁻¹ Gtr[:, pos]ᵀ."""
    return sum(Gt[:, pos] @ torch.linalg.solve(M, Gtr[:, pos].T) for pos, M in blocks)


def ekfac_scores(model, task, train, test, **options):
    """Plain EK-FAC scores (no dense block), every eigenbasis component kept."""
    return inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, progress=False,
                          **{"keep": 1.0, "dense_block": 0, **options}).fit().scores(test)


@pytest.mark.parametrize("correct", [False, True])
def test_one_linear_layer(logreg, correct):
    model, task, (X, y), test = logreg
    pos = tilde_order(3, 5, 0, 15)
    Xt = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    A = Xt.T @ Xt / len(X)
    S = softmax_hessians(model(X).detach()).mean(0)
    F = ggn(model, X)[pos][:, pos]
    M = block_matrix(A, S, F, correct, task.weight_decay + DAMPING)
    expected = block_scores([(pos, M)], per_example_grads(model, task.loss, *test),
                            per_example_grads(model, task.loss, X, y))
    got = ekfac_scores(model, task, (X, y), test, correct_eigenvalues=correct)
    assert torch.allclose(got, expected, rtol=1e-8, atol=1e-10 * expected.abs().max())
    other = ekfac_scores(model, task, (X, y), test, correct_eigenvalues=not correct)
    assert (other - expected).norm() > 1e-3 * expected.norm(), "K-FAC and EK-FAC should differ here"


@pytest.mark.parametrize("correct", [False, True])
def test_two_layer_mlp_is_block_diagonal_over_layers(mlp, correct):
    model, task, (X, y), test = mlp
    l1, l2 = model[0], model[2]
    with torch.no_grad():
        h = torch.tanh(l1(X))
        H_out = softmax_hessians(model(X))
        J1 = l2.weight[None] * (1 - h * h)[:, None, :]  # ∂logits/∂z1, [n, 3, 6]
    ones = torch.ones(len(X), 1, dtype=X.dtype)
    A1, A2 = (torch.cat([a, ones], 1).T @ torch.cat([a, ones], 1) / len(X) for a in (X, h))
    S1 = torch.einsum("nco,ncd,ndp->op", J1, H_out, J1) / len(X)
    S2 = H_out.mean(0)
    F = ggn(model, X)
    shift = task.weight_decay + DAMPING
    blocks = []
    for pos, A, S in ((tilde_order(6, 4, 0, 24), A1, S1), (tilde_order(3, 6, 30, 48), A2, S2)):
        blocks.append((pos, block_matrix(A, S, F[pos][:, pos], correct, shift)))
    expected = block_scores(blocks, per_example_grads(model, task.loss, *test),
                            per_example_grads(model, task.loss, X, y))
    got = ekfac_scores(model, task, (X, y), test, correct_eigenvalues=correct)
    assert torch.allclose(got, expected, rtol=1e-8, atol=1e-10 * expected.abs().max())


@pytest.mark.parametrize("correct", [False, True])
def test_conv2d_layer(correct):
    torch.manual_seed(0)
    X = torch.randn(30, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(18, 3)).double()
    task = inf.ClassificationTask(weight_decay=0.01, parameters=["0"])  # the conv layer only
    conv, head = model[0], lambda z: model[3](torch.tanh(z).flatten(1))
    patches, S = [], torch.zeros(2, 2, dtype=torch.float64)
    with torch.no_grad():
        z = conv(X)
        H_out = softmax_hessians(model(X))
    for n in range(len(X)):
        Jz = jacobian(lambda zz: head(zz[None])[0], z[n])  # [3, 2, 3, 3]
        for i in range(3):
            for j in range(3):
                patches.append(torch.cat([X[n, :, i:i + 2, j:j + 2].reshape(-1), torch.ones(1, dtype=X.dtype)]))
                S += Jz[:, :, i, j].T @ H_out[n] @ Jz[:, :, i, j]
    P = torch.stack(patches)
    A, S = P.T @ P / len(P), S / len(X)  # A averages over positions, S sums them
    pos = tilde_order(2, 4, 0, 8)
    F = ggn(model, X)[pos][:, pos]  # conv parameters come first in θ
    M = block_matrix(A, S, F, correct, task.weight_decay + DAMPING)
    G = lambda data: per_example_grads(model, task.loss, *data)[:, :10]
    test = (X[:7] + 0.1, y[:7])
    expected = block_scores([(pos, M)], G(test), G((X, y)))
    got = ekfac_scores(model, task, (X, y), test, correct_eigenvalues=correct)
    assert torch.allclose(got, expected, rtol=1e-8, atol=1e-10 * expected.abs().max())


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)

    def forward(self, x):
        return self.norm(self.fc(x))


def test_unsupported_parameters_are_named_or_skipped(mlp):
    _, _, train, test = mlp
    torch.manual_seed(0)
    model = Scaled().double()
    task = inf.ClassificationTask(weight_decay=0.01)
    with pytest.raises(inf.InvalidArgumentError, match=r"norm\.weight.*norm\.bias.*skip_unsupported"):
        inf.Attributor(model, train, task=task, method="ekfac", progress=False).fit()
    attr = inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, skip_unsupported=True,
                          keep=1.0, dense_block=0, progress=False).fit()
    assert attr.diagnostics["skipped_parameters"] == ["norm.weight", "norm.bias"]
    only_fc = inf.ClassificationTask(weight_decay=0.01, parameters=["fc"])
    expected = ekfac_scores(model, only_fc, train, test)
    assert torch.allclose(attr.scores(test), expected, rtol=1e-10)


def test_state_dict_round_trip(mlp):
    model, task, train, test = mlp
    attr = inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, progress=False).fit()
    fresh = inf.METHODS["ekfac"]()
    fresh.restore(attr.method.state_dict(), None)
    G = attr.test_gradients(test)
    assert torch.equal(fresh.precondition(G)[0], attr.method.precondition(G)[0])


def test_the_index_keeps_the_components_that_carry_the_effective_dimension(mlp):
    """`keep` drops eigenbasis components of small Λ: the index narrows, and what the dropped
    ones carried of each training example's self-influence stays within the promise."""
    model, task, train, test = mlp
    full = inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, keep=1.0, progress=False).fit()
    part = inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, keep=0.9, progress=False).fit()
    assert part.index.dim < full.index.dim <= full.fm.p
    kept = sum(layer["kept"] for layer in part.diagnostics["layers"].values())
    assert kept == part.index.dim
    lost = 1 - part.self_influence().sum() / full.self_influence().sum()  # Σ_i over the training set
    assert 0 <= float(lost) <= 0.1 + 1e-9, "on the training set, the dropped share is ≤ 1 − keep on average"
    assert torch.corrcoef(torch.stack([part.scores(test).flatten(), full.scores(test).flatten()]))[0, 1] > 0.95


def test_a_dense_block_over_every_component_is_exact(mlp):
    """The dense block is the exact GGN on the top components (cross-layer terms included):
    covering all of them gives `exact`; here, covering 30 of 51 already moves EK-FAC close."""
    model, task, train, test = mlp
    exact = inf.Attributor(model, train, task=task, method="exact", damping=DAMPING, progress=False).fit()
    full = inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, keep=1.0, dense_block=1000,
                          progress=False).fit()
    torch.testing.assert_close(full.scores(test), exact.scores(test), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(full.self_influence(), exact.self_influence(), rtol=1e-9, atol=1e-9)
    error = lambda scores: float((scores - exact.scores(test)).norm() / exact.scores(test).norm())
    partial = inf.Attributor(model, train, task=task, method="ekfac", damping=DAMPING, keep=1.0, dense_block=30,
                             progress=False).fit()
    assert error(partial.scores(test)) < 0.2 < error(ekfac_scores(model, task, train, test))


def truncated_softmax_hessians(logits, m):
    """Each example's diag(p) − ppᵀ cut to its top-m eigenpairs (its best rank-m approximation)."""
    w, V = torch.linalg.eigh(softmax_hessians(logits))
    return (V[:, :, -m:] * w[:, None, -m:]) @ V[:, :, -m:].transpose(1, 2)


@pytest.mark.parametrize("m", [1, 2])
def test_output_rank_uses_each_examples_best_low_rank_output_hessian(m):
    """With C = 6 classes and output_rank=m, every curvature EK-FAC builds (factor S, the
    eigenvalue correction) is that of the GGN with each example's output Hessian replaced by
    its top-m eigenpairs; the share of the trace kept is reported; None keeps everything."""
    from tests.conftest import fit_to_optimum, make_blobs

    torch.manual_seed(0)
    X, y = make_blobs(150, 4, 6, seed=3)
    Xq, yq = make_blobs(10, 4, 6, seed=4)
    task = inf.ClassificationTask(weight_decay=0.05)
    model = fit_to_optimum(nn.Linear(4, 6).double(), task, X, y)
    logits = model(X).detach()
    H = truncated_softmax_hessians(logits, m)
    pos = tilde_order(6, 4, 0, 24)
    Xt = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    A, S = Xt.T @ Xt / len(X), H.mean(0)
    F = torch.einsum("ni,nj,nab->aibj", Xt, Xt, H).reshape(30, 30) / len(X)  # Jacobian of W̃ x̃ is I ⊗ x̃ᵀ
    M = block_matrix(A, S, F, True, task.weight_decay + DAMPING)
    expected = block_scores([(pos, M)], per_example_grads(model, task.loss, Xq, yq),
                            per_example_grads(model, task.loss, X, y))
    attr = inf.Attributor(model, (X, y), task=task, method="ekfac", damping=DAMPING, progress=False, keep=1.0,
                          dense_block=0, output_rank=m).fit()
    assert torch.allclose(attr.scores((Xq, yq)), expected, rtol=1e-8, atol=1e-10 * expected.abs().max())
    w = torch.linalg.eigvalsh(softmax_hessians(logits))
    assert attr.diagnostics["output_curvature_kept"] == pytest.approx(float(w[:, -m:].sum() / w.sum()), rel=1e-9)
    full = ekfac_scores(model, task, (X, y), (Xq, yq), correct_eigenvalues=True, output_rank=None)
    assert (full - expected).norm() > 1e-4 * expected.norm(), "the truncation should change the curvature here"


def test_output_rank_must_be_a_positive_integer(mlp):
    model, task, train, _ = mlp
    with pytest.raises(inf.InvalidArgumentError, match="output_rank"):
        inf.Attributor(model, train, task=task, method="ekfac", output_rank=0, progress=False)


def test_a_layer_too_wide_to_factor_is_left_out_like_an_unsupported_one(mlp, monkeypatch):
    from influence.methods import ekfac

    model, task, train, test = mlp
    monkeypatch.setattr(ekfac, "MAX_FACTOR_SIDE", 5)  # the first layer has 6 outputs, the second 6 inputs
    with pytest.raises(inf.InvalidArgumentError, match=r"at most 5 inputs and outputs.*'0\.weight', '0\.bias', "
                                                       r"'2\.weight'"):
        inf.Attributor(model, train, task=task, method="ekfac", progress=False).fit()


@pytest.mark.parametrize("T, d_out, d_in", [(1, 5, 3), (3, 6, 7), (40, 2, 5)])  # sides first / G first
def test_rotate_gives_the_per_example_gradient_in_the_kronecker_eigenbasis(T, d_out, d_in):
    from influence.methods.ekfac import _rotate

    gen = torch.Generator().manual_seed(T)
    g = torch.randn(4, T, d_out, generator=gen, dtype=torch.float64)
    a = torch.randn(4, T, d_in, generator=gen, dtype=torch.float64)
    QS = torch.linalg.qr(torch.randn(d_out, d_out, generator=gen, dtype=torch.float64))[0]
    QA = torch.linalg.qr(torch.randn(d_in, d_in, generator=gen, dtype=torch.float64))[0]
    u, v = _rotate(g, a, QS, QA)
    got = u if v is None else u[:, :, None] * v[:, None, :]
    for i in range(4):
        G = sum(torch.outer(g[i, t], a[i, t]) for t in range(T))
        torch.testing.assert_close(got[i], QS.T @ G @ QA, rtol=1e-12, atol=1e-12)


def test_self_influence_has_its_own_smaller_automatic_damping(mlp):
    """At the automatic damping, `self_influence()` uses `SELF_DAMPING_RATIO` × the mean
    eigenvalue while queries keep theirs: the scores are those of the one-λ fit, and each
    self-influence is the float64 `exact` one at the self λ (a dense block over every
    component is exact)."""
    from influence.methods.ekfac import DAMPING_RATIOS, SELF_DAMPING_RATIO

    model, task, train, test = mlp
    fit = lambda **o: inf.Attributor(model, train, task=task, method="ekfac", keep=1.0, progress=False,
                                     **o).fit()
    default, one_lambda = fit(), fit(self_damping_ratio=None)
    lam_self = default.diagnostics["self_influence_damping"]
    assert lam_self == pytest.approx(default.damping * SELF_DAMPING_RATIO / DAMPING_RATIOS[1], rel=1e-12)
    assert one_lambda.diagnostics["self_influence_damping"] == one_lambda.damping == default.damping
    torch.testing.assert_close(default.scores(test), one_lambda.scores(test), rtol=1e-10, atol=1e-12)
    exact = inf.Attributor(model, train, task=task, method="exact", damping=lam_self, progress=False).fit()
    torch.testing.assert_close(default.self_influence(), exact.self_influence(), rtol=1e-8, atol=1e-10)
    before = one_lambda.self_influence()
    assert float((default.self_influence() - before).norm()) > 0.1 * float(before.norm())
    plain = fit(dense_block=0)  # the diagonal path: the same as an explicit λ = lam_self
    explicit = fit(dense_block=0, damping=lam_self)
    torch.testing.assert_close(plain.self_influence(), explicit.self_influence(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("given", [{"damping": DAMPING}, {"damping_ratio": 0.1}])
def test_a_damping_the_user_gives_applies_to_self_influence_too(mlp, given):
    model, task, train, test = mlp
    attr = inf.Attributor(model, train, task=task, method="ekfac", progress=False, **given).fit()
    assert attr.diagnostics["self_influence_damping"] == attr.damping
    fresh = inf.METHODS["ekfac"]()
    state = {k: v for k, v in attr.method.state_dict().items() if k != "self_damping"}
    fresh.restore(state, None)  # an index saved before `self_damping` existed: one λ
    F = attr.index.blocks(1000).__next__()[1]
    torch.testing.assert_close(fresh.self_scores(F)[0], attr.method.self_scores(F)[0])


def test_self_damping_ratio_must_be_positive(mlp):
    model, task, train, _ = mlp
    with pytest.raises(inf.errors.InvalidArgumentError, match="self_damping_ratio"):
        inf.Attributor(model, train, task=task, method="ekfac", self_damping_ratio=-1.0, progress=False)
