"""`Attributor`: fit once on the training data, then ask which examples drove a prediction.

Sign convention (used by every score this package returns):

    score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)

with ℓ the per-example training loss, m the test measurement (the loss by default), and H
the Hessian or Gauss-Newton matrix of the *mean* training loss including its L2
regulariser. Removing train_i changes the test loss by about `+score[j, i] / n_train`:
positive = helpful (a proponent), negative = harmful (an opponent).

Orchestration only: methods (`influence.methods`) do the math, a store (`influence.store`:
in memory or an index folder) keeps the training side, `influence.scoring` streams the products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from influence import scoring
from influence.curvature import CURVATURES, Curvature
from influence.damping import Damping, requested_damping
from influence.data import ExampleData, as_data
from influence.diagnostics import Diagnostics
from influence.errors import IndexFolderError, InfluenceError, InvalidArgumentError, NotFittedError
from influence.features import FeaturePass, TrainFeatures
from influence.index import validate_storage_dtype
from influence.methods import auto
from influence.model import FunctionalModel
from influence.options import check_int, check_number, options_key
from influence.parameters import parameter_report
from influence.results import GroupScores, TopK
from influence.solve_report import SolveReport
from influence.store import FolderStore, MemoryStore, SavedFit, Store, folder_path, stored_manifest
from influence.task import ClassificationTask, Task, describe_task, task_from_description

# Settings that change an index (stored in its key, restored by `load`).
SETTINGS = ("curvature", "damping", "damping_ratio", "curvature_samples", "seed", "storage_dtype",
            "shard_size")

class Attributor:
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

    def __init__(self, model: nn.Module, train: Any, task: Task | None = None,
                 method: str = "auto", damping: float | None = None, *, curvature: str = "ggn",
                 damping_ratio: float | None = None, batch_size: int = 256,
                 curvature_samples: int | None = None, cache_dir: str | Path | None = None,
                 storage_dtype: str = "float32", shard_size: int = 4096,
                 input_column: str | Sequence[str] = "input", label_column: str = "label",
                 transform: Callable | None = None, collate_fn: Callable | None = None,
                 progress: bool = True, seed: int = 0, options: Any = None, **method_options: Any):
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
        validate_storage_dtype(storage_dtype)
        self.model, self.task = model, task if task is not None else ClassificationTask()
        self.fm = FunctionalModel(model, self.task.parameters, forward=self.task.forward)
        self.read_options = dict(input_column=input_column, label_column=label_column,
                                 transform=transform, collate_fn=collate_fn)
        self.train = None if train is None else self.read_data(train, "train")
        self.cache_dir = None if cache_dir is None else folder_path(cache_dir)
        self.method, self.method_choice = auto.build_method(method, options, method_options,
                                                            self.fm, self.train)
        self.settings = dict(curvature=curvature, damping=damping, damping_ratio=damping_ratio,
                             curvature_samples=curvature_samples, seed=seed, storage_dtype=storage_dtype,
                             shard_size=shard_size)
        self.batch_size, self.progress, self.damping = batch_size, progress, damping
        self.gradients = FeaturePass(self.method, self.fm, self.task, batch_size, progress)
        self.index: Store | None = None
        self.diagnostics: Diagnostics | None = None
        self._self_influence: Tensor | None = None
        self._last_query: tuple[str, Tensor] | None = None  # (test data digest, preconditioned features)

    def read_data(self, data: Any, argument: str = "test") -> ExampleData:
        """`data` in any accepted form, read the way this Attributor reads its training data."""
        return as_data(data, argument, **self.read_options)

    # ------------------------------------------------------------------ fitting
    def fit(self) -> Attributor:
        """Compute the training features and the preconditioner once; returns self.

        With `cache_dir`, features go to checksummed shards: a finished index with the same
        model, settings and training data is reused as is, an interrupted one resumes from
        its last complete shard, and one built for another model, settings or data is refused.
        """
        if self.train is None:
            raise InvalidArgumentError("this Attributor was loaded without `train`; it is already fitted")
        store = self._store(self._key())
        saved = store.open(self.train)
        if saved is None:
            saved = self._build(store)
        self._use(store, saved)
        return self

    def _store(self, key: dict) -> Store:
        if self.cache_dir is None:
            return MemoryStore()
        return FolderStore(self.cache_dir, key, self.settings["storage_dtype"],
                           self.settings["shard_size"], self.fm.device)

    def _key(self) -> dict:
        """Everything an index depends on; a stored index with another key is refused."""
        return {"model_fingerprint": self.fm.fingerprint(), "method": self.method.name,
                "options": options_key(self.method.options),
                "task": describe_task(self.task)["class"], "weight_decay": self.task.weight_decay,
                "parameters": self.fm.names,
                "n_train": None if self.train is None else len(self.train),
                "dtype": str(self.fm.dtype), **self.settings}

    def _build(self, store: Store) -> SavedFit | None:
        """The one fit sequence, for every store: the method first when the features depend
        on it, the features in one pass over the training data, the method, then save.
        Returns the saved fit to processes that did not fit the method (torchrun ranks > 0)."""
        # The damping's convexity probe runs the model: any set-up failure comes before the
        # gradient pass, not after it.
        self._damping  # noqa: B018
        self.gradients.warn_if_suspicious(self.train)
        fitted = self._fit_method(None) if self.method.features_use_curvature else None
        if not store.build(self.train, TrainFeatures(self.gradients), self.progress):
            return store.save(None)
        curvature, info = fitted or self._fit_method(store)
        self.damping = self.method.damping
        self.diagnostics = Diagnostics(
            self.method.name, self.method_choice, self.settings["curvature"] if curvature else None,
            curvature.backend if curvature else None, self.damping, len(self.train), self.fm.p,
            self.gradients.dim, parameter_report(self.fm.model, self.fm.names, self.fm.upcast_from),
            info)
        state = self.method.state_dict()
        if curvature is not None and self.method.queries_use_curvature:
            state.update(curvature.state_dict())
        return store.save(SavedFit(state, self.damping, self.diagnostics.to_dict(),
                                   describe_task(self.task)))

    def _fit_method(self, store: Store | None) -> tuple[Curvature | None, dict]:
        """The curvature (for methods that use one) and the method fitted on it; `store`: the
        training features (None when the method is fitted before them)."""
        curvature = None
        if self.method.uses_curvature:
            data = self.train.sample(self.settings["curvature_samples"], self.settings["seed"])
            curvature = Curvature(self.fm, self.task, data, self.settings["curvature"],
                                  batch_size=self.batch_size, progress=self.progress)
        blocks = None if store is None else \
            lambda: (b.to(self.fm.dtype) for _, b in store.blocks(scoring.BLOCK_ROWS))
        try:
            return curvature, self.method.fit(self.fm, curvature, self._damping, blocks)
        except torch.linalg.LinAlgError as error:
            raise InfluenceError(f"the {self.method.name} factorisation failed ({error}); the curvature is "
                                 "non-finite or too ill-conditioned: check the scale of the inputs, or pass a "
                                 "larger `damping`") from error

    @cached_property
    def _damping(self) -> Damping:  # once per Attributor: the convexity check runs the model
        return requested_damping(self.settings["damping"], self.settings["damping_ratio"],
                                 self.method.uses_curvature, self.fm, self.train)

    def _use(self, store: Store, saved: SavedFit | None) -> None:
        """Answer queries from `store`; `saved`: a fit made elsewhere (a folder), restored."""
        if saved is not None:
            curvature = None
            if "curvature_targets" in saved.state:
                curvature = Curvature.from_state(self.fm, self.task, saved.state,
                                                 self.settings["curvature"], self.batch_size)
            method_state = {k: v for k, v in saved.state.items() if not k.startswith("curvature_")}
            self.method.restore(method_state, curvature)
            self.damping = self.method.damping
            self.diagnostics = Diagnostics.from_dict(saved.diagnostics)
        self.index, self._self_influence, self._last_query = store, None, None

    @classmethod
    def load(cls, cache_dir: str | Path, model: nn.Module, task: Task | type[Task] | None = None,
             train: Any = None, verify: bool = True, **settings: Any) -> Attributor:
        """Reopen an index written by `fit()` with `cache_dir`, without the training data.

        Args:
            cache_dir: the index folder.
            model: the same model (same architecture and weights) the index was built with.
            task: the task it was built with; default: rebuilt from the stored weight decay and
                parameters when the stored class is one of this package's tasks. For a task class
                of your own, pass the instance, or the class (`task=MyTask`) to rebuild it with the
                stored settings; a stored class name is looked up, never imported.
            train: optional training data (for `group_scores` by column name); it must be the
                data the index was built from (checked, the first differing row named).
            verify: check every shard's checksum (reads the whole index once).
            **settings: overrides of the stored settings (method, damping, options, ...).
        Raises:
            IndexFolderError: missing, incomplete or corrupted index; another model, other
                settings or other training data than the index was built with.
        """
        manifest = stored_manifest(cache_dir)
        stored = manifest["key"]
        missing = [k for k in ("method", "options", "n_train", *SETTINGS) if k not in stored]
        if missing:
            raise IndexFolderError(f"{Path(cache_dir) / 'manifest.json'} is damaged: its key lacks "
                                   f"{missing}")
        if task is None or isinstance(task, type):
            task = task_from_description(manifest["task"], task)
        settings = {"method": stored["method"], **{k: stored[k] for k in SETTINGS},
                    **stored["options"], **settings}
        attr = cls(model, train, task=task, cache_dir=cache_dir, **settings)
        key = attr._key()
        key["n_train"] = stored["n_train"] if train is None else key["n_train"]
        store = attr._store(key)
        attr._use(store, store.open(attr.train, verify=verify))
        return attr

    # ------------------------------------------------------------------ queries
    def _require_fit(self) -> Store:
        if self.index is None:
            raise NotFittedError("call Attributor.fit() before asking for scores")
        return self.index

    def test_gradients(self, test: Any) -> Tensor:
        """Features of the test measurement's gradients, Tensor[n_test, feature_dim]."""
        self._require_fit()
        return self.gradients.data(self.read_data(test), self.task.measurement, "test gradients")

    def _preconditioned(self, test: Any) -> Tensor:
        """φ(∇m(test)) P, Tensor[n_test, dim]. The test set is read once: its gradients and
        its digest come from the same read; the solve is reused while that set is asked about."""
        self._require_fit()
        G, key = self.gradients.data_and_digest(self.read_data(test), self.task.measurement,
                                                "test gradients")
        last = self._last_query
        if last is not None and last[0] == key:
            return last[1]
        with SolveReport(self.method.name, self.damping, self.diagnostics,
                         self._record_solve) as report:
            Q = report.add(*self.method.precondition(G))
        scoring.check_finite(Q, f"the {self.method.name} solve (diagnostics: "
                                f"{self.diagnostics.last_solve})")
        self._last_query = (key, Q.to(self.fm.dtype))  # methods may solve in float64; scores use the model's dtype
        return self._last_query[1]

    def _record_solve(self, summary: dict | None) -> None:
        self.diagnostics = self.diagnostics.with_solve(summary)

    def scores(self, test: Any) -> Tensor:
        """Influence of every training example on every test example.

        Returns:
            Tensor[n_test, n_train] with `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`;
            positive = helpful (removing train_i raises test_j's loss by ≈ score / n_train).
        """
        return torch.cat([s for _, s in scoring.score_blocks(self._preconditioned(test), self._require_fit())], dim=1)

    def top_k(self, test: Any, k: int = 10) -> TopK:
        """The k most helpful (highest score) and k most harmful (lowest score) training
        examples for each test example, streamed over the index (memory n_test × block; the
        Triton kernel on CUDA keeps no block of scores at all). `diagnostics.query_kernels`
        names the path that ran.

        Returns:
            `TopK` with `.helpful` and `.harmful`, each a `Ranking` of `indices` and
            `scores`, Tensor[n_test, min(k, n_train)], most extreme first.
        """
        check_int(k, "k")
        top, path = scoring.streamed_top_k(self._preconditioned(test), self._require_fit(), k)
        self.diagnostics = self.diagnostics.with_query_kernels(path)
        return top

    def self_influence(self) -> Tensor:
        """`∇ℓ(train_i)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)` for every training example, Tensor[n_train].

        High values flag unusual or mislabeled examples. Computed once, then cached.
        """
        index = self._require_fit()
        if self._self_influence is None:
            with SolveReport(self.method.name, self.damping, self.diagnostics,
                             self._record_solve) as report:
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

