"""`influence.projection.Projector` gives the same φ as `kernels.project`, cached or not."""

import pytest
import torch

from influence.projection import CountSketch, Projector
from influence_kernels.projection import project


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


def sketch_matrix(sketch: CountSketch) -> torch.Tensor:
    """The p×k matrix of a CountSketch, built entry by entry (one ±1 per row)."""
    S = torch.zeros(sketch.p, sketch.k, dtype=torch.float64)
    for j in range(sketch.p):
        S[j, int(sketch.bucket[j])] = float(sketch.sign[j])
    return S


def test_countsketch_is_a_product_with_one_signed_entry_per_row():
    G = torch.randn(7, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sketch = CountSketch(500, 64, seed=3)
    S = sketch_matrix(sketch)
    assert torch.equal((S != 0).sum(dim=1), torch.ones(500, dtype=torch.long))
    assert set(S[S != 0].unique().tolist()) == {-1.0, 1.0}
    assert torch.allclose(sketch(G), G @ S, rtol=1e-12, atol=1e-12)
    assert sketch(G).dtype == torch.float64 and sketch(G.float()).dtype == torch.float32
    assert torch.equal(sketch(G), CountSketch(500, 64, seed=3)(G))       # same seed, same sketch
    assert not torch.allclose(sketch(G), CountSketch(500, 64, seed=4)(G))


def test_countsketch_inner_products_are_unbiased():
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(2, 300, dtype=torch.float64, generator=gen)
    y = 0.6 * x + 0.8 * y  # correlated, so x·y is far from 0
    estimates = torch.tensor([float(CountSketch(300, 32, seed=s)(x[None]) @ CountSketch(300, 32, seed=s)(y[None]).T)
                              for s in range(2000)])
    spread = estimates.std() / len(estimates) ** 0.5
    assert abs(float(estimates.mean()) - float(x @ y)) < 4 * spread
    norms = torch.tensor([float(CountSketch(300, 32, seed=s)(x[None]).norm() ** 2) for s in range(500)])
    assert abs(float(norms.mean()) - float(x @ x)) < 4 * norms.std() / len(norms) ** 0.5


@pytest.mark.parametrize("projector", [Projector(10, 4, seed=0), CountSketch(10, 4, seed=0)])
def test_projection_width_is_checked(projector):
    with pytest.raises(ValueError, match="rows of length 10"):
        projector(torch.zeros(2, 11))
