"""The method abstraction: how `(H + λI)⁻¹` is applied to gradients.

Every method scores with the same formula,

    score[j, i] = φ(∇m(test_j))ᵀ · P · φ(∇ℓ(train_i)),

where φ is an optional transform of gradients (identity, or a projection) that the index
stores for the training side, and P ≈ (H + λI)⁻¹ in φ-space is applied by `precondition`.
A new method is a new module with a `Method` subclass decorated by `@register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InvalidArgumentError

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
        options: option names with their defaults, accepted as `Attributor(**options)`.
    """

    name: ClassVar[str]
    uses_curvature: ClassVar[bool] = True
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

    def fit(self, curvature: Curvature | None, damping: float) -> None:
        """Prepare the preconditioner (e.g. factorise the curvature). Default: nothing."""
        self.curvature, self.damping = curvature, damping

    @abstractmethod
    def precondition(self, G: Tensor) -> Tensor:
        """(H + λI)⁻¹ applied to each row of G: Tensor[m, p] -> Tensor[m, p]."""
