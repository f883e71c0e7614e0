"""An index folder on disk (`Attributor(..., cache_dir=FOLDER)`):

    manifest.json          format version, compatibility key (model fingerprint, method and
                           options, task, storage dtype...), shapes, shard list with SHA-256
                           checksums, the data digest, `complete` flag, and `manifest_sha256`:
                           the SHA-256 of the rest of the manifest, checked before any of it
                           is used
    shards/                the feature shards (`influence.index`)
    method.safetensors     what the method needs at query time (factorisation, curvature data)
    fingerprints.npy       uint64[n_train, 3]: per-example digests of inputs, labels, metadata

Every file is written atomically and the manifest last, so a folder is either complete and
checksummed or reported as incomplete; one built for another model, other settings or
other training data is refused, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor

from influence.distributed import rank_and_world
from influence.errors import IndexFolderError, InvalidArgumentError
from influence.fingerprint import digest, first_difference
from influence.index import STORAGE_DTYPES, ShardedIndex
from influence.options import jsonable
from influence.storage import (
    atomic_write,
    remove_stale_temporaries,
    sha256_file,
    write_array,
    write_json,
)

FORMAT_VERSION = 3  # 3: the manifest carries its own checksum
STATE_FILE = "method.safetensors"
FINGERPRINT_FILE = "fingerprints.npy"
REBUILD = "Use a new cache_dir, or delete this one to rebuild it."


class IndexFolder:
    """Reads, checks and writes one index folder. `key` is the dict of everything the index
    depends on (see `Attributor`); a stored index with another key is refused."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InvalidArgumentError(f"`cache_dir` {self.path} exists and is not a folder; pass a folder path")

    # ------------------------------------------------------------------ reading
    def manifest(self) -> dict | None:
        """The manifest, checked for shape (not yet for completeness); None if absent."""
        path = self.path / "manifest.json"
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IndexFolderError(f"{path} is not valid JSON ({error}); delete the folder and fit again") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("key"), dict) \
                or not isinstance(manifest.get("complete"), bool):
            raise IndexFolderError(f"{path} is not an index manifest (it needs an object with `key` and `complete`); "
                                   "delete the folder and fit again")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFolderError(f"index at {self.path} has format version {manifest.get('format_version')}, "
                                   f"this version reads {FORMAT_VERSION}; fit again into a new folder")
        if manifest.pop("manifest_sha256", None) != manifest_checksum(manifest):
            raise IndexFolderError(f"{path} was edited or corrupted (its manifest_sha256 does not match its content); "
                                   "delete the folder and fit again")
        if manifest["complete"]:
            _check_complete_manifest(manifest, path)
        return manifest

    def check_key(self, manifest: dict, key: dict) -> None:
        """Refuse an index built for another model or other settings, naming what differs."""
        key = jsonable(key)
        differ = sorted(k for k in set(key) | set(manifest["key"]) if manifest["key"].get(k) != key.get(k))
        if differ:
            details = "; ".join(f"{k}: index has {manifest['key'].get(k)!r}, now {key.get(k)!r}" for k in differ)
            raise IndexFolderError(f"index at {self.path} was built with different settings ({details}). {REBUILD}")

    def check_data(self, manifest: dict, current: np.ndarray) -> None:
        """Refuse training data whose fingerprints differ from the index's, naming the first row."""
        stored = self._fingerprints(manifest)
        difference = first_difference(stored, current)
        if difference is not None:
            raise IndexFolderError(f"the training data differs from the data the index at {self.path} was built "
                                   f"from: {difference}. {REBUILD}")

    def open(self, manifest: dict, verify: bool, device: torch.device) -> tuple[ShardedIndex, dict[str, Tensor]]:
        """The feature store and the method state of a complete index (checksums verified when `verify`)."""
        self.require_complete(manifest)
        index = ShardedIndex(self.path, manifest)
        state_path = self.path / STATE_FILE
        if verify:
            index.verify()
            _verify_file(state_path, manifest["method_state"]["sha256"])
        try:
            state = {k: v.to(device) for k, v in load_file(state_path).items()}
        except Exception as error:  # noqa: BLE001 — safetensors raises its own error types
            raise IndexFolderError(f"{state_path} cannot be read ({type(error).__name__}: {error}); delete the "
                                   "folder and fit again") from None
        state.pop("_empty", None)
        return index, state

    def require_complete(self, manifest: dict) -> None:
        if not manifest.get("complete"):
            raise IndexFolderError(f"index at {self.path} is incomplete (its fit was interrupted); run fit() "
                                   "with the same model and settings to resume it")

    def _fingerprints(self, manifest: dict) -> np.ndarray:
        path = self.path / FINGERPRINT_FILE
        _verify_file(path, manifest["fingerprints"]["sha256"])
        return np.load(path, allow_pickle=False)

    # ------------------------------------------------------------------ writing
    def begin(self, manifest: dict | None, key: dict) -> None:
        """Create the folder (rank 0), clear temporaries of a killed writer, mark it incomplete."""
        if rank_and_world()[0] != 0:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        if manifest is None:
            self._write_manifest({"format_version": FORMAT_VERSION, "key": jsonable(key), "complete": False})

    def finish(self, key: dict, shards: list[dict], shape: tuple[int, int], storage_dtype: str,
               state: dict[str, Tensor], fingerprints: np.ndarray, fields: dict[str, Any]) -> dict:
        """Write the method state and fingerprints, then the complete manifest (last); returns it."""
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()} or {"_empty": torch.zeros(0)}
        atomic_write(self.path / STATE_FILE, lambda f: f.write(save(state)))
        write_array(self.path / FINGERPRINT_FILE, fingerprints)
        manifest = {
            "format_version": FORMAT_VERSION, "key": jsonable(key), "complete": True, "n_train": shape[0],
            "dim": shape[1], "storage_dtype": storage_dtype, "shards": shards,
            "method_state": {"file": STATE_FILE, "sha256": sha256_file(self.path / STATE_FILE)},
            "fingerprints": {"file": FINGERPRINT_FILE, "sha256": sha256_file(self.path / FINGERPRINT_FILE),
                             "data_sha256": digest(fingerprints)},
            **jsonable(fields),
        }
        self._write_manifest(manifest)
        return manifest

    def _write_manifest(self, manifest: dict) -> None:
        write_json(self.path / "manifest.json", {**manifest, "manifest_sha256": manifest_checksum(manifest)})


