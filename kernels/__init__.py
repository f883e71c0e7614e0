"""Triton GPU kernels for the hot spots of influence computations, each with a pure-torch twin.

Ops (one file each; the ``*_torch`` twins are the CPU path and the test oracle):

- :func:`ce_head_hvp` — fused Hessian-vector product of the mean softmax cross-entropy of a
  linear head W (C×d) on features Φ (n×d): ``H·V = (1/n)·Aᵀ·Φ + λ·V``.
- :func:`softmax_jacobian_vp` — ``P∘Z − P∘rowsum(P∘Z)``, the output-space Hessian product of
  softmax cross-entropy (the ``H_out`` of a Gauss-Newton product ``Jᵀ·H_out·J·v``).
- :func:`project` — ``grads @ R`` with a seeded random R (p×k) generated on the fly.

Backends: ``backend="auto"`` runs Triton when the tensors are on CUDA and triton is installed,
torch otherwise; ``INFLUENCE_KERNELS_BACKEND=torch`` (or ``triton``) overrides ``"auto"``.
``backend="triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before ``import kernels``.
This package imports only torch, and triton when it is installed.
"""

from kernels.ce_head import ce_head_hvp, ce_head_hvp_torch
from kernels.projection import project, project_torch, projection_rows
from kernels.softmax_jacobian import softmax_jacobian_vp, softmax_jacobian_vp_torch

__all__ = [
    "ce_head_hvp",
    "ce_head_hvp_torch",
    "project",
    "project_torch",
    "projection_rows",
    "softmax_jacobian_vp",
    "softmax_jacobian_vp_torch",
]
