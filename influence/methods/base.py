"""The method abstraction: how `(H + λI)⁻¹` is applied to gradients.

Every method scores with the same formula,

    score[j, i] = φ(∇m(test_j))ᵀ · P · φ(∇ℓ(train_i)),

where φ is an optional transform of gradients (identity, or a projection) that the index
stores for the training side, and P ≈ (H + λI)⁻¹ in φ-space is applied by `precondition`.
A new method is a new module with a `Method` subclass decorated by `@register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InvalidArgumentError
from influence.gradients import per_example_grads
from influence.model import FunctionalModel

TrainFeatures = Callable[[], Iterator[Tensor]]

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available as `Attributor(method=cls.name)`."""
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise InvalidArgumentError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


class Method(ABC):
    """Applies an approximation of `(H + λI)⁻¹` to blocks of gradients.

    Class attributes:
        name: the `method=` string.
        uses_curvature: whether `fit` needs a `Curvature` and a damping value.
        queries_use_curvature: whether `precondition` needs curvature products (iterative
            solvers); the index then stores the curvature data.
        options: option names with their defaults, accepted as `Attributor(**options)`.
    """

    name: ClassVar[str]
    uses_curvature: ClassVar[bool] = True
    queries_use_curvature: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.options)
        if unknown:
            raise InvalidArgumentError(
                f"unknown option(s) {sorted(unknown)} for method {self.name!r}; "
                f"its options are {sorted(self.options) or 'none'}"
            )
        self.config = {**self.options, **options}
        self.diagnostics: dict[str, Any] = {}

    def feature_dim(self, fm: FunctionalModel) -> int:
        """Length of the per-example feature vector φ(∇) that `features` returns."""
        return fm.p

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                 targets: Tensor) -> Tensor:
        """φ(∇_θ fn) for each example of a batch: Tensor[b, feature_dim].

        The default is the flat per-example gradient. Methods that project gradients, or
        use several checkpoints, override this; the same φ is applied to the training
        side (stored in the index) and the test side.
        """
        return per_example_grads(fm, fn, inputs, targets)

    def fit(self, curvature: Curvature | None, damping: float | None, train_features: TrainFeatures) -> None:
        """Prepare the preconditioner; default: nothing to factorise.

        Args:
            curvature: products with H + weight_decay·I (None when `uses_curvature` is False).
            damping: λ, already resolved for curvature methods; for the others the user's
                value or None, and the method sets `self.damping` to what it uses.
            train_features: callable returning an iterator over blocks of the training
                features, Tensor[b, feature_dim], in training-set order.
        """
        self.curvature, self.damping = curvature, damping

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors that `precondition` needs, for saving with an index (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_dict` returned."""

    @abstractmethod
    def precondition(self, G: Tensor) -> Tensor:
        """(H + λI)⁻¹ applied to each row of G: Tensor[m, dim] -> Tensor[m, dim] (feature space)."""
