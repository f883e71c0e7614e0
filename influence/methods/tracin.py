"""`method="tracin"`: TracIn-CP (Pruthi et al. 2020), gradient dot products summed over checkpoints.

    score[j, i] = Σ_c w_c ∇m(test_j; θ_c)ᵀ ∇ℓ(train_i; θ_c)

with θ_c the attributed parameters of checkpoint c and w_c its weight (the learning rate
around it in the paper; default 1/C, a mean). Same sign convention as the package:
positive = helpful when m is the loss. With no checkpoints it is `identity` (the current
model only). `CheckpointGradients` is also used by `trak` for ensembling.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from influence.errors import InvalidArgumentError
from influence.gradients import per_example_grads
from influence.methods.base import Method, register
from influence.model import FunctionalModel


class CheckpointGradients:
    """Per-example gradients of one model architecture at several parameter values.

    Args:
        checkpoints: `None` (only the attributor's model) or a non-empty sequence of
            `state_dict()`s of the attributor's model (same architecture). Each checkpoint
            supplies every parameter and buffer, attributed or not.
    """

    def __init__(self, checkpoints: Sequence[Mapping[str, Tensor]] | None):
        if checkpoints is not None:
            if isinstance(checkpoints, Mapping) or not isinstance(checkpoints, Sequence) or not checkpoints:
                raise InvalidArgumentError("`checkpoints` must be a non-empty list of state_dicts of the model "
                                           f"(or None for the model as given); got {type(checkpoints).__name__}")
            if not all(isinstance(c, Mapping) for c in checkpoints):
                raise InvalidArgumentError("every entry of `checkpoints` must be a state_dict (a mapping of "
                                           "parameter names to tensors)")
        self.checkpoints = checkpoints
        self._models: list[FunctionalModel] | None = None
        self._source: FunctionalModel | None = None

    def __len__(self) -> int:
        return 1 if self.checkpoints is None else len(self.checkpoints)

    def models(self, fm: FunctionalModel) -> list[FunctionalModel]:
        """One `FunctionalModel` per checkpoint, built once from copies of `fm.model`."""
        if self.checkpoints is None:
            return [fm]
        if self._source is not fm:
            self._models = []
            for c, state in enumerate(self.checkpoints):
                model = copy.deepcopy(fm.model)
                try:
                    model.load_state_dict(state)
                except RuntimeError as err:
                    raise InvalidArgumentError(f"`checkpoints[{c}]` does not fit the model: {err}") from None
                self._models.append(FunctionalModel(model.to(fm.device, fm.dtype).eval(), fm.names))
            self._source = fm
        return self._models

    def grads(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
              targets: Tensor) -> list[Tensor]:
        """Per-example gradients at every checkpoint: a list of C tensors [b, p]."""
        return [per_example_grads(m, fn, inputs, targets) for m in self.models(fm)]


@register
class TracIn(Method):
    """TracIn-CP: features are the per-checkpoint gradients concatenated, Tensor[b, C·p];
    the preconditioner scales block c by its weight w_c. No curvature, no damping.

    Options:
        checkpoints: list of state_dicts of the model (e.g. saved during training); `None`
            uses the model as given (then this equals `method="identity"`).
        weights: one weight per checkpoint (the learning rate in the paper); default 1/C.
    """

    name = "tracin"
    uses_curvature = False
    options = {"checkpoints": None, "weights": None}

    def __init__(self, **options):
        super().__init__(**options)
        self.ckpts = CheckpointGradients(self.config["checkpoints"])
        weights = self.config["weights"]
        if weights is None:
            weights = [1.0 / len(self.ckpts)] * len(self.ckpts)
        if len(weights) != len(self.ckpts):
            raise InvalidArgumentError(f"`weights` has {len(weights)} entries but there are {len(self.ckpts)} "
                                       "checkpoints")
        self.weights = torch.as_tensor(weights, dtype=torch.float64)

    def feature_dim(self, fm: FunctionalModel) -> int:
        return len(self.ckpts) * fm.p

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                 targets: Tensor) -> Tensor:
        return torch.cat(self.ckpts.grads(fm, fn, inputs, targets), dim=1)

    def fit(self, curvature, damping, train_features) -> None:
        super().fit(curvature, damping, train_features)
        self.diagnostics = {"checkpoints": len(self.ckpts)}

    def state_dict(self) -> dict[str, Tensor]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.weights = state["weights"]

    def precondition(self, G: Tensor) -> Tensor:
        blocks = G.reshape(G.shape[0], len(self.weights), -1)
        return (blocks * self.weights.to(G.dtype)[:, None]).reshape(G.shape)
