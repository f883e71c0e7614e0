"""`Attributor`: fit once on the training data, then ask which examples drove a prediction.

Sign convention (used by every score this package returns):

    score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)

with ℓ the per-example training loss, m the test measurement (the loss by default), and H
the Hessian or Gauss-Newton matrix of the *mean* training loss including its L2
regulariser. Removing train_i changes the test loss by about `+score[j, i] / n_train`:
positive = helpful (a proponent), negative = harmful (an opponent).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from influence.curvature import CURVATURES, Curvature
from influence.data import ExampleData, as_data
from influence.errors import InfluenceError, InfluenceWarning, InvalidArgumentError, NotFittedError
from influence.gradients import check_targets
from influence.methods import method_class
from influence.model import FunctionalModel, is_affine_in_parameters
from influence.results import GroupScores, Ranking, TopK, merge_top
from influence.task import ClassificationTask, Task

# Default damping as a multiple of the curvature's mean eigenvalue (trace / p). Models whose
# outputs are affine in the attributed parameters have a convex objective and the influence
# approximation is then exact up to second order, so only a touch of damping is needed;
# non-convex models need much more (measured on MLPs: see benchmarks/RESULTS.md).
DAMPING_RATIO_CONVEX = 1e-3
DAMPING_RATIO_NONCONVEX = 0.3


class Attributor:
    """Influence of training examples on test predictions.

    Args:
        model: any `nn.Module`; it is run in eval mode and never modified.
        train: training data — a `datasets.Dataset` (columns `input_column`,
            `label_column`, other columns are metadata such as `source`), a torch `Dataset`
            of `(input, label)` pairs, or a tuple of tensors `(X, y)`.
        task: what is attributed (loss, measurement, parameters, weight decay);
            default `ClassificationTask()`.
        method: one of `influence.METHODS`: "exact", "cg", "lissa", "identity".
        damping: λ added to the curvature. `None` picks `damping_ratio × mean eigenvalue`
            of the curvature (a Hutchinson trace estimate), which carries across models;
            the chosen value is in `attr.damping` and `attr.diagnostics`.
        curvature: "ggn" (default, positive semi-definite) or "hessian".
        damping_ratio: multiple of the mean eigenvalue used when `damping=None`; default
            1e-3 for models affine in the attributed parameters (convex), else 0.3.
        batch_size: examples per gradient / curvature batch.
        curvature_samples: use this many training examples (a fixed random subset) for
            the curvature; `None` uses all.
        input_column, label_column, transform: how to read a `datasets.Dataset`
            (`transform` maps one row's input to a tensor).
        progress: show progress bars on long work.
        seed: seed for every random choice (probes, subsets).
        **options: method options, e.g. `tol`, `max_iter` for "cg" (see each method).

    Example:
        >>> attr = Attributor(model, (X_train, y_train), method="cg").fit()
        >>> attr.top_k((X_test, y_test), k=5).harmful.indices   # LongTensor[n_test, 5]
    """

    def __init__(self, model: nn.Module, train: Any, task: Task | None = None, method: str = "cg",
                 damping: float | None = None, *, curvature: str = "ggn", damping_ratio: float | None = None,
                 batch_size: int = 256, curvature_samples: int | None = None, input_column: str = "input",
                 label_column: str = "label", transform: Callable | None = None, progress: bool = True,
                 seed: int = 0, **options: Any):
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if task is not None and not isinstance(task, Task):
            raise InvalidArgumentError(f"`task` must be an influence.Task, got {type(task).__name__}")
        if curvature not in CURVATURES:
            raise InvalidArgumentError(f"`curvature` must be one of {list(CURVATURES)}, got {curvature!r}")
        _check_positive_number(damping, "damping", allow_none=True, allow_zero=True)
        _check_positive_number(damping_ratio, "damping_ratio", allow_none=True, allow_zero=True)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        self.model = model
        self.task = task if task is not None else ClassificationTask()
        self.method = method_class(method)(**options)
        self.read = dict(input_column=input_column, label_column=label_column, transform=transform)
        self.train = as_data(train, "train", **self.read)
        self.damping = damping
        self.curvature_kind = curvature
        self.damping_ratio = damping_ratio
        self.batch_size = batch_size
        self.curvature_samples = curvature_samples
        self.progress = progress
        self.seed = seed
        self.fm = FunctionalModel(model, self.task.parameters)
        self.train_grads: Tensor | None = None
        self._self_influence: Tensor | None = None
        self.diagnostics: dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self) -> Attributor:
        """Compute the training gradients and the curvature preconditioner; returns self."""
        with self.fm.eval_mode():
            self.train_grads = self._gradients(self.train, self.task.loss, "train gradients")
            curvature = None
            if self.method.uses_curvature:
                curvature = Curvature(self.fm, self.task, self._curvature_data(), self.curvature_kind,
                                      batch_size=self.batch_size)
                self.damping, source = self._resolve_damping(curvature)
            else:
                source = "chosen by the method" if self.damping is None else "given"
            G = self.train_grads
            self.method.fit(curvature, self.damping, lambda: (G[lo:lo + 8192] for lo in range(0, len(G), 8192)))
            self.damping = self.method.damping
        self.diagnostics = {"method": self.method.name, "curvature": self.curvature_kind if curvature else None,
                            "damping": self.damping, "damping_source": source, "n_train": len(self.train),
                            "n_params": self.fm.p, **self.method.diagnostics}
        self._self_influence = None
        return self

    def _curvature_data(self) -> ExampleData:
        n, m = len(self.train), self.curvature_samples
        if m is None or m >= n:
            return self.train
        if not isinstance(m, int) or m < 1:
            raise InvalidArgumentError(f"`curvature_samples` must be a positive integer or None, got {m!r}")
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[:m].sort().values.tolist()
        return ExampleData(self.train.source, m, lambda idx: self.train.batch([rows[i] for i in idx]), "train")

    def _resolve_damping(self, curvature: Curvature) -> tuple[float, str]:
        if self.damping is not None:
            return float(self.damping), "given"
        ratio = self.damping_ratio
        if ratio is None:
            inputs, _ = self.train.batch(range(min(len(self.train), 64)))
            convex = is_affine_in_parameters(self.fm, inputs.to(self.fm.device, self.fm.dtype)
                                             if inputs.is_floating_point() else inputs.to(self.fm.device))
            ratio = DAMPING_RATIO_CONVEX if convex else DAMPING_RATIO_NONCONVEX
        mean_eig = curvature.mean_eigenvalue(seed=self.seed)
        if not math.isfinite(mean_eig) or mean_eig <= 0:
            raise InfluenceError(
                f"the curvature's mean eigenvalue is {mean_eig}; pass an explicit `damping` "
                "(is the model output independent of the attributed parameters?)"
            )
        return ratio * mean_eig, f"auto: {ratio:g} × mean eigenvalue {mean_eig:.4g} (Hutchinson, 32 probes)"

    def _gradients(self, data: ExampleData, fn: Callable, desc: str) -> Tensor:
        """Per-example gradient features of `fn` over `data`: Tensor[len(data), feature_dim]."""
        out = torch.empty(len(data), self.method.feature_dim(self.fm), dtype=self.fm.dtype, device=self.fm.device)
        with tqdm(total=len(data), desc=desc, unit="ex", disable=not self.progress or len(data) < 5000,
                  leave=False) as bar:
            for rows, inputs, targets in data.batches(self.batch_size):
                check_targets(self.fm, self.task, inputs.to(self.fm.device, self.fm.dtype)
                              if inputs.is_floating_point() else inputs.to(self.fm.device), targets.to(self.fm.device),
                              data.argument)
                out[rows.start:rows.stop] = self.method.features(self.fm, fn, inputs, targets)
                bar.update(len(rows))
        _check_finite(out, f"{desc} (check the model outputs and loss on `{data.argument}`)")
        return out

    # ------------------------------------------------------------------ queries
    def _require_fit(self) -> Tensor:
        if self.train_grads is None:
            raise NotFittedError("call Attributor.fit() before asking for scores")
        return self.train_grads

    def _precondition(self, G: Tensor) -> Tensor:
        Q = self.method.precondition(G)
        info = self.method.diagnostics
        self.diagnostics.update(info)
        if info.get("negative_curvature"):
            warnings.warn(f"{self.method.name}: the damped curvature has negative eigenvalues "
                          f"(damping={self.damping:.4g}); scores may be meaningless. Use curvature='ggn' "
                          "or a larger damping.", InfluenceWarning, stacklevel=3)
        if info.get("converged") is False:
            warnings.warn(f"{self.method.name} did not converge: relative residual {info['residual']:.3g} after "
                          f"{info['iterations']} iterations. Raise max_iter or damping.",
                          InfluenceWarning, stacklevel=3)
        _check_finite(Q, f"the {self.method.name} solve (diagnostics: {info})")
        return Q

    def test_gradients(self, test: Any) -> Tensor:
        """Gradients of the test measurement, Tensor[n_test, p]."""
        self._require_fit()
        with self.fm.eval_mode():
            return self._gradients(as_data(test, "test", **self.read), self.task.measurement, "test gradients")

    def _score_blocks(self, test: Any, block: int = 8192):
        """Yield `(offset, scores[n_test, b])` over blocks of training examples."""
        G = self._require_fit()
        Q = self._precondition(self.test_gradients(test))
        for lo in range(0, G.shape[0], block):
            yield lo, Q @ G[lo:lo + block].T

    def scores(self, test: Any) -> Tensor:
        """Influence of every training example on every test example.

        Returns:
            Tensor[n_test, n_train] with `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`;
            positive = helpful (removing train_i raises test_j's loss by ≈ score / n_train).
        """
        return torch.cat([s for _, s in self._score_blocks(test)], dim=1)

    def top_k(self, test: Any, k: int = 10) -> TopK:
        """The k most helpful (highest score) and k most harmful (lowest score) training
        examples for each test example, streamed over the training set.

        Returns:
            `TopK` with `.helpful` and `.harmful`, each a `Ranking` of `indices` and
            `scores`, Tensor[n_test, min(k, n_train)], most extreme first.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidArgumentError(f"`k` must be a positive integer, got {k!r}")
        top = bottom = None
        for lo, s in self._score_blocks(test):
            top = merge_top(*(top or (None, None)), s, lo, k, largest=True)
            bottom = merge_top(*(bottom or (None, None)), s, lo, k, largest=False)
        return TopK(helpful=Ranking(top[1], top[0]), harmful=Ranking(bottom[1], bottom[0]))

    def self_influence(self) -> Tensor:
        """`∇ℓ(train_i)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)` for every training example, Tensor[n_train].

        High values flag unusual or mislabeled examples. Computed once, then cached.
        """
        G = self._require_fit()
        if self._self_influence is None:
            parts = []
            block = 256
            for lo in tqdm(range(0, G.shape[0], block), desc="self-influence", leave=False,
                           disable=not self.progress or G.shape[0] <= 4 * block):
                parts.append((self._precondition(G[lo:lo + block]) * G[lo:lo + block]).sum(dim=1))
            self._self_influence = torch.cat(parts)
        return self._self_influence

    def group_scores(self, test: Any, groups: str | Sequence) -> GroupScores:
        """Scores summed over groups of training examples (e.g. a data source or a day).

        Args:
            test: test examples (any accepted data form).
            groups: the name of a metadata column of the training `datasets.Dataset`, or a
                sequence of n_train group labels.
        Returns:
            `GroupScores` with `groups` (distinct values), `sum` and `mean`
            Tensor[n_test, n_groups] and `count` LongTensor[n_groups]. Same sign convention
            as `scores`: a negative sum means the group as a whole pushed the test loss up.
        """
        n = len(self.train)
        labels = self.train.column(groups) if isinstance(groups, str) else list(groups)
        if len(labels) != n:
            raise InvalidArgumentError(f"`groups` has {len(labels)} entries but the training set has {n} examples")
        values = list(dict.fromkeys(labels))
        position = {v: c for c, v in enumerate(values)}
        codes = torch.tensor([position[v] for v in labels], device=self.fm.device)
        total = None
        for lo, s in self._score_blocks(test):
            if total is None:
                total = torch.zeros(s.shape[0], len(values), dtype=s.dtype, device=s.device)
            total.index_add_(1, codes[lo:lo + s.shape[1]], s)
        return GroupScores(values, total, torch.bincount(codes, minlength=len(values)))

    def __repr__(self) -> str:
        state = "fitted" if self.train_grads is not None else "not fitted"
        return (f"Attributor(method={self.method.name!r}, n_train={len(self.train)}, n_params={self.fm.p}, "
                f"damping={self.damping}, {state})")


def _check_positive_number(value: Any, name: str, allow_none: bool, allow_zero: bool) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(f"`{name}` must be a finite number >= 0{' or None' if allow_none else ''}, "
                                   f"got {value!r}")


def _check_finite(t: Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise InfluenceError(f"non-finite values (NaN or inf) in {what}")
