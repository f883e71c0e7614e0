"""`method="auto"` (the default): a method chosen from the model and the problem's size, and why.

Every choice answers queries and self-influence with products against a factorisation
computed once — never an iterative solve per query — and keeps the index small:

1. `ekfac` (with its dense block) when `nn.Linear` / transformers' `Conv1D` /
   `nn.Conv2d` layers hold (nearly) all attributed parameters outside embedding tables:
   fast at any size, and `exact` itself while the dense block covers
   every kept component (LDS of the benchmark MLPs: digits 0.809, MNIST-5k 0.644).
2. `exact` for other models while the p × p curvature and the n × p index stay small.
3. `trak` with a count-sketch projection otherwise (any model, any size).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from influence.batching import to_model
from influence.data import ExampleData
from influence.errors import InvalidArgumentError
from influence.index import INDEX_BUDGET_BYTES
from influence.methods import ekfac
from influence.methods.base import METHODS, Method, method_class
from influence.model import FunctionalModel
from influence.options import NoOptions

# `exact` while its p×p eigendecomposition takes seconds and the n×p index fits in memory.
EXACT_MAX_PARAMS = 5_000
# `ekfac` when its layers cover at least this share of the attributed parameters outside
# nn.Embedding tables (the rest, e.g. normalisation scales, and the embeddings are then left
# out, and named in the diagnostics).
EKFAC_MIN_COVERAGE = 0.9


def build_method(name: str, given: Any, options: dict[str, Any], fm: FunctionalModel,
                 train: ExampleData | None) -> tuple[Method, str]:
    """The method `name` with its options made concrete for this problem (`"auto"`: chosen
    here, running the model once on a few training inputs), and how it was chosen.

    `given`: None or a method's `Options` instance (`options=EKFACOptions(...)`; with
    `method="auto"` it names the method); `options`: flat keywords, which override its fields.
    """
    if given is not None:
        name, options = _with_options_object(name, given, options)
    reason = f"method={name!r} given"
    n_train = None if train is None else len(train)
    if name == "auto":
        if options:
            raise InvalidArgumentError(f"method='auto' takes no method options (got {sorted(options)}); "
                                       "name a method to pass its options")
        probe = None if train is None else to_model(train.batch(range(min(n_train, 8)))[0], fm.device, fm.dtype)
        name, options, reason = choose(fm, n_train or 0, probe)
    cls = method_class(name)
    return cls(**cls.resolve_options(options, fm, n_train)), reason


def choose(fm: FunctionalModel, n_train: int, probe: Any) -> tuple[str, dict, str]:
    """(method name, its options, the reason in words) for a model and training-set size."""
    p = fm.p
    covered, problem = ekfac.coverage(fm, probe) if probe is not None else (0, "no data to probe the layers")
    embedded = sum(fm.numels[fm.names.index(n)] for n in ekfac.embedding_parameters(fm))
    if covered and covered >= EKFAC_MIN_COVERAGE * (p - embedded):
        options = {} if covered == p else {"skip_unsupported": True}
        left = "" if covered == p else f"; {p - covered:,} parameters outside them are left out"
        if embedded:
            left += (f" ({embedded:,} of them in nn.Embedding tables: an embedding's input is "
                     "one-hot, so its Kronecker input factor is a vocabulary-sized diagonal, and "
                     "the layers above carry what was learnt from its rows)")
        return "ekfac", options, (f"nn.Linear/Conv1D/nn.Conv2d layers hold {covered:,} of the "
                                  f"{p:,} attributed parameters: EK-FAC with a dense block of the "
                                  f"top components{left}")
    index_bytes = n_train * p * fm.dtype.itemsize
    why_not = problem or f"EK-FAC's layers hold only {covered:,} of the {p:,} attributed parameters"
    if p <= EXACT_MAX_PARAMS and index_bytes <= INDEX_BUDGET_BYTES:
        return "exact", {}, f"{why_not}; p = {p:,} ≤ {EXACT_MAX_PARAMS:,}: the exact curvature, factorised once"
    return "trak", {"projection": "countsketch"}, (f"{why_not}; p = {p:,}: projected gradients (count-sketch, "
                                                   "k = 2048) with their empirical Fisher")


def _with_options_object(name: str, given: Any, flat: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method name, flat options) for an `Options` instance and the flat keywords beside it."""
    owners = [m for m in METHODS.values()
              if m.Options is type(given) and m.Options is not NoOptions]
    if not owners or not is_dataclass(given):
        raise InvalidArgumentError(f"`options` must be a method's options dataclass (e.g. "
                                   f"influence.EKFACOptions(...)), got {type(given).__name__}")
    names = [m.name for m in owners]
    if name != "auto" and name not in names:
        raise InvalidArgumentError(f"`options` is a {type(given).__name__}, for method "
                                   f"{names[0]!r}, but method={name!r}; pass that method's "
                                   f"Options, or method={names[0]!r}")
    values = {f.name: getattr(given, f.name) for f in fields(given)}
    return (names[0] if name == "auto" else name), {**values, **flat}
