"""Where an Attributor keeps its training side: one interface, a memory store and a folder store
(the storage beside the math, as TRAK's savers are beside its score computers).

A store holds the training features Φ = φ(∇ℓ(train_i)), Tensor[n_train, dim], and, in a
folder, what the fitted method needs at query time. Every fit follows one sequence
(`Attributor.fit`):

    store.open(train)   -> a finished fit for this key and data, or None: build one
    store.build(train, features)   one pass over the training data (its fingerprints are taken
                                   in the same read); True where this process fits the method
    store.save(fit)     keep the fitted method (memory: nothing); processes that did not fit
                        get the saved fit back
    store.blocks(rows)  the features in training-set order, `(start, Tensor[b, dim])`

`MemoryStore` keeps Φ in memory for one process. `FolderStore` writes checksummed, resumable
shards (`influence.index`) into an index folder (`influence.index_folder`), shared by the
processes of a `torchrun` fit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from influence.data import ExampleData
from influence.distributed import barrier, rank_and_world
from influence.errors import IndexFolderError, InvalidArgumentError
from influence.fingerprint import batch_fingerprints, fingerprints
from influence.index import ShardedIndex, build_shards, collect_shards
from influence.index_folder import IndexFolder


class TrainFeatures(Protocol):
    """The training side's features (`influence.features.TrainFeatures`)."""

    dim: int

    def __call__(self, data: ExampleData) -> Tensor:
        """Tensor[len(data), dim], in memory."""

    def batch(self, inputs: Any, targets: Tensor) -> Tensor:
        """Tensor[b, dim] for one batch of training examples."""


@dataclass(frozen=True)
class SavedFit:
    """What a fit leaves besides the features: the method's state (with the curvature data
    when its queries need curvature products), λ, the diagnostics and the task's description."""

    state: dict[str, Tensor]
    damping: float | None
    diagnostics: dict[str, Any]
    task: dict[str, Any]


class Store(ABC):
    """The training features of one fit, Tensor[n, dim] (see the module docstring)."""

    n: int
    dim: int

    @abstractmethod
    def open(self, train: ExampleData | None, verify: bool = True) -> SavedFit | None:
        """A finished fit for this store's key and `train` (checked against it when given), or
        None when there is none to reuse."""

    @abstractmethod
    def build(self, train: ExampleData, features: TrainFeatures, progress: bool) -> bool:
        """Compute and keep the features of every training example in one pass over `train`;
        returns whether this process fits the method (False on the other ranks of a torchrun)."""

    @abstractmethod
    def blocks(self, rows: int = 8192) -> Iterator[tuple[int, Tensor]]:
        """Yield `(start, Tensor[b, dim])` over the training examples in order."""

    def save(self, fit: SavedFit | None) -> SavedFit | None:
        """Keep a finished fit (`fit`, from the process that fitted the method; None on the
        others); returns the saved fit to the processes that passed None."""
        return None


class MemoryStore(Store):
    """Training features held in memory, Tensor[n, dim], for one process."""

    def __init__(self, features: Tensor | None = None):
        self.features = features
        if features is not None:
            self.n, self.dim = features.shape

    def open(self, train: ExampleData | None, verify: bool = True) -> SavedFit | None:
        return None  # nothing outlives the process

    def build(self, train: ExampleData, features: TrainFeatures, progress: bool) -> bool:
        if rank_and_world()[1] > 1:
            raise InvalidArgumentError("a distributed fit (torchrun) needs `cache_dir`, a folder "
                                       "all processes share")
        self.features = features(train)
        self.n, self.dim = self.features.shape
        return True

    def blocks(self, rows: int = 8192) -> Iterator[tuple[int, Tensor]]:
        for lo in range(0, self.n, rows):
            yield lo, self.features[lo:lo + rows]


class FolderStore(Store):
    """Training features in an index folder: checksummed, memory-mapped shards, resumable.

    Args:
        path: the folder (`cache_dir`).
        key: everything the index depends on (model fingerprint, method, options, settings);
            a folder built with another key is refused, naming what differs.
        storage_dtype, shard_size: how the features are stored.
        device: where the method state is loaded.
    """

    def __init__(self, path: str | Path, key: dict, storage_dtype: str, shard_size: int,
                 device: Any):
        self.folder, self.key = IndexFolder(path), key
        self.storage_dtype, self.shard_size, self.device = storage_dtype, shard_size, device
        self.reader: ShardedIndex | None = None
        self._shards: list[dict] = []
        self._fingerprints: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.reader.n

    @property
    def dim(self) -> int:
        return self.reader.dim

    def open(self, train: ExampleData | None, verify: bool = True) -> SavedFit | None:
        """The folder's finished fit (checksums verified when `verify`), or None when it has
        none yet (an empty or interrupted folder, which `build` then resumes)."""
        manifest = self.folder.manifest()
        if manifest is None:
            return None
        self.folder.check_key(manifest, self.key)
        if not manifest["complete"]:
            return None
        if train is not None:
            self.folder.check_data(manifest, fingerprints(train))
        self.reader, state = self.folder.open(manifest, verify, self.device)
        return SavedFit(state, manifest["damping"], dict(manifest["diagnostics"]), manifest["task"])

    def build(self, train: ExampleData, features: TrainFeatures, progress: bool) -> bool:
        rank, world = rank_and_world()
        barrier()
        self.folder.begin(self.folder.manifest(), self.key)
        barrier()
        n = len(train)
        fingerprint: Callable = lambda rows, x, y: batch_fingerprints(train, rows, x, y)
        build_shards(self.folder.path, n, self.shard_size, self.storage_dtype, train.batch,
                     fingerprint, features.batch, rank=rank, world=world, progress=progress)
        barrier()
        if rank != 0:
            return False
        self._shards, self._fingerprints = collect_shards(self.folder.path, n, self.shard_size)
        self.reader = ShardedIndex(self.folder.path, {"n_train": n, "dim": features.dim,
                                                      "shards": self._shards,
                                                      "storage_dtype": self.storage_dtype})
        return True

    def save(self, fit: SavedFit | None) -> SavedFit | None:
        if fit is not None:
            fields = {"damping": fit.damping, "diagnostics": fit.diagnostics, "task": fit.task}
            self.folder.finish(self.key, self._shards, (self.n, self.dim), self.storage_dtype,
                               fit.state, self._fingerprints, fields)
        barrier()
        return None if fit is not None else self.open(None, verify=False)

    def blocks(self, rows: int = 8192) -> Iterator[tuple[int, Tensor]]:
        return self.reader.blocks(rows)


def folder_path(cache_dir: str | Path) -> Path:
    """`cache_dir` as a Path; InvalidArgumentError when it exists and is not a folder."""
    return IndexFolder(cache_dir).path


def stored_manifest(path: str | Path) -> dict:
    """The manifest of a complete index folder (for `Attributor.load`: its key and task);
    IndexFolderError when there is none or its fit was interrupted."""
    folder = IndexFolder(path)
    manifest = folder.manifest()
    if manifest is None:
        raise IndexFolderError(f"no index at {folder.path} (no manifest.json); fit() with "
                               "cache_dir first")
    folder.require_complete(manifest)
    return manifest
