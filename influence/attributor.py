"""`Attributor`: fit once on the training data, then ask which examples drove a prediction.

Sign convention (used by every score this package returns):

    score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)

with ℓ the per-example training loss, m the test measurement (the loss by default), and H
the Hessian or Gauss-Newton matrix of the *mean* training loss including its L2
regulariser. Removing train_i changes the test loss by about `+score[j, i] / n_train`:
positive = helpful (a proponent), negative = harmful (an opponent).

Orchestration only: methods (`influence.methods`) do the math, the index (`influence.index`,
`influence.persist`) stores the training side, `influence.scoring` streams the products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from influence import index as idx
from influence import scoring
from influence.curvature import CURVATURES, Curvature
from influence.damping import Damping, requested_damping
from influence.data import as_data
from influence.distributed import rank_and_world
from influence.errors import InfluenceError, InvalidArgumentError, NotFittedError
from influence.features import FeaturePass
from influence.fingerprint import digest, fingerprints
from influence.index_folder import IndexFolder
from influence.methods import auto
from influence.model import FunctionalModel
from influence.options import check_int, check_number
from influence.parameters import parameter_report
from influence.persist import PersistentIndex
from influence.results import GroupScores, TopK
from influence.solve_report import SolveReport
from influence.task import ClassificationTask, Task


class Attributor(PersistentIndex):
    """Influence of training examples on test predictions.

    Args:
        model: any `nn.Module`; it is run in eval mode and never modified.
        train: training data — a `datasets.Dataset` (columns `input_column`,
            `label_column`, other columns are metadata such as `source`), a torch `Dataset`
            of `(input, label)` pairs, or a tuple of tensors `(X, y)`.
        task: what is attributed (loss, measurement, parameters, weight decay);
            default `ClassificationTask()`.
        method: "auto" (default: chosen by size, see `diagnostics["method_choice"]`) or one
            of `influence.METHODS`, e.g. "exact", "ekfac", "trak", "cg".
        damping: λ added to the curvature. `None` picks `damping_ratio × mean eigenvalue`
            of the curvature; the chosen value is in `attr.damping` and `attr.diagnostics`.
        curvature: "ggn" (default, positive semi-definite) or "hessian".
        damping_ratio: multiple of the mean eigenvalue used when `damping=None`; default
            1e-3 for models affine in the attributed parameters (convex), else 0.3.
        batch_size: examples per gradient / curvature batch.
        curvature_samples: use this many training examples (a fixed random subset) for
            the curvature; `None` uses all.
        cache_dir: folder for a persistent, resumable index (see `influence.index_folder`);
            `None` keeps everything in memory. Required under `torchrun`.
        storage_dtype: "float32" (default), "float16", "bfloat16" or "float64" for the
            stored training features (cache_dir only).
        shard_size: training examples per index shard (the unit of resumption).
        input_column, label_column, transform, collate_fn: how to read the data (see
            `influence.data.as_data`: a list of input columns makes the inputs a dict, for
            `model(**inputs)`; `collate_fn` e.g. Hugging Face's `DataCollatorWithPadding`).
        progress: show progress bars (with an estimate for phases over a minute).
        seed: seed for every random choice (probes, subsets).
        **options: method options, e.g. `tol`, `max_iter` for "cg" (see each method's Options).

    Example:
        >>> attr = Attributor(model, (X_train, y_train)).fit()
        >>> attr.top_k((X_test, y_test), k=5).harmful.indices   # LongTensor[n_test, 5]
    """

    def __init__(self, model: nn.Module, train: Any, task: Task | None = None, method: str = "auto",
                 damping: float | None = None, *, curvature: str = "ggn", damping_ratio: float | None = None,
                 batch_size: int = 256, curvature_samples: int | None = None, cache_dir: str | Path | None = None,
                 storage_dtype: str = "float32", shard_size: int = 4096, input_column: str | Sequence[str] = "input",
                 label_column: str = "label", transform: Callable | None = None, collate_fn: Callable | None = None,
                 progress: bool = True, seed: int = 0, **options: Any):
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if task is not None and not isinstance(task, Task):
            raise InvalidArgumentError(f"`task` must be an influence.Task, got {type(task).__name__}")
        if curvature not in CURVATURES:
            raise InvalidArgumentError(f"`curvature` must be one of {list(CURVATURES)}, got {curvature!r}")
        check_number(damping, "damping", optional=True)
        check_number(damping_ratio, "damping_ratio", optional=True)
        check_int(batch_size, "batch_size")
        check_int(shard_size, "shard_size")
        check_int(curvature_samples, "curvature_samples", optional=True)
        idx.validate_storage_dtype(storage_dtype)
        self.model, self.task = model, task if task is not None else ClassificationTask()
        self.fm = FunctionalModel(model, self.task.parameters, forward=self.task.forward)
        self.read = dict(input_column=input_column, label_column=label_column, transform=transform,
                         collate_fn=collate_fn)
        self.train = None if train is None else as_data(train, "train", **self.read)
        self.folder = None if cache_dir is None else IndexFolder(cache_dir)
        self.method, self.method_choice = auto.build_method(method, options, self.fm, self.train)
        self.settings = dict(curvature=curvature, damping=damping, damping_ratio=damping_ratio,
                             curvature_samples=curvature_samples, seed=seed, storage_dtype=storage_dtype,
                             shard_size=shard_size)
        self.batch_size, self.progress, self.damping = batch_size, progress, damping
        self.features = FeaturePass(self.method, self.fm, self.task, batch_size, progress)
        self.index: idx.MemoryIndex | idx.ShardedIndex | None = None
        self.diagnostics: dict[str, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self._self_influence: Tensor | None = None
        self._last_query: tuple[str, Tensor] | None = None  # (test data digest, preconditioned features)

    # ------------------------------------------------------------------ fitting
    def fit(self) -> Attributor:
        """Compute the training features and the preconditioner once; returns self.

        With `cache_dir`, features go to checksummed shards: a finished index with the same
        model, settings and training data is reused as is, an interrupted one resumes from
        its last complete shard, and one built for another model, settings or data is refused.
        """
        if self.train is None:
            raise InvalidArgumentError("this Attributor was loaded without `train`; it is already fitted")
        self._damping  # noqa: B018 — its convexity probe runs the model: any failure comes before the gradient pass
        if self.folder is not None:
            self._fit_folder()
            return self
        if rank_and_world()[1] > 1:
            raise InvalidArgumentError("a distributed fit (torchrun) needs `cache_dir`, a folder all processes share")
        self.features.warn_if_suspicious(self.train)
        curvature, prepared = self._prepare()
        self.index = idx.MemoryIndex(self.features.data(self.train, self.task.loss, "train gradients"))
        self._fit_method(curvature, prepared)
        return self

    def _prepare(self) -> tuple[Curvature | None, dict]:
        """The curvature (for methods that use one) and, when the features depend on it, the method's prep."""
        if not self.method.uses_curvature:
            return None, {}
        data = self.train.sample(self.settings["curvature_samples"], self.settings["seed"])
        curvature = Curvature(self.fm, self.task, data, self.settings["curvature"], batch_size=self.batch_size,
                              progress=self.progress)
        return curvature, self.method.prepare(curvature, self._damping) if self.method.features_use_curvature else {}

    @cached_property
    def _damping(self) -> Damping:  # once per Attributor: the convexity check runs the model
        return requested_damping(self.settings["damping"], self.settings["damping_ratio"], self.method.uses_curvature,
                                 self.fm, self.train)

    def _fit_method(self, curvature: Curvature | None, prepared: dict) -> None:
        try:
            info = self.method.fit(self.fm, curvature, self._damping,
                                   lambda: (b.to(self.fm.dtype) for _, b in self.index.blocks(scoring.BLOCK_ROWS)))
        except torch.linalg.LinAlgError as error:
            raise InfluenceError(f"the {self.method.name} factorisation failed ({error}); the curvature is "
                                 "non-finite or too ill-conditioned: check the scale of the inputs, or pass a "
                                 "larger `damping`") from error
        self.damping = self.method.damping
        self.diagnostics = {"method": self.method.name, "method_choice": self.method_choice,
                            "curvature": self.settings["curvature"] if curvature else None,
                            "curvature_backend": curvature.backend if curvature else None, "damping": self.damping,
                            "n_train": self.index.n, "n_params": self.fm.p, "feature_dim": self.index.dim,
                            "parameters": parameter_report(self.fm.model, self.fm.names, self.fm.upcast_from),
                            **prepared, **info}
        self._reset()

    # ------------------------------------------------------------------ queries
    def _require_fit(self) -> idx.MemoryIndex | idx.ShardedIndex:
        if self.index is None:
            raise NotFittedError("call Attributor.fit() before asking for scores")
        return self.index

    def test_gradients(self, test: Any) -> Tensor:
        """Features of the test measurement's gradients, Tensor[n_test, feature_dim]."""
        self._require_fit()
        return self.features.data(as_data(test, "test", **self.read), self.task.measurement, "test gradients")

    def _preconditioned(self, test: Any) -> Tensor:
        """φ(∇m(test)) P, Tensor[n_test, dim]; reused while the same test set is asked about."""
        self._require_fit()
        data = as_data(test, "test", **self.read)
        key = digest(fingerprints(data))
        if self._last_query is not None and self._last_query[0] == key:
            return self._last_query[1]
        G = self.features.data(data, self.task.measurement, "test gradients")
        with SolveReport(self.method.name, self.damping, self.diagnostics) as report:
            Q = report.add(*self.method.precondition(G))
        scoring.check_finite(Q, f"the {self.method.name} solve (diagnostics: {self.diagnostics['last_solve']})")
        self._last_query = (key, Q.to(self.fm.dtype))  # methods may solve in float64; scores use the model's dtype
        return self._last_query[1]

    def scores(self, test: Any) -> Tensor:
        """Influence of every training example on every test example.

        Returns:
            Tensor[n_test, n_train] with `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`;
            positive = helpful (removing train_i raises test_j's loss by ≈ score / n_train).
        """
        return torch.cat([s for _, s in scoring.score_blocks(self._preconditioned(test), self._require_fit())], dim=1)

    def top_k(self, test: Any, k: int = 10) -> TopK:
        """The k most helpful (highest score) and k most harmful (lowest score) training
        examples for each test example, streamed over the index (memory n_test × block).

        Returns:
            `TopK` with `.helpful` and `.harmful`, each a `Ranking` of `indices` and
            `scores`, Tensor[n_test, min(k, n_train)], most extreme first.
        """
        check_int(k, "k")
        return scoring.top_k(scoring.score_blocks(self._preconditioned(test), self._require_fit()), k)

    def self_influence(self) -> Tensor:
        """`∇ℓ(train_i)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)` for every training example, Tensor[n_train].

        High values flag unusual or mislabeled examples. Computed once, then cached.
        """
        index = self._require_fit()
        if self._self_influence is None:
            with SolveReport(self.method.name, self.damping, self.diagnostics) as report:
                quadratic = lambda F: report.add(*self.method.self_scores(F))
                self._self_influence = scoring.self_influence(index, quadratic, self.fm.dtype, self.progress)
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
        values, codes = scoring.group_codes(groups, self.train, self._require_fit().n)
        return scoring.group_totals(scoring.score_blocks(self._preconditioned(test), self.index), values, codes)

    def __repr__(self) -> str:
        state = "fitted" if self.index is not None else "not fitted"
        n = self.index.n if self.index is not None else len(self.train)
        return (f"Attributor(method={self.method.name!r} ({self.method_choice}), n_train={n}, "
                f"n_params={self.fm.p}, damping={self.damping}, {state})")

