"""Every method added here survives the index folder: fit(cache_dir) → Attributor.load → same scores."""

import copy

import pytest
import torch

import influence as inf

pytestmark = pytest.mark.cross_cpu  # compares computation paths: run again under another CPU capability


@pytest.mark.parametrize("method,options", [
    ("arnoldi", {"rank": 12}), ("ekfac", {}), ("trak", {"projection_dim": 16}),
    ("trak", {"checkpoints": "two"}), ("tracin", {"checkpoints": "two"}),
])
def test_scores_survive_save_and_load(mlp, tmp_path, method, options):
    model, task, train, test = mlp
    if options.get("checkpoints") == "two":
        other = copy.deepcopy(model)
        with torch.no_grad():
            other[0].weight.mul_(0.5)
        options = {**options, "checkpoints": [model.state_dict(), other.state_dict()]}
    fitted = inf.Attributor(model, train, task=task, method=method, cache_dir=tmp_path, storage_dtype="float64",
                            progress=False, **options).fit()
    loaded = inf.Attributor.load(tmp_path, model, task=task, **options)
    assert torch.allclose(loaded.scores(test), fitted.scores(test), rtol=1e-10)
    assert torch.allclose(loaded.self_influence(), fitted.self_influence(), rtol=1e-10)
