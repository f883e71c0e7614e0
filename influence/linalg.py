"""`eigh` that stays fast on a busy machine.

Multithreaded LAPACK eigensolvers spin-wait on their threads: on a CPU shared with other
jobs a 785×785 `torch.linalg.eigh` took 17 s with 2 threads and 0.09 s with one (measured
here, load average 9 on 2 cores). Below `SINGLE_THREAD_MAX` a single thread costs at most a
second or two even when the machine is idle, so those sizes always run single-threaded.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from influence.errors import InfluenceError

SINGLE_THREAD_MAX = 2048


@contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def eigh(A: Tensor) -> tuple[Tensor, Tensor]:
    """`torch.linalg.eigh(A)` (A symmetric, Tensor[..., n, n]): eigenvalues ascending and the
    eigenvectors as columns; single-threaded on the CPU when n ≤ `SINGLE_THREAD_MAX`.

    Raises `InfluenceError` for a non-finite matrix or one LAPACK cannot decompose.
    """
    if not torch.isfinite(A).all():
        raise InfluenceError("non-finite values (NaN or inf) in the curvature: check the model's outputs for these "
                             "inputs, and the scale of the inputs")
    try:
        if A.is_cuda or A.shape[-1] > SINGLE_THREAD_MAX:
            return torch.linalg.eigh(A)
        with _threads(1):
            return torch.linalg.eigh(A)
    except torch.linalg.LinAlgError as error:
        raise InfluenceError(f"the eigendecomposition of the curvature failed ({error}); it is too ill-conditioned: "
                             "pass a larger `damping`") from error
