"""`influence.solvers.top_eigenpairs` (block Lanczos) against `torch.linalg.eigh`, and the
curvature's extreme eigenvalues, which use it."""

import torch

import influence as inf
from influence.curvature import Curvature
from influence.data import as_data
from influence.model import FunctionalModel
from influence.solvers import top_eigenpairs


def test_eigenpairs_with_repeated_eigenvalues_and_indefinite_spectrum():
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=gen, dtype=torch.float64))
    e = torch.cat([torch.tensor([9.0, -7.0, 5.0]), torch.full((37,), 0.5)]).double()  # invariant subspaces
    A = Q @ torch.diag(e) @ Q.T
    values, vectors, residual = top_eigenpairs(lambda V: V @ A, 40, rank=40, krylov_dim=40, block_size=3, seed=1)
    assert torch.allclose(values[:3], torch.tensor([9.0, -7.0, 5.0], dtype=torch.float64))
    assert torch.allclose(vectors.T @ torch.diag(values) @ vectors, A, atol=1e-10)
    assert torch.allclose(vectors @ vectors.T, torch.eye(40, dtype=torch.float64), atol=1e-10)
    assert residual < 1e-10


def test_extreme_eigenvalues_are_ritz_values_inside_the_spectrum(mlp):
    model, _, (X, y), _ = mlp
    task = inf.ClassificationTask(weight_decay=0.01)
    curvature = Curvature(FunctionalModel(model), task, as_data((X, y), "train"), "hessian")
    e = torch.linalg.eigvalsh(curvature.dense())
    smallest, largest = curvature.extreme_eigenvalues(steps=curvature.p)  # the whole space: exact
    assert abs(smallest - float(e[0])) < 1e-8 * float(e.abs().max()) and abs(largest - float(e[-1])) < 1e-8
    low, high = curvature.extreme_eigenvalues(steps=10)  # a small space: inside the spectrum, near the ends
    assert float(e[0]) - 1e-12 <= low and high <= float(e[-1]) + 1e-12 and high > 0.9 * float(e[-1])
