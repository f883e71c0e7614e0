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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from influence import index as idx
from influence.batching import take, to_model
from influence.curvature import CURVATURES, Curvature
from influence.data import ExampleData, as_data
from influence.distributed import barrier, rank_and_world
from influence.errors import InfluenceError, InfluenceWarning, InvalidArgumentError, NotFittedError
from influence.gradients import check_targets
from influence.methods import method_class
from influence.model import FunctionalModel, is_affine_in_parameters
from influence.parameters import parameter_report
from influence.results import GroupScores, Ranking, TopK, merge_top
from influence.storage import atomic_write, remove_stale_temporaries, sha256_file, write_json
from influence.task import ClassificationTask, Task

# Default damping as a multiple of the curvature's mean eigenvalue (trace / p). Models whose
# outputs are affine in the attributed parameters have a convex objective and the influence
# approximation is then exact up to second order, so only a touch of damping is needed;
# non-convex models need much more (measured on MLPs: see benchmarks/RESULTS.md).
DAMPING_RATIO_CONVEX = 1e-3
DAMPING_RATIO_NONCONVEX = 0.3
BLOCK_ROWS = 8192  # training rows scored per block: bounds query memory to n_test × BLOCK_ROWS


class Attributor:
    """Influence of training examples on test predictions.

    Args:
        model: any `nn.Module`; it is run in eval mode and never modified.
        train: training data — a `datasets.Dataset` (columns `input_column`,
            `label_column`, other columns are metadata such as `source`), a torch `Dataset`
            of `(input, label)` pairs, or a tuple of tensors `(X, y)`.
        task: what is attributed (loss, measurement, parameters, weight decay);
            default `ClassificationTask()`.
        method: one of `influence.METHODS`, e.g. "exact", "cg", "lissa", "identity".
        damping: λ added to the curvature. `None` picks `damping_ratio × mean eigenvalue`
            of the curvature (a Hutchinson trace estimate), which carries across models;
            the chosen value is in `attr.damping` and `attr.diagnostics`.
        curvature: "ggn" (default, positive semi-definite) or "hessian".
        damping_ratio: multiple of the mean eigenvalue used when `damping=None`; default
            1e-3 for models affine in the attributed parameters (convex), else 0.3.
        batch_size: examples per gradient / curvature batch.
        curvature_samples: use this many training examples (a fixed random subset) for
            the curvature; `None` uses all.
        cache_dir: folder for a persistent, resumable index (see `influence.index`);
            `None` keeps everything in memory. Required under `torchrun`.
        storage_dtype: "float32" (default), "float16", "bfloat16" or "float64" for the
            stored training features (cache_dir only).
        shard_size: training examples per index shard (the unit of resumption).
        input_column, label_column, transform, collate_fn: how to read the data
            (`influence.data.as_data`): the input column(s) — a list makes the inputs a
            dict, `model(**inputs)` — the labels' column, a per-row `transform`, and a
            collator turning a list of items into a batch (e.g. Hugging Face's
            `DataCollatorWithPadding`; a DataLoader's own collator is used by default).
        progress: show progress bars on long work.
        seed: seed for every random choice (probes, subsets).
        **options: method options, e.g. `tol`, `max_iter` for "cg" (see each method).

    Example:
        >>> attr = Attributor(model, (X_train, y_train), method="cg").fit()
        >>> attr.top_k((X_test, y_test), k=5).harmful.indices   # LongTensor[n_test, 5]
    """

    def __init__(self, model: nn.Module, train: Any, task: Task | None = None, method: str = "cg",
                 damping: float | None = None, *, curvature: str = "ggn", damping_ratio: float | None = None,
                 batch_size: int = 256, curvature_samples: int | None = None, cache_dir: str | Path | None = None,
                 storage_dtype: str = "float32", shard_size: int = 4096, input_column: str | Sequence[str] = "input",
                 label_column: str = "label", transform: Callable | None = None, collate_fn: Callable | None = None,
                 progress: bool = True,
                 seed: int = 0, **options: Any):
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if task is not None and not isinstance(task, Task):
            raise InvalidArgumentError(f"`task` must be an influence.Task, got {type(task).__name__}")
        if curvature not in CURVATURES:
            raise InvalidArgumentError(f"`curvature` must be one of {list(CURVATURES)}, got {curvature!r}")
        _check_number(damping, "damping")
        _check_number(damping_ratio, "damping_ratio")
        for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"`{name}` must be a positive integer, got {value!r}")
        if curvature_samples is not None and (not isinstance(curvature_samples, int) or curvature_samples < 1):
            raise InvalidArgumentError(f"`curvature_samples` must be a positive integer or None, got {curvature_samples!r}")
        idx.validate_storage_dtype(storage_dtype)
        self.model = model
        self.task = task if task is not None else ClassificationTask()
        cls = method_class(method)
        if damping_ratio is not None and not cls.uses_curvature and "damping_ratio" in cls.options:
            options = {**options, "damping_ratio": damping_ratio}  # methods with their own curvature
        self.method = cls(**options)
        self.options = options
        self.read = dict(input_column=input_column, label_column=label_column, transform=transform,
                         collate_fn=collate_fn)
        self.train = None if train is None else as_data(train, "train", **self.read)
        self.damping = damping
        self.curvature_kind = curvature
        self.damping_ratio = damping_ratio
        self.batch_size = batch_size
        self.curvature_samples = curvature_samples
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.storage_dtype = storage_dtype
        self.shard_size = shard_size
        self.progress = progress
        self.seed = seed
        self.fm = FunctionalModel(model, self.task.parameters, forward=self.task.forward)
        self.index: idx.MemoryIndex | idx.ShardedIndex | None = None
        self._self_influence: Tensor | None = None
        self.diagnostics: dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self) -> Attributor:
        """Compute the training features and the preconditioner once; returns self.

        With `cache_dir`, features go to checksummed shards: a finished index with the same
        model and settings is reused as is, an interrupted one resumes from its last
        complete shard, and one built for another model or settings is refused.
        """
        if self.train is None:
            raise InvalidArgumentError("this Attributor was loaded without `train`; it is already fitted")
        if self.cache_dir is not None:
            return self._fit_to_folder()
        if rank_and_world()[1] > 1:
            raise InvalidArgumentError("a distributed fit (torchrun) needs `cache_dir`, a folder all processes share")
        curvature = self._curvature(self._curvature_data())
        if self.method.features_use_curvature:
            self.method.prepare(curvature)
        self.index = idx.MemoryIndex(self._gradients(self.train, self.task.loss, "train gradients"))
        self._fit_method(curvature)
        return self

    def _fit_method(self, curvature: Curvature | None) -> None:
        if curvature is not None:
            self.damping, source = self._resolve_damping(curvature)
        else:
            source = "chosen by the method" if self.damping is None else "given"
        index = self.index
        try:
            self.method.fit(curvature, self.damping,
                            lambda: (b.to(self.fm.dtype) for _, b in index.blocks(BLOCK_ROWS)))
        except torch.linalg.LinAlgError as error:
            raise InfluenceError(f"the {self.method.name} factorisation failed ({error}); the curvature is "
                                 "non-finite or too ill-conditioned: check the scale of the inputs, or pass a "
                                 "larger `damping`") from error
        self.damping = self.method.damping
        raised = self.method.diagnostics.get("damping_raised")
        if raised:
            source += f"; raised from {raised['from']:.4g} to make the curvature positive definite"
        self.diagnostics = {"method": self.method.name, "curvature": self.curvature_kind if curvature else None,
                            "curvature_backend": curvature.backend if curvature else None,
                            "damping": self.damping, "damping_source": source, "n_train": index.n,
                            "n_params": self.fm.p, "feature_dim": index.dim,
                            "parameters": parameter_report(self.fm.model, self.fm.names), **self.method.diagnostics}
        if self.fm.upcast_from:
            self.diagnostics["precision"] = (f"the model's {self.fm.upcast_from} parameters are attributed in float32 "
                                             "(float32 copies; the model is not changed)")
        self._self_influence = None

    def _curvature(self, data: ExampleData) -> Curvature | None:
        if not self.method.uses_curvature:
            return None
        return Curvature(self.fm, self.task, data, self.curvature_kind, batch_size=self.batch_size)

    def _key(self) -> dict:
        """Everything an index depends on; a stored index with another key is refused."""
        return idx.jsonable({
            "model_fingerprint": self.fm.fingerprint(), "method": self.method.name, "options": self.options,
            "task": f"{type(self.task).__module__}.{type(self.task).__qualname__}",
            "weight_decay": self.task.weight_decay, "parameters": self.fm.names, "curvature": self.curvature_kind,
            "damping": self.damping, "damping_ratio": self.damping_ratio,
            "curvature_samples": self.curvature_samples, "seed": self.seed, "storage_dtype": self.storage_dtype,
            "shard_size": self.shard_size, "n_train": None if self.train is None else len(self.train),
            "feature_dim": self.method.feature_dim(self.fm), "dtype": str(self.fm.dtype),
        })

    def _fit_to_folder(self) -> Attributor:
        folder = self.cache_dir
        rank, world = rank_and_world()
        key = self._key()
        manifest = idx.read_manifest(folder)
        if manifest is not None:
            idx.check_key(manifest, key, folder)
            if manifest.get("complete"):
                self._open(folder, manifest, verify=True)
                return self
        barrier()
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)  # left by a writer killed mid-write
            if manifest is None:
                write_json(folder / "manifest.json", {"format_version": idx.FORMAT_VERSION, "key": key,
                                                      "complete": False})
        barrier()
        n = len(self.train)
        curvature = None
        if self.method.features_use_curvature:  # every rank needs it for its features
            curvature = self._curvature(self._curvature_data())
            self.method.prepare(curvature)
        idx.build_shards(folder, n, self.shard_size, self.storage_dtype, self.train.batch,
                         lambda x, y: self._features(x, y, self.task.loss, "train"),
                         rank=rank, world=world, progress=self.progress and n >= 5000)
        barrier()
        if rank == 0:
            shards = idx.collect_shards(folder, n, self.shard_size)
            self.index = idx.ShardedIndex(folder, {"n_train": n, "dim": key["feature_dim"],
                                                   "storage_dtype": self.storage_dtype, "shards": shards})
            if curvature is None:
                curvature = self._curvature(self._curvature_data())
            self._fit_method(curvature)
            self._save_state(folder, key, shards, curvature)
        barrier()
        if rank != 0:
            self._open(folder, idx.read_manifest(folder), verify=False)
        return self

    def _save_state(self, folder: Path, key: dict, shards: list[dict], curvature: Curvature | None) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.method.state_dict().items()}
        if curvature is not None and self.method.queries_use_curvature:
            state.update({k: v.detach().cpu().contiguous() for k, v in curvature.state_dict().items()})
        atomic_write(folder / "method.safetensors", lambda f: f.write(_safetensors_bytes(state)))
        write_json(folder / "manifest.json", {
            "format_version": idx.FORMAT_VERSION, "key": key, "complete": True, "n_train": len(self.train),
            "dim": key["feature_dim"], "storage_dtype": self.storage_dtype, "shards": shards,
            "method_state": {"file": "method.safetensors", "sha256": sha256_file(folder / "method.safetensors")},
            "damping": self.damping, "diagnostics": idx.jsonable(self.diagnostics),
        })

    def _open(self, folder: Path, manifest: dict, verify: bool) -> None:
        """Attach a complete index folder (checksums verified when `verify`)."""
        if not manifest.get("complete"):
            raise idx.IndexFolderError(f"index at {folder} is incomplete (its fit was interrupted); run fit() "
                                       "with the same model and settings to resume it")
        index = idx.ShardedIndex(folder, manifest)
        state_path = folder / manifest["method_state"]["file"]
        if verify:
            index.verify()
            if not state_path.exists() or sha256_file(state_path) != manifest["method_state"]["sha256"]:
                raise idx.IndexFolderError(f"{state_path} is missing or corrupted (checksum mismatch)")
        try:
            state = {k: v.to(self.fm.device) for k, v in load_file(state_path).items()}
        except Exception as error:  # noqa: BLE001 — safetensors raises its own error types
            raise idx.IndexFolderError(f"{state_path} cannot be read ({type(error).__name__}: {error}); delete the "
                                       "folder and fit again") from None
        curvature = None
        if "curvature_targets" in state:
            curvature = Curvature.from_state(self.fm, self.task, state, self.curvature_kind, self.batch_size)
        self.index = index
        self.damping = manifest["damping"]
        self.method.curvature, self.method.damping = curvature, self.damping
        self.method.load_state_dict({k: v for k, v in state.items() if not k.startswith("curvature_") and k != "_empty"})
        self.diagnostics = dict(manifest["diagnostics"])
        self._self_influence = None

    @classmethod
    def load(cls, cache_dir: str | Path, model: nn.Module, task: Task | None = None, train: Any = None,
             verify: bool = True, **settings: Any) -> Attributor:
        """Reopen an index written by `fit()` with `cache_dir`, without the training data.

        Args:
            cache_dir: the index folder.
            model: the same model (same architecture and weights) the index was built with.
            task: the same task (default `ClassificationTask()`).
            train: optional training data, only for `group_scores` by column name.
            verify: check every shard's checksum (reads the whole index once).
            **settings: the settings `fit` used (method, damping, options, ...); the method
                and its options default to those stored in the manifest.
        Raises:
            IndexFolderError: missing, incomplete or corrupted index, or another model or
                other settings than the index was built with.
        """
        folder = Path(cache_dir)
        manifest = idx.read_manifest(folder)
        if manifest is None:
            raise idx.IndexFolderError(f"no index at {folder} (no manifest.json); fit() with cache_dir first")
        stored = manifest["key"]
        missing = [k for k in ("method", "curvature", "damping", "damping_ratio", "curvature_samples", "seed",
                               "storage_dtype", "shard_size", "options", "n_train") if k not in stored]
        if missing:
            raise idx.IndexFolderError(f"{folder / 'manifest.json'} is damaged: its key lacks {missing}")
        settings = {"method": stored["method"], "curvature": stored["curvature"], "damping": stored["damping"],
                    "damping_ratio": stored["damping_ratio"], "curvature_samples": stored["curvature_samples"],
                    "seed": stored["seed"], "storage_dtype": stored["storage_dtype"],
                    "shard_size": stored["shard_size"], **stored["options"], **settings}
        attr = cls(model, train, task=task, cache_dir=folder, **settings)
        key = attr._key()
        key["n_train"] = stored["n_train"] if train is None else key["n_train"]
        idx.check_key(manifest, key, folder)
        attr._open(folder, manifest, verify=verify)
        return attr

    def _curvature_data(self) -> ExampleData:
        n, m = len(self.train), self.curvature_samples
        if m is None or m >= n:
            return self.train
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[:m].sort().values.tolist()
        return ExampleData(self.train.source, m, lambda ids: self.train.batch([rows[i] for i in ids]), "train")

    def _resolve_damping(self, curvature: Curvature) -> tuple[float, str]:
        if self.damping is not None:
            return float(self.damping), "given"
        ratio = self.damping_ratio
        if ratio is None:
            inputs, _ = self.train.batch(range(min(len(self.train), 64)))
            convex = is_affine_in_parameters(self.fm, to_model(inputs, self.fm.device, self.fm.dtype))
            ratio = DAMPING_RATIO_CONVEX if convex else DAMPING_RATIO_NONCONVEX
        mean_eig = curvature.mean_eigenvalue(seed=self.seed)
        if not math.isfinite(mean_eig) or mean_eig <= 0:
            raise InfluenceError(
                f"the curvature's mean eigenvalue is {mean_eig}; pass an explicit `damping` "
                "(is the model output independent of the attributed parameters?)"
            )
        return ratio * mean_eig, f"auto: {ratio:g} × mean eigenvalue {mean_eig:.4g} (Hutchinson, 32 probes)"

    def _features(self, inputs: Tensor, targets: Tensor, fn: Callable, argument: str) -> Tensor:
        """Checked per-example features of `fn` for one batch: Tensor[b, feature_dim]."""
        targets = targets.to(self.fm.device)
        check_targets(self.fm, self.task, to_model(inputs, self.fm.device, self.fm.dtype), targets, argument)
        out = torch.cat([self.method.features(self.fm, fn, take(inputs, slice(lo, lo + self.batch_size)),
                                              targets[lo:lo + self.batch_size])
                         for lo in range(0, len(targets), self.batch_size)])
        _check_finite(out, f"the gradients of `{argument}` (check the model outputs and loss)")
        return out

    def _gradients(self, data: ExampleData, fn: Callable, desc: str) -> Tensor:
        """Per-example gradient features of `fn` over `data`: Tensor[len(data), feature_dim]."""
        dim = self.method.feature_dim(self.fm)
        try:
            out = torch.empty(len(data), dim, dtype=self.fm.dtype, device=self.fm.device)
        except (RuntimeError, MemoryError) as error:  # torch reports a failed allocation as RuntimeError
            size = len(data) * dim * self.fm.dtype.itemsize / 2**30
            raise InfluenceError(
                f"the {desc} of method {self.method.name!r} need {size:.1f} GiB in memory ({len(data):,} × {dim:,} "
                f"{str(self.fm.dtype)[6:]}), more than this machine can allocate; pass cache_dir= to keep the index "
                "on disk (memory-mapped), storage_dtype='float16' to halve it, or use a method with a small "
                "feature dimension (trak: projection_dim, arnoldi: rank)"
            ) from error
        with tqdm(total=len(data), desc=desc, unit="ex", disable=not self.progress or len(data) < 5000,
                  leave=False) as bar:
            for rows, inputs, targets in data.batches(self.batch_size):
                out[rows.start:rows.stop] = self._features(inputs, targets, fn, data.argument)
                bar.update(len(rows))
        return out

    # ------------------------------------------------------------------ queries
    def _require_fit(self) -> idx.MemoryIndex | idx.ShardedIndex:
        if self.index is None:
            raise NotFittedError("call Attributor.fit() before asking for scores")
        return self.index

    def _precondition(self, G: Tensor) -> Tensor:
        Q = self.method.precondition(G)
        info = self.method.diagnostics
        self.diagnostics.update(info)
        if info.get("diverged"):
            hint = (" or a larger `scale` (scale=None picks one above the largest eigenvalue)"
                    if self.method.name == "lissa" else "")
            raise InfluenceError(f"{self.method.name} diverged: relative residual {info['residual']:.3g} after "
                                 f"{info['iterations']} iterations (the damped curvature is not positive definite, "
                                 f"or the products overflow). Raise `damping`, use curvature='ggn'{hint}. "
                                 f"Diagnostics: {info}")
        if info.get("negative_curvature"):
            warnings.warn(f"{self.method.name}: the damped curvature has negative eigenvalues "
                          f"(damping={self.damping:.4g}); scores may be meaningless. Use curvature='ggn' "
                          "or a larger damping.", InfluenceWarning, stacklevel=3)
        if info.get("converged") is False:
            warnings.warn(f"{self.method.name} did not converge: relative residual {info['residual']:.3g} after "
                          f"{info['iterations']} iterations. Raise max_iter or damping.",
                          InfluenceWarning, stacklevel=3)
        _check_finite(Q, f"the {self.method.name} solve (diagnostics: {info})")
        return Q.to(self.fm.dtype)  # methods may solve in float64; scoring runs in the model's dtype

    def test_gradients(self, test: Any) -> Tensor:
        """Features of the test measurement's gradients, Tensor[n_test, feature_dim]."""
        self._require_fit()
        return self._gradients(as_data(test, "test", **self.read), self.task.measurement, "test gradients")

    def _score_blocks(self, test: Any, block: int = BLOCK_ROWS):
        """Yield `(offset, scores[n_test, b])` over blocks of training examples."""
        index = self._require_fit()
        Q = self._precondition(self.test_gradients(test))
        for lo, features in index.blocks(block):
            s = Q @ features.to(Q.dtype).T
            _check_finite(s, f"the scores of training examples {lo}..{lo + s.shape[1] - 1} (they overflow "
                             f"{Q.dtype}; use a float64 model or rescale the inputs)")
            yield lo, s

    def scores(self, test: Any) -> Tensor:
        """Influence of every training example on every test example.

        Returns:
            Tensor[n_test, n_train] with `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`;
            positive = helpful (removing train_i raises test_j's loss by ≈ score / n_train).
        """
        return torch.cat([s for _, s in self._score_blocks(test)], dim=1)

    def top_k(self, test: Any, k: int = 10) -> TopK:
        """The k most helpful (highest score) and k most harmful (lowest score) training
        examples for each test example, streamed over the index (memory n_test × block).

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
        index = self._require_fit()
        if self._self_influence is None:
            parts = []
            for _, features in tqdm(index.blocks(256), total=-(-index.n // 256), desc="self-influence", leave=False,
                                    disable=not self.progress or index.n <= 1024):
                features = features.to(self.fm.dtype)
                parts.append((self._precondition(features) * features).sum(dim=1))
            values = torch.cat(parts)
            _check_finite(values, f"the self-influence scores (they overflow {values.dtype})")
            self._self_influence = values
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
        n = self._require_fit().n
        if isinstance(groups, str):
            if self.train is None:
                raise InvalidArgumentError(f"`groups` names the column {groups!r}, but this Attributor was loaded "
                                           "without `train`; pass train= to load() or a sequence of labels")
            labels = self.train.column(groups)
        elif hasattr(groups, "tolist") and not isinstance(groups, (list, tuple)):
            labels = groups.tolist()  # a tensor, array or Series: plain values, not 0-d tensors
        else:
            labels = list(groups)
        if len(labels) != n:
            raise InvalidArgumentError(f"`groups` has {len(labels)} entries but the training set has {n} examples")
        try:
            values = list(dict.fromkeys(labels))
        except TypeError:
            raise InvalidArgumentError("`groups` must hold one hashable label (a string or a number) per training "
                                       f"example; got {type(labels[0]).__name__} values") from None
        position = {v: c for c, v in enumerate(values)}
        codes = torch.tensor([position[v] for v in labels], device=self.fm.device)
        total = None
        for lo, s in self._score_blocks(test):
            if total is None:
                total = torch.zeros(s.shape[0], len(values), dtype=s.dtype, device=s.device)
            total.index_add_(1, codes[lo:lo + s.shape[1]], s)
        return GroupScores(values, total, torch.bincount(codes, minlength=len(values)))

    def __repr__(self) -> str:
        state = "fitted" if self.index is not None else "not fitted"
        n = self.index.n if self.index is not None else len(self.train)
        return (f"Attributor(method={self.method.name!r}, n_train={n}, n_params={self.fm.p}, "
                f"damping={self.damping}, {state})")


def _safetensors_bytes(state: dict[str, Tensor]) -> bytes:
    from safetensors.torch import save

    return save(state) if state else save({"_empty": torch.zeros(0)})


def _check_number(value: Any, name: str) -> None:
    """None, or a finite number >= 0."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0:
        raise InvalidArgumentError(f"`{name}` must be a finite number >= 0 or None, got {value!r}")


def _check_finite(t: Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise InfluenceError(f"non-finite values (NaN or inf) in {what}")
