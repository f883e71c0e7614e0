"""`method="trak"` against explicit projected empirical-Fisher solves."""

import copy

import pytest
import torch

import influence as inf
from influence.projection import CountSketch
from influence_kernels.projection import projection_rows
from tests.methods._reference import per_example_grads


def fisher_scores(Gt, Gtr, damping):
    """Gt (GᵀG/n + λI)⁻¹ Grᵀ with G = Gtr, computed densely."""
    F = Gtr.T @ Gtr / len(Gtr) + damping * torch.eye(Gtr.shape[1], dtype=Gtr.dtype)
    return Gt @ torch.linalg.solve(F, Gtr.T)


def grads(model, task, train, test):
    return per_example_grads(model, task.loss, *test), per_example_grads(model, task.loss, *train)


def test_square_orthogonal_projection_equals_the_unprojected_solve(logreg):
    model, task, train, test = logreg
    Gt, Gtr = grads(model, task, train, test)
    p = Gtr.shape[1]
    attr = inf.Attributor(model, train, task=task, method="trak", projection="orthogonal", projection_dim=p,
                          damping=1e-3, progress=False).fit()
    assert attr.diagnostics["projection"] == "orthogonal"
    assert torch.allclose(attr.scores(test), fisher_scores(Gt, Gtr, 1e-3), rtol=1e-7)


def test_projection_dim_at_least_p_uses_the_gradients_unprojected(mlp):
    model, task, train, test = mlp
    Gt, Gtr = grads(model, task, train, test)
    attr = inf.Attributor(model, train, task=task, method="trak", damping=1e-3, progress=False).fit()
    assert attr.diagnostics["projection"] == "none" and attr.diagnostics["feature_dim"] == Gtr.shape[1]
    assert torch.allclose(attr.scores(test), fisher_scores(Gt, Gtr, 1e-3), rtol=1e-7)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_random_projection_and_scale_aware_damping(mlp, dist):
    model, task, train, test = mlp
    Gt, Gtr = grads(model, task, train, test)
    k = 20
    R = projection_rows(0, Gtr.shape[1], k, seed=3, dist=dist, dtype=torch.float64)
    Pt, Ptr = Gt @ R, Gtr @ R
    damping = (Ptr * Ptr).sum() / (len(Ptr) * k)  # the default: 1 × mean eigenvalue of ΦᵀΦ/n
    attr = inf.Attributor(model, train, task=task, method="trak", projection=dist, projection_dim=k, projection_seed=3,
                          progress=False).fit()
    assert attr.damping == pytest.approx(float(damping), rel=1e-10)
    assert torch.allclose(attr.scores(test), fisher_scores(Pt, Ptr, damping), rtol=1e-7)


def test_countsketch_projection_is_the_fisher_solve_of_the_sketched_gradients(mlp):
    model, task, train, test = mlp
    Gt, Gtr = grads(model, task, train, test)
    sketch = CountSketch(Gtr.shape[1], 20, seed=3)
    attr = inf.Attributor(model, train, task=task, method="trak", projection="countsketch", projection_dim=20,
                          projection_seed=3, damping=0.01, progress=False).fit()
    assert attr.diagnostics["projection"] == "countsketch"
    assert torch.allclose(attr.scores(test), fisher_scores(sketch(Gt), sketch(Gtr), 0.01), rtol=1e-7)


def test_checkpoint_ensemble_averages_per_checkpoint_solves(mlp):
    model, task, train, test = mlp
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.7)
    checkpoints = [model.state_dict(), other.state_dict()]
    parts = [fisher_scores(*grads(m, task, train, test), 0.01) for m in (model, other)]
    for ensemble, scale in (("mean", 0.5), ("sum", 1.0)):
        attr = inf.Attributor(model, train, task=task, method="trak", checkpoints=checkpoints, ensemble=ensemble,
                              damping=0.01, progress=False).fit()
        assert attr.diagnostics["feature_dim"] == 2 * 51
        assert torch.allclose(attr.scores(test), scale * (parts[0] + parts[1]), rtol=1e-7)


def test_auto_damping_is_per_checkpoint(mlp):
    model, task, train, _ = mlp
    small = copy.deepcopy(model)
    with torch.no_grad():
        small[2].weight.mul_(0.1)
    attr = inf.Attributor(model, train, task=task, method="trak", checkpoints=[model.state_dict(), small.state_dict()],
                          progress=False).fit()
    per = attr.diagnostics["damping_per_checkpoint"]
    mean_eigs = attr.diagnostics["fisher_mean_eigenvalue"]
    assert per[0] != pytest.approx(per[1], rel=0.1)
    assert per == pytest.approx(mean_eigs, rel=1e-12)  # default ratio 1
    assert attr.damping == pytest.approx(sum(per) / 2)


@pytest.mark.parametrize("options,match", [
    ({"projection": "sparse"}, "`projection`"), ({"projection_dim": 0}, "`projection_dim`"),
    ({"ensemble": "max"}, "`ensemble`"), ({"checkpoints": {"a": 1}}, "`checkpoints`"),
    ({"damping_ratio": -1}, "`damping_ratio`"),
])
def test_bad_options_name_the_argument(logreg, options, match):
    model, task, train, _ = logreg
    with pytest.raises(inf.InvalidArgumentError, match=match):
        inf.Attributor(model, train, task=task, method="trak", **options)


def test_orthogonal_projection_larger_than_p_is_refused(logreg):
    model, task, train, _ = logreg
    attr = inf.Attributor(model, train, task=task, method="trak", projection="orthogonal", projection_dim=100,
                          progress=False)
    with pytest.raises(inf.InvalidArgumentError, match="projection_dim <= p = 18"):
        attr.fit()


def test_attributor_damping_ratio_reaches_trak(mlp):
    model, task, train, _ = mlp
    attr = inf.Attributor(model, train, task=task, method="trak", damping_ratio=0.5, progress=False).fit()
    assert attr.diagnostics["damping_per_checkpoint"][0] == pytest.approx(
        0.5 * attr.diagnostics["fisher_mean_eigenvalue"][0])
