"""Seeded random projections of gradient rows, `φ(G) = G R` with R: p×k.

`Projector` (dense R): entries from `kernels.projection_rows` (a counter-based hash of seed,
row and column), so the same seed gives the same R on every device and run. On a GPU the
Triton kernel generates R on the fly; on the CPU, regenerating R for every query would
dominate its latency, so R is materialised once when it fits in `cache_bytes` and reused.
Cost O(b·p·k) per block, and one query reads all of R (p·k values).

`OrthogonalProjector`: k ≤ p orthonormal columns from a seeded QR (materialises p×k: small p).

`make_projector(kind, p, k, seed)` picks one by name (`PROJECTIONS`).

`CountSketch` (sparse R, one ±1 per row; Charikar et al. 2002, Weinberger et al. 2009):
coordinate j of the gradient is added, with a random sign, to one random bucket of k.
Inner products are preserved in expectation with a variance comparable to a dense
projection's for gradients that are not dominated by a few coordinates, at O(b·p) cost and
no p×k matrix to store or read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from influence.errors import InvalidArgumentError
from influence.index import INDEX_BUDGET_BYTES
from influence.options import check_choice, check_int
from influence_kernels.projection import project, projection_rows

DEFAULT_CACHE_BYTES = 1 << 30


def _float_dtype(G: Tensor) -> torch.dtype:
    return torch.float64 if G.dtype == torch.float64 else torch.float32


def _check_width(G: Tensor, p: int, name: str) -> None:
    if G.shape[-1] != p:
        raise ValueError(f"{name} expects rows of length {p}, got {G.shape[-1]}")


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
        _check_width(G, self.p, "Projector")
        dtype = _float_dtype(G)
        if G.is_cuda or self.p * self.k * dtype.itemsize > self.cache_bytes:
            return project(G, self.k, self.seed, dist=self.dist)
        if self._R is None or self._R.dtype != dtype:
            self._R = projection_rows(0, self.p, self.k, self.seed, self.dist, dtype=dtype)
        return (G.to(dtype) @ self._R).to(torch.promote_types(G.dtype, torch.float32))


class CountSketch:
    """φ(G)[:, c] = Σ_{j: h(j) = c} s(j) G[:, j] for G: Tensor[b, p] -> Tensor[b, k].

    h: [p] -> [k] and s: [p] -> {±1} are drawn from a CPU generator seeded with `seed`, so
    the sketch is the same on every device. E[φ(x)·φ(y)] = x·y and E‖φ(x)‖² = ‖x‖².
    """

    def __init__(self, p: int, k: int, seed: int):
        self.p, self.k, self.seed = p, k, seed
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.bucket = torch.randint(0, k, (p,), generator=generator)
        self.sign = torch.randint(0, 2, (p,), generator=generator).mul_(2).sub_(1).to(torch.int8)

    def __call__(self, G: Tensor) -> Tensor:
        _check_width(G, self.p, "CountSketch")
        dtype = _float_dtype(G)
        bucket, sign = self.bucket.to(G.device), self.sign.to(G.device, dtype)
        out = torch.zeros(G.shape[0], self.k, dtype=dtype, device=G.device)
        return out.index_add_(1, bucket, G.to(dtype) * sign)


class OrthogonalProjector:
    """φ(G) = G Q with Q: p×k orthonormal columns from the QR of a seeded Gaussian matrix."""

    def __init__(self, p: int, k: int, seed: int):
        if k > p:
            raise ValueError(f"an orthogonal projection needs k <= p = {p}, got k = {k}")
        self.p, self.k = p, k
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.Q = torch.linalg.qr(torch.randn(p, k, generator=generator, dtype=torch.float64))[0]

    def __call__(self, G: Tensor) -> Tensor:
        _check_width(G, self.p, "OrthogonalProjector")
        return G @ self.Q.to(G.device, G.dtype)


PROJECTIONS = {
    "rademacher": lambda p, k, seed: Projector(p, k, seed, dist="rademacher"),
    "gaussian": lambda p, k, seed: Projector(p, k, seed, dist="gaussian"),
    "countsketch": CountSketch,
    "orthogonal": OrthogonalProjector,
}


def make_projector(kind: str, p: int, k: int, seed: int):
    """The projection named `kind` (a key of `PROJECTIONS`) from p to k dimensions."""
    return PROJECTIONS[kind](p, k, seed)


class GradientProjection:
    """φ(G) = G R for gradient rows of any width p, with R named by `kind` (or "none"), as
    the projecting methods use it: when k ≥ p a random projection can only distort, so the
    gradients are kept as they are (`kind_for(p)` says "none"); "orthogonal" needs k ≤ p.
    One projector per p is built on first use and kept."""

    def __init__(self, kind: str, k: int | None, seed: int):
        self.kind, self.k, self.seed = kind, k, seed
        self._projectors: dict[int, object] = {}

    def kind_for(self, p: int) -> str:
        if self.kind == "orthogonal" and self.k > p:
            raise InvalidArgumentError(f"`projection='orthogonal'` needs projection_dim <= p = {p}, got {self.k}")
        return "none" if self.k is None or self.kind == "none" or (self.kind != "orthogonal" and self.k >= p) \
            else self.kind

    def dim(self, p: int) -> int:
        return p if self.kind_for(p) == "none" else self.k

    def __call__(self, G: Tensor) -> Tensor:
        p = G.shape[1]
        kind = self.kind_for(p)
        if kind == "none":
            return G
        if p not in self._projectors:
            self._projectors[p] = make_projector(kind, p, self.k, self.seed)
        return self._projectors[p](G)


@dataclass(frozen=True)
class ProjectionOptions:
    """Options of a method that may project its gradients (identity, tracin).

    Attributes:
        projection_dim: k, or None for the gradients as they are, or "auto" (default): None
            while the n × p index fits `influence.index.INDEX_BUDGET_BYTES`, else
            `AUTO_PROJECTION_DIM`.
        projection: the projection's name (default "countsketch": O(p) per example, no
            p × k matrix; see `PROJECTIONS`).
        projection_seed: seed of the projection (the same for train and test).
    """

    projection_dim: int | str | None = "auto"
    projection: str = "countsketch"
    projection_seed: int = 0

    def __post_init__(self):
        if self.projection_dim not in (None, "auto"):
            check_int(self.projection_dim, "projection_dim")
        check_choice(self.projection, "projection", tuple(PROJECTIONS))
        check_int(self.projection_seed, "projection_seed", minimum=0)

    def projection_for_features(self) -> GradientProjection:
        k = None if self.projection_dim == "auto" else self.projection_dim
        return GradientProjection(self.projection, k, self.projection_seed)


AUTO_PROJECTION_DIM = 4096


def auto_projection_dim(options: dict, fm, n_train: int | None, copies: int) -> dict:
    """`projection_dim="auto"` made concrete: None while `copies` × n × p features fit the
    index budget, else `AUTO_PROJECTION_DIM`."""
    if options.get("projection_dim", "auto") != "auto":
        return options
    size = (n_train or 0) * copies * fm.p * fm.dtype.itemsize
    return {**options, "projection_dim": AUTO_PROJECTION_DIM if size > INDEX_BUDGET_BYTES else None}
