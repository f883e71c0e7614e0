"""`method="auto"` (the default): which method it picks, why, and that it says so."""

import pytest
import torch
from torch import nn

import influence as inf
from tests.conftest import make_blobs


def attributor(model, n=60, d=4, **kwargs):
    X, y = make_blobs(n, d, 3, seed=0, dtype=torch.float32)
    return inf.Attributor(model, (X, y), progress=False, **kwargs)


def test_linear_and_conv_models_get_ekfac_with_a_dense_block():
    attr = attributor(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)))
    assert attr.method.name == "ekfac" and attr.method.options.dense_block > 0
    assert "EK-FAC" in attr.method_choice and "EK-FAC" in repr(attr)
    attr.fit()
    assert attr.diagnostics["method"] == "ekfac" and "51 of the 51" in attr.diagnostics["method_choice"]


def test_small_models_outside_ekfac_layers_get_exact_and_large_ones_a_projection():
    small = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3))
    attr = attributor(small)
    assert attr.method.name == "exact" and "only 51 of the 63" in attr.method_choice

    class Bilinear(nn.Module):  # no nn.Linear / nn.Conv2d at all, and p > 5,000
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 600) * 0.01)

        def forward(self, x):
            return torch.einsum("bi,ioj->bo", x, self.w).tanh() @ torch.ones(3, 3)

    big = attributor(Bilinear())
    assert big.method.name == "trak" and big.method.options.projection == "countsketch"


def test_a_layer_run_twice_is_not_given_to_ekfac():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))

    attr = attributor(Shared())
    assert attr.method.name == "exact" and "run exactly once" in attr.method_choice
    attr.fit()  # and it works


def test_auto_takes_no_method_options():
    with pytest.raises(inf.InvalidArgumentError, match="method='auto' takes no method options"):
        attributor(nn.Linear(4, 3), tol=1e-3)
