"""What would make a replayed training run differ from the real one, named before replaying.

A replay re-runs training as pure functions of (θ, optimiser state, example weights). It is
exact only if the run is a deterministic function of the recipe, the initial model and the
data. The checks here name what breaks that; `reproduction_error` then measures it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from influence.errors import NonDeterministicError

STOCHASTIC = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
BATCH_STATISTICS = (nn.modules.batchnorm._BatchNorm,)


def problems(model: nn.Module, train: Any, device: torch.device) -> list[str]:
    """Every reason why training `model` on `train` could not be replayed exactly (empty: none)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, STOCHASTIC) and module.p > 0:
            found.append(
                f"dropout `{name}` ({type(module).__name__}, p={module.p}) draws random masks in "
                "training; set p=0 (or train without it) to replay"
            )
        if isinstance(module, BATCH_STATISTICS) and module.track_running_stats:
            found.append(
                f"batch norm `{name}` updates running statistics (buffers) that a replay does not "
                "carry; replace it (e.g. LayerNorm / GroupNorm) or freeze it"
            )
    if isinstance(train, torch.utils.data.DataLoader):
        workers = f" with num_workers={train.num_workers}" if train.num_workers else ""
        found.append(
            f"`train` is a DataLoader{workers}: the recipe owns the data order (its seed); "
            "pass the loader's dataset instead"
        )
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        found.append(
            "CUDA kernels may be non-deterministic (atomic adds); call "
            "torch.use_deterministic_algorithms(True) before training and replaying"
        )
    return found


def check(model: nn.Module, train: Any, device: torch.device) -> None:
    """Raise `NonDeterministicError` naming every problem `problems` finds."""
    found = problems(model, train, device)
    if found:
        raise NonDeterministicError(
            "this training run cannot be replayed exactly:\n- " + "\n- ".join(found)
        )


def reproduction_error(replayed: Tensor, trained: Tensor) -> float:
    """‖θ_replayed − θ_trained‖ / ‖θ_trained‖ (0 = the replay reproduced the run)."""
    return float(
        (replayed - trained).norm() / trained.norm().clamp_min(torch.finfo(trained.dtype).tiny)
    )


def check_reproduction(error: float, tolerance: float) -> None:
    if not error <= tolerance:
        raise NonDeterministicError(
            "replaying the recipe does not reproduce `trained`: relative parameter error "
            f"{error:.2e} > {tolerance:.0e}. Was it trained by this exact recipe from this initial "
            "model and data (`TrainingRecipe.train`), on this device and dtype? Unseeded "
            "randomness in the model's forward (functional dropout) also causes this."
        )