def manifest_checksum(manifest: dict) -> str:
    """SHA-256 of a manifest's content (without its own `manifest_sha256`), in canonical JSON.
    It detects corruption and hand edits; it is no signature (anyone can recompute it), which is
    why a manifest can name only an allow-listed task class (`influence.task.task_from_description`)."""
    text = json.dumps({k: v for k, v in manifest.items() if k != "manifest_sha256"}, sort_keys=True,
                      separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _verify_file(path: Path, sha256: str) -> None:
    if not path.exists() or sha256_file(path) != sha256:
        raise IndexFolderError(f"{path} is missing or corrupted (checksum mismatch); delete the folder and fit again")


def _check_complete_manifest(manifest: dict, path: Path) -> None:
    fields = {"n_train": int, "dim": int, "storage_dtype": str, "shards": list, "method_state": dict,
              "fingerprints": dict, "diagnostics": dict, "task": dict}
    bad = [k for k, kind in fields.items() if not isinstance(manifest.get(k), kind)]
    bad += [] if "damping" in manifest else ["damping"]
    if bad or manifest["storage_dtype"] not in STORAGE_DTYPES or manifest["method_state"].get("file") != STATE_FILE \
            or manifest["fingerprints"].get("file") != FINGERPRINT_FILE:
        raise IndexFolderError(f"{path} is damaged: field(s) {bad or ['storage_dtype/method_state/fingerprints']} "
                               "missing or invalid; delete the folder and fit again")
