"""Seeded random projection of gradient rows, `φ(G) = G R` with R: p×k.

R's entries come from `kernels.projection_rows` (a counter-based hash of seed, row and
column), so the same seed gives the same R on every device and run. On a GPU the Triton
kernel generates R on the fly; on the CPU, regenerating R for every query would dominate
its latency, so R is materialised once when it fits in `cache_bytes` and reused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels import project, projection_rows

DEFAULT_CACHE_BYTES = 1 << 30


class Projector:
    """φ(G) = G R for G: Tensor[b, p] -> Tensor[b, k], R scaled by 1/√k (norms preserved in
    expectation).

    Args:
        p, k: input and projected dimensions.
        seed: seed of R.
        dist: "rademacher" (±1/√k) or "gaussian" (N(0, 1/k)).
        cache_bytes: materialise R on the CPU when p·k·itemsize fits in this budget.
    """

    def __init__(self, p: int, k: int, seed: int, dist: str = "rademacher", cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.p, self.k, self.seed, self.dist, self.cache_bytes = p, k, seed, dist, cache_bytes
        self._R: Tensor | None = None

    def __call__(self, G: Tensor) -> Tensor:
        if G.shape[-1] != self.p:
            raise ValueError(f"Projector expects rows of length {self.p}, got {G.shape[-1]}")
        dtype = torch.float64 if G.dtype == torch.float64 else torch.float32
        if G.is_cuda or self.p * self.k * dtype.itemsize > self.cache_bytes:
            return project(G, self.k, self.seed, dist=self.dist)
        if self._R is None or self._R.dtype != dtype:
            self._R = projection_rows(0, self.p, self.k, self.seed, self.dist, dtype=dtype)
        return (G.to(dtype) @ self._R).to(torch.promote_types(G.dtype, torch.float32))
