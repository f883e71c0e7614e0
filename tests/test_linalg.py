"""`influence.linalg.eigh`: the same decomposition, single-threaded for small matrices."""

import torch

from influence import linalg


def test_eigh_matches_torch_and_restores_the_thread_count():
    A = torch.randn(50, 50, dtype=torch.float64)
    A = A @ A.T
    threads = torch.get_num_threads()
    seen = []
    real = torch.linalg.eigh
    torch.linalg.eigh = lambda M: (seen.append(torch.get_num_threads()), real(M))[1]
    try:
        values, vectors = linalg.eigh(A)
    finally:
        torch.linalg.eigh = real
    assert seen == [1] and torch.get_num_threads() == threads
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, A, rtol=1e-12, atol=1e-10)
