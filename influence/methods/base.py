"""The method abstraction: how `(H + λI)⁻¹` is applied to gradients.

Every method scores with the same formula,

    score[j, i] = φ(∇m(test_j))ᵀ · P · φ(∇ℓ(train_i)),

where φ is an optional transform of gradients (identity, or a projection) that the index
stores for the training side, and P ≈ (H + λI)⁻¹ in φ-space is applied by `precondition`.
A new method is a new module with a `Method` subclass decorated by `@register`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InfluenceError, InfluenceWarning, InvalidArgumentError
from influence.gradients import per_example_grads
from influence.model import FunctionalModel

TrainFeatures = Callable[[], Iterator[Tensor]]

# What a method does when the damped curvature H + λI is not positive definite (an indefinite
# Hessian off a convex model, or a singular curvature with λ = 0): see `Method.handle_indefinite`.
INDEFINITE = ("raise_damping", "abs", "warn")

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
        features_use_curvature: whether `features` depends on the curvature (e.g. projects
            onto its eigenvectors); the attributor then calls `prepare` before computing them.
        options: option names with their defaults, accepted as `Attributor(**options)`.
    """

    name: ClassVar[str]
    uses_curvature: ClassVar[bool] = True
    queries_use_curvature: ClassVar[bool] = False
    features_use_curvature: ClassVar[bool] = False
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

    def _check_indefinite_option(self, allowed: tuple[str, ...] = INDEFINITE) -> None:
        if self.config.get("indefinite") not in allowed:
            raise InvalidArgumentError(f"`indefinite` must be one of {list(allowed)} for method {self.name!r}, "
                                       f"got {self.config.get('indefinite')!r}")

    def handle_indefinite(self, smallest: float, largest: float, estimated: bool = False) -> None:
        """Make `H + λI` positive definite when it is not, as `config["indefinite"]` says.

        Args:
            smallest, largest: the extreme eigenvalues of H (exact, or Lanczos estimates when
                `estimated`; a Ritz value never lies below the true smallest eigenvalue, hence
                the factor 2 below).
        With "raise_damping", a curvature with `smallest + λ <= 0` gets
        `λ ← max(λ + 2·max(−smallest, 0), 1e-6·max|eigenvalue|)`; the change is recorded in
        `diagnostics["damping_raised"]` and warned about. "abs" (exact, arnoldi) inverts
        `|e| + λ` instead; "warn" keeps λ (queries then warn about negative curvature).
        A zero curvature with λ = 0 cannot be inverted at all: `InfluenceError`.
        """
        mode = self.config.get("indefinite", "warn")
        self.diagnostics["smallest_eigenvalue"] = float(smallest)
        scale = max(abs(smallest), abs(largest))
        if scale == 0 and self.damping == 0:
            raise InfluenceError(f"{self.name}: the curvature is zero and damping is 0, so H + λI cannot be "
                                 "inverted; pass damping > 0 (is the loss constant in the attributed parameters?)")
        if smallest + self.damping > 0 or mode != "raise_damping":
            return
        old = self.damping
        self.damping = max(old + 2 * max(-smallest, 0.0), 1e-6 * scale)
        how = "a Lanczos estimate" if estimated else "exact"
        self.diagnostics["damping_raised"] = {"from": old, "to": self.damping, "smallest_eigenvalue": float(smallest)}
        if smallest < -1e-8 * scale:
            what = f"is indefinite (smallest eigenvalue {smallest:.4g}, {how})"
            hint = "Use curvature='ggn' for a positive semi-definite curvature, or indefinite='abs' / 'warn'."
        else:
            what = f"is singular (smallest eigenvalue {smallest:.3g}, {how})"
            hint = "Pass damping > 0 to choose it yourself."
        warnings.warn(f"{self.name}: the curvature {what} and damping {old:.4g} does not make it positive definite; "
                      f"damping raised to {self.damping:.4g}. {hint}", InfluenceWarning, stacklevel=4)

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

    def prepare(self, curvature: Curvature) -> None:
        """Called before any `features` when `features_use_curvature`, with the curvature
        (undamped); e.g. find the eigenvectors the features are projected on."""

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
