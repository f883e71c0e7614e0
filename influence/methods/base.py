"""The method abstraction: how `(H + λI)⁻¹` is applied to gradients.

Every method scores with the same formula,

    score[j, i] = φ(∇m(test_j))ᵀ · P · φ(∇ℓ(train_i)),

where φ is an optional transform of gradients (identity, or a projection) that the index
stores for the training side, and P ≈ (H + λI)⁻¹ in φ-space is applied by `precondition`.
Positive = helpful (removing train_i raises the test loss by ≈ score / n_train).

A method is configured by a frozen options dataclass (`Method.Options`), prepared once by
`fit` (or `restore` from an index folder), and is immutable afterwards: `precondition`
returns its result and solver diagnostics and changes nothing, so queries can run
concurrently. A new method is a new module with a `Method` subclass decorated by `@register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from torch import Tensor

from influence.curvature import Curvature
from influence.damping import Damping
from influence.errors import InvalidArgumentError
from influence.gradients import per_example_grads
from influence.model import FunctionalModel
from influence.options import NoOptions, parse_options
from influence.solvers import SolveInfo

TrainFeatures = Callable[[], Iterator[Tensor]]

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available as `Attributor(method=cls.name)`."""
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise InvalidArgumentError(f"method must be one of {sorted(['auto', *METHODS])}, got {name!r}")
    return METHODS[name]


class Method(ABC):
    """Applies an approximation of `(H + λI)⁻¹` to blocks of gradients.

    Class attributes:
        name: the `method=` string.
        Options: the frozen dataclass of its options (`Attributor(**options)`).
        uses_curvature: whether `fit` needs a `Curvature`.
        queries_use_curvature: whether `precondition` needs curvature products (iterative
            solvers); the index then stores the curvature data.
        features_use_curvature: whether `features` depends on the fitted method (e.g. projects
            onto the curvature's eigenvectors); the attributor then calls `fit` before computing
            the training features, with `train_features=None`.
    Attributes:
        options: the parsed options.
        damping: λ in use after `fit` / `restore` (None for methods without damping).
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    uses_curvature: ClassVar[bool] = True
    queries_use_curvature: ClassVar[bool] = False
    features_use_curvature: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = parse_options(self.Options, options, self.name)
        self.damping: float | None = None

    @classmethod
    def resolve_options(cls, options: dict[str, Any], fm: FunctionalModel, n_train: int | None) -> dict[str, Any]:
        """The options with size-dependent defaults (`"auto"`) made concrete for this model and
        training set, before the method is built (hook; the index stores the concrete ones)."""
        return options

    def feature_dim(self, fm: FunctionalModel) -> int:
        """Length of the per-example feature vector φ(∇) that `features` returns."""
        return fm.p

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Any,
                 targets: Tensor) -> Tensor:
        """φ(∇_θ fn) for each example of a batch: Tensor[b, feature_dim].

        The default is the flat per-example gradient. Methods that project gradients, or
        use several checkpoints, override this; the same φ is applied to the training
        side (stored in the index) and the test side.
        """
        return per_example_grads(fm, fn, inputs, targets)

    @abstractmethod
    def fit(self, fm: FunctionalModel, curvature: Curvature | None, damping: Damping,
            train_features: TrainFeatures | None) -> dict[str, Any]:
        """Fit the preconditioner once (the only place a method is fitted); sets
        `self.damping` and returns diagnostics.

        Args:
            fm: the model as a function of its attributed parameters.
            curvature: products with H + weight_decay·I (None when `uses_curvature` is False).
            damping: what the user asked for; the method resolves it (see `Damping.resolve`).
            train_features: callable returning an iterator over blocks of the training
                features, Tensor[b, feature_dim], in training-set order; None when
                `features_use_curvature` (the method is fitted before the features exist).
        """

    @abstractmethod
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors that `precondition` needs, for saving with an index (including λ)."""

    @abstractmethod
    def restore(self, state: dict[str, Tensor], curvature: Curvature | None) -> None:
        """Become the fitted method that `state_dict` describes (`curvature`: rebuilt from the
        index when `queries_use_curvature`)."""

    @abstractmethod
    def precondition(self, G: Tensor) -> tuple[Tensor, SolveInfo | None]:
        """(H + λI)⁻¹ applied to each row of G: Tensor[m, dim] -> Tensor[m, dim] (feature
        space), and the solver's diagnostics (None for a direct method)."""

    def self_scores(self, F: Tensor) -> tuple[Tensor, SolveInfo | None]:
        """`φᵀ P φ` for each row of F: Tensor[m, dim] -> Tensor[m] (self-influence), and the
        solver's diagnostics. Methods with a factorised P override it with a cheaper form."""
        X, info = self.precondition(F)
        return (X * F.to(X.dtype)).sum(dim=1), info

    def damped_curvature(self) -> Tensor | None:
        """H + λI as a dense Tensor[p, p] when the method holds its factorisation (`exact`),
        else None (then `influence.curvature.damped_dense` builds it)."""
        return None

