"""Block Lanczos: the eigenpairs of largest |eigenvalue| of a symmetric operator given only as
products (used by `method="arnoldi"` and by `method="cg"`'s preconditioner)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.progress import phase


def top_eigenpairs(matvec: Callable[[Tensor], Tensor], p: int, rank: int, krylov_dim: int, block_size: int,
                   seed: int, dtype: torch.dtype = torch.float64, device=None,
                   progress: bool = False) -> tuple[Tensor, Tensor, float]:
    """The `rank` eigenpairs of largest |eigenvalue| of a symmetric p×p operator.

    Block Lanczos with full re-orthogonalisation: builds an orthonormal basis Q of the
    block Krylov space (krylov_dim vectors; a fresh random block replaces directions lost
    to an invariant subspace), forms T = Qᵀ A Q from the products already made, and returns
    its Ritz pairs. With krylov_dim = p this is an exact eigendecomposition.

    Args:
        matvec: A applied to rows, Tensor[k, p] -> Tensor[k, p].
    Returns:
        eigenvalues Tensor[rank] (largest |e| first), eigenvectors Tensor[rank, p] (rows),
        and the largest relative Ritz residual ‖A u − e u‖ / max|e| over the kept pairs.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    random = lambda k: torch.randn(k, p, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    basis = _extend(torch.empty(0, p, dtype=dtype, device=device), random(min(block_size, krylov_dim)), random)
    T = torch.zeros(krylov_dim, krylov_dim, dtype=dtype, device=device)
    start, products = 0, []
    with phase("Lanczos: curvature products", krylov_dim, unit="vec", enabled=progress) as bar:
        while True:
            block = basis[start:]
            AQ = matvec(block)
            bar.update(len(block))
            coeff = basis @ AQ.T  # [len(basis), b] = Qᵀ A Q_block
            stop = start + len(block)
            T[:stop, start:stop] = coeff
            T[start:stop, :stop] = coeff.T
            products.append(AQ)
            if stop >= krylov_dim:
                break
            basis = _extend(basis, AQ[: krylov_dim - stop], random)
            start = stop
    values, Y = torch.linalg.eigh(0.5 * (T + T.T))
    order = values.abs().argsort(descending=True)[:rank]
    values, Y = values[order], Y[:, order]
    vectors = Y.T @ basis
    AV = Y.T @ torch.cat(products)
    scale = max(float(values.abs().max()), 1e-300)  # (a clamp in float32 would round 1e-300 to 0)
    residual = float((AV - values[:, None] * vectors).norm(dim=1).max()) / scale
    return values, vectors, residual


def _extend(basis: Tensor, W: Tensor, random: Callable[[int], Tensor]) -> Tensor:
    """Append to the orthonormal rows of `basis` an orthonormal block spanning W's new directions.

    Directions of W already in span(basis) (an invariant subspace was found) are replaced by
    random ones, so the basis always grows by len(W) rows.
    """
    tol = 1e-10 * float(W.norm(dim=1).max().clamp_min(1e-300))
    for _ in range(3):
        for _ in range(2):  # classical Gram–Schmidt, twice, is enough for full precision
            W = W - (W @ basis.T) @ basis
        Q, R = torch.linalg.qr(W.T)
        lost = R.diagonal().abs() <= tol
        if not lost.any():
            return torch.cat([basis, Q.T])
        W = W.clone()
        W[lost] = random(int(lost.sum()))
    raise RuntimeError("could not extend the Krylov basis (operator of rank < block size?)")
