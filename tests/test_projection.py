"""`influence.projection.Projector` gives the same φ as `kernels.project`, cached or not."""

import torch

from influence.projection import Projector
from kernels import project


def test_cached_and_streamed_projection_agree():
    G = torch.randn(9, 301, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cached = Projector(301, 64, seed=5)
    streamed = Projector(301, 64, seed=5, cache_bytes=0)
    a, b = cached(G), streamed(G)
    assert cached._R is not None and streamed._R is None
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert torch.allclose(a, project(G, 64, 5), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a, Projector(301, 64, seed=6)(G))


def test_projection_preserves_inner_products_roughly():
    gen = torch.Generator().manual_seed(1)
    G = torch.randn(40, 2000, generator=gen)
    phi = Projector(2000, 1024, seed=0, dist="gaussian")(G)
    exact, approx = G @ G.T, phi @ phi.T
    assert ((approx - exact).norm() / exact.norm()) < 0.2
