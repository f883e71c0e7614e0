"""Fitting into, and reopening, an index folder: the storage side of `Attributor.fit` and
`Attributor.load`, as a mixin of `Attributor` (the folder's format: `influence.index_folder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from influence import index as idx
from influence.curvature import Curvature
from influence.distributed import barrier, rank_and_world
from influence.errors import IndexFolderError
from influence.fingerprint import batch_fingerprints, digest, fingerprints
from influence.index_folder import IndexFolder
from influence.options import options_key
from influence.task import Task, describe_task, task_from_description

# Settings that change an index (stored in its key, restored by `load`).
SETTINGS = ("curvature", "damping", "damping_ratio", "curvature_samples", "seed", "storage_dtype", "shard_size")


class PersistentIndex:
    """`Attributor.fit` with `cache_dir`, and `Attributor.load` (mixed into `Attributor`)."""

    def _key(self) -> dict:
        """Everything an index depends on; a stored index with another key is refused."""
        return {"model_fingerprint": self.fm.fingerprint(), "method": self.method.name,
                "options": options_key(self.method.options), "task": describe_task(self.task)["class"],
                "weight_decay": self.task.weight_decay, "parameters": self.fm.names,
                "n_train": None if self.train is None else len(self.train),
                "dtype": str(self.fm.dtype), **self.settings}

    def _fit_folder(self) -> None:
        """`self.fit()` with `cache_dir`: reuse a finished index for the same model, settings and
        data, resume an interrupted one, refuse another; shards are written by every rank."""
        folder, (rank, world), key = self.folder, rank_and_world(), self._key()
        manifest = folder.manifest()
        if manifest is not None:
            folder.check_key(manifest, key)
            if manifest["complete"]:
                folder.check_data(manifest, fingerprints(self.train))
                self._attach(manifest, verify=True)
                return
        self.features.warn_if_suspicious(self.train)
        barrier()
        folder.begin(manifest, key)
        barrier()
        curvature, prepared = self._prepare() if self.method.features_use_curvature else (None, {})
        n, train = len(self.train), self.train
        idx.build_shards(folder.path, n, self.settings["shard_size"], self.settings["storage_dtype"], train.batch,
                         lambda rows, x, y: digest(batch_fingerprints(train, rows, x, y)),
                         lambda x, y: self.features.batch(x, y, self.task.loss, "train"),
                         rank=rank, world=world, progress=self.progress)
        barrier()
        if rank == 0:
            shards = idx.collect_shards(folder.path, n, self.settings["shard_size"])
            dim = self.features.dim
            self.index = idx.ShardedIndex(folder.path, {"n_train": n, "dim": dim, "shards": shards,
                                                        "storage_dtype": self.settings["storage_dtype"]})
            if curvature is None:
                curvature, prepared = self._prepare()
            self._fit_method(curvature, prepared)
            state = self.method.state_dict()
            if curvature is not None and self.method.queries_use_curvature:
                state.update(curvature.state_dict())
            folder.finish(key, shards, (n, dim), self.settings["storage_dtype"], state,
                          fingerprints(train), {"damping": self.damping, "diagnostics": self.diagnostics,
                                                "task": describe_task(self.task)})
        barrier()
        if rank != 0:
            self._attach(folder.manifest(), verify=False)


    def _attach(self, manifest: dict, verify: bool) -> None:
        """Use a complete index folder: its features, and the method restored from its state."""
        self.index, state = self.folder.open(manifest, verify, self.fm.device)
        curvature = None
        if "curvature_targets" in state:
            curvature = Curvature.from_state(self.fm, self.task, state, self.settings["curvature"], self.batch_size)
        self.method.restore({k: v for k, v in state.items() if not k.startswith("curvature_")}, curvature)
        self.damping, self.diagnostics = self.method.damping, dict(manifest["diagnostics"])
        self._reset()


    @classmethod
    def load(cls, cache_dir: str | Path, model: nn.Module, task: Task | type[Task] | None = None, train: Any = None,
             verify: bool = True, **settings: Any):
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
        folder = IndexFolder(cache_dir)
        manifest = folder.manifest()
        if manifest is None:
            raise IndexFolderError(f"no index at {folder.path} (no manifest.json); fit() with cache_dir first")
        folder.require_complete(manifest)
        stored = manifest["key"]
        missing = [k for k in ("method", "options", "n_train", *SETTINGS) if k not in stored]
        if missing:
            raise IndexFolderError(f"{folder.path / 'manifest.json'} is damaged: its key lacks {missing}")
        if task is None or isinstance(task, type):
            task = task_from_description(manifest["task"], task)
        settings = {"method": stored["method"], **{k: stored[k] for k in SETTINGS}, **stored["options"], **settings}
        attr = cls(model, train, task=task, cache_dir=folder.path, **settings)
        key = attr._key()
        key["n_train"] = stored["n_train"] if train is None else key["n_train"]
        folder.check_key(manifest, key)
        if attr.train is not None:
            folder.check_data(manifest, fingerprints(attr.train))
        attr._attach(manifest, verify=verify)
        return attr
