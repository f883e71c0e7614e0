"""The shards of an index folder: per-example gradient features in checksummed,
memory-mapped files (the folder around them: `influence.index_folder`; the store interface
over memory and folders: `influence.store`).

    shards/features-00000.npy      Tensor[rows, dim], rows start..stop of the training set
    shards/features-00000.fingerprints  uint64[rows, 3] in NumPy's .npy format: the data
                                   fingerprints of those rows, taken in the same read as
                                   their gradients (checked against the sidecar's data digest)
    shards/features-00000.json     its sidecar: rows, checksum of the file and of the data

Every file is written atomically (temp file, fsync, rename). A shard counts only when its
sidecar exists and both checksums match, so a fit killed at any point resumes from the
last complete shard and a reader never uses a half-written index.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from influence.errors import IndexFolderError, InfluenceError, InvalidArgumentError
from influence.fingerprint import digest
from influence.progress import phase
from influence.storage import (
    remove_stale_temporaries,
    sha256_file,
    write_array,
    write_json,
)

STORAGE_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                  "bfloat16": torch.bfloat16}
# An index of per-example features larger than this (n × dim × itemsize) is not built by
# default: the methods that would need one project or truncate instead (a p-dimensional
# memory-mapped index stays an explicit opt-in).
INDEX_BUDGET_BYTES = 2 << 30
SHARD_NAME = re.compile(r"features-\d{5,}\.npy")


class ShardedIndex:
    """Training features in memory-mapped shards on disk (read-only)."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = Path(folder)
        check_shard_list(manifest, self.folder)
        self.manifest = manifest
        self.n, self.dim = manifest["n_train"], manifest["dim"]
        self.dtype = STORAGE_DTYPES[manifest["storage_dtype"]]
        self._open: dict[str, Tensor] = {}

    def shard(self, entry: dict) -> Tensor:
        """The shard as a read-only memory-mapped tensor (mapped once, then reused)."""
        if entry["file"] not in self._open:
            self._open[entry["file"]] = self._map(entry)
        return self._open[entry["file"]]

    def _map(self, entry: dict) -> Tensor:
        path = self.folder / "shards" / entry["file"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # read-only memmap: we never write to it
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                t = torch.from_numpy(array)
        except (OSError, ValueError, TypeError) as error:  # missing, truncated, not a .npy
            raise IndexFolderError(f"index shard {path} cannot be read ({type(error).__name__}: {error}); delete "
                                   "the folder and fit again") from None
        expected = (entry["stop"] - entry["start"], self.dim)
        stored = torch.uint16 if self.dtype == torch.bfloat16 else self.dtype
        if tuple(t.shape) != expected or t.dtype != stored:
            raise IndexFolderError(f"index shard {path} holds {tuple(t.shape)} {t.dtype}, the manifest says "
                                   f"{expected} {stored}; delete the folder and fit again")
        return t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t

    def blocks(self, rows: int = 8192) -> Iterator[tuple[int, Tensor]]:
        for entry in self.manifest["shards"]:
            t = self.shard(entry)
            for lo in range(0, t.shape[0], rows):
                yield entry["start"] + lo, t[lo:lo + rows]

    def verify(self) -> None:
        """Check every shard against its manifest checksum; name the first bad file."""
        for entry in self.manifest["shards"]:
            path = self.folder / "shards" / entry["file"]
            if not path.exists():
                raise IndexFolderError(f"index shard {path} is missing")
            if sha256_file(path) != entry["sha256"]:
                raise IndexFolderError(f"index shard {path} is corrupted (checksum mismatch: truncated or modified); "
                                  "delete the folder and fit again")


def to_storage(features: Tensor, storage_dtype: str, where: str) -> np.ndarray:
    """Cast features for storage; float16 overflow is an error, not a silent inf."""
    target = STORAGE_DTYPES[storage_dtype]
    if target == torch.float16 and features.abs().max() > torch.finfo(torch.float16).max:
        raise InfluenceError(f"{where}: gradient values up to {float(features.abs().max()):.3g} overflow float16 "
                             "(max 65504); use storage_dtype='bfloat16' or 'float32'")
    cast = features.detach().to("cpu", target).contiguous()
    return (cast.view(torch.uint16) if target == torch.bfloat16 else cast).numpy()


def check_shard_list(manifest: dict, folder: Path) -> None:
    """Shard entries must name files `features-NNNNN.npy` inside `shards/` (a manifest from
    elsewhere cannot make us open another path) and cover rows 0..n_train-1 in order."""
    row = 0
    for entry in manifest["shards"]:
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
            raise IndexFolderError(f"{Path(folder) / 'manifest.json'} lists a shard {name!r} that is not a file name "
                                   "features-NNNNN.npy; refusing to open it")
        if entry.get("start") != row or not isinstance(entry.get("stop"), int) or entry["stop"] <= row:
            raise IndexFolderError(f"{Path(folder) / 'manifest.json'}: shard {name} covers rows "
                                   f"{entry.get('start')}..{entry.get('stop')}, expected to start at {row}")
        row = entry["stop"]
    if row != manifest["n_train"]:
        raise IndexFolderError(f"{Path(folder) / 'manifest.json'}: the shards cover {row} rows, "
                               f"not n_train={manifest['n_train']}")


def build_shards(folder: Path, n: int, shard_size: int, storage_dtype: str,
                 read: Callable[[range], tuple[Any, Tensor]],
                 fingerprint: Callable[[range, Any, Tensor], np.ndarray],
                 compute: Callable[[Any, Tensor], Tensor], rank: int = 0, world: int = 1,
                 progress: bool = True) -> None:
    """Write (or resume) the shards owned by this rank: shard s belongs to rank s % world.
    Each shard's rows are read once: their fingerprints and their features come from that read.

    Args:
        read: rows -> (inputs, targets) of those training examples.
        fingerprint: (rows, inputs, targets) -> uint64[len(rows), 3], the data's fingerprints
            (`influence.fingerprint`; a shard built from other data is refused on resume).
        compute: (inputs, targets) -> features Tensor[len(rows), dim].
    """
    shard_dir = Path(folder) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(shard_dir)
    starts = list(range(0, n, shard_size))[rank::world]
    with phase(f"indexing (rank {rank})" if world > 1 else "indexing", sum(min(s + shard_size, n) - s for s in starts),
               enabled=progress) as bar:
        for start in starts:
            rows = range(start, min(start + shard_size, n))
            name = f"features-{start // shard_size:05d}"
            inputs, targets = read(rows)
            prints = fingerprint(rows, inputs, targets)
            data_sha256, sidecar = digest(prints), shard_dir / f"{name}.json"
            if sidecar.exists() and _shard_is_valid(shard_dir, _read_sidecar(sidecar), data_sha256):
                if _read_fingerprints(shard_dir, start // shard_size, data_sha256) is None:
                    write_array(_fingerprint_path(shard_dir, start // shard_size), prints)
                bar.update(len(rows))
                continue
            array = to_storage(compute(inputs, targets), storage_dtype, f"shard {name}")
            write_array(shard_dir / f"{name}.npy", array)
            write_array(_fingerprint_path(shard_dir, start // shard_size), prints)
            write_json(sidecar, {"file": f"{name}.npy", "start": rows.start, "stop": rows.stop,
                                 "sha256": sha256_file(shard_dir / f"{name}.npy"), "data_sha256": data_sha256})
            bar.update(len(rows))


def _read_sidecar(path: Path) -> dict | None:
    """A shard's sidecar, or None when it is damaged (the shard is then recomputed)."""
    try:
        entry = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    keys = {"file", "start", "stop", "sha256", "data_sha256"}
    ok = isinstance(entry, dict) and keys <= set(entry) and entry["file"] == path.with_suffix(".npy").name
    return entry if ok else None


def _shard_is_valid(shard_dir: Path, entry: dict | None, data_sha256: str) -> bool:
    if entry is None:
        return False
    path = shard_dir / entry["file"]
    if entry["data_sha256"] != data_sha256:
        raise IndexFolderError(f"the training data of rows {entry['start']}..{entry['stop'] - 1} differs from the data "
                          f"that {path} was built from; use a new cache_dir for new data")
    return path.exists() and sha256_file(path) == entry["sha256"]


def _fingerprint_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f"features-{number:05d}.fingerprints"


def _read_fingerprints(shard_dir: Path, number: int, data_sha256: str) -> np.ndarray | None:
    """A shard's stored fingerprints when they match its sidecar's data digest, else None."""
    path = _fingerprint_path(shard_dir, number)
    try:
        prints = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return prints if digest(prints) == data_sha256 else None


def collect_shards(folder: Path, n: int, shard_size: int) -> tuple[list[dict], np.ndarray]:
    """The sidecars of all shards, in order, and the training data's fingerprints,
    uint64[n, 3], gathered from the shards (no read of the data); raises if one is missing."""
    entries, prints, shard_dir = [], [], Path(folder) / "shards"
    for start in range(0, n, shard_size):
        sidecar = shard_dir / f"features-{start // shard_size:05d}.json"
        entry = _read_sidecar(sidecar) if sidecar.exists() else None
        number = start // shard_size
        part = entry and _read_fingerprints(shard_dir, number, entry["data_sha256"])
        if part is None:
            raise IndexFolderError(f"index shard {sidecar.with_suffix('.npy')} was not written; run fit() again "
                                   "to resume")
        entries.append(entry)
        prints.append(part)
    return entries, np.concatenate(prints)


def validate_storage_dtype(name: str) -> None:
    if name not in STORAGE_DTYPES:
        raise InvalidArgumentError(f"`storage_dtype` must be one of {list(STORAGE_DTYPES)}, got {name!r}")
