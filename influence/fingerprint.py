"""Content fingerprints of training data, so an index is never served for other data.

Each training example gets three 64-bit digests — of its inputs, of its label and of its
metadata (every other column of a `datasets.Dataset`, e.g. `source`) — computed while the
index is built and stored beside it. Reopening the index with training data (`fit()` on a
finished folder, `Attributor.load(..., train=...)`) recomputes them in one streamed read
(no gradients) and refuses data that differs, naming the first differing row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from influence.batching import leaves
from influence.data import ExampleData

KINDS = ("inputs", "labels", "metadata")


def _row_digests(tensors: list[Tensor], n: int) -> np.ndarray:
    """uint64[n]: a digest of row i of every tensor (shape and dtype included)."""
    rows = [t.detach().cpu().contiguous().reshape(n, -1) for t in tensors]
    header = str([(tuple(t.shape[1:]), str(t.dtype)) for t in tensors]).encode()
    out = np.empty(n, dtype=np.uint64)
    views = [r.view(torch.uint8).numpy() if r.numel() else np.zeros((n, 0), np.uint8) for r in rows]
    for i in range(n):
        h = hashlib.blake2b(header, digest_size=8)
        for v in views:
            h.update(v[i].tobytes())
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def _metadata_digests(values: dict[str, list], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.uint64)
    if values:
        columns = sorted(values)
        for i in range(n):
            text = repr([(c, values[c][i]) for c in columns]).encode()
            out[i] = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
    return out


def batch_fingerprints(data: ExampleData, rows: Sequence[int], inputs, targets: Tensor) -> np.ndarray:
    """uint64[len(rows), 3] (inputs, labels, metadata) for a batch already read from `data`."""
    n = len(rows)
    return np.stack([_row_digests(leaves(inputs), n), _row_digests([targets], n),
                     _metadata_digests(data.metadata(rows), n)], axis=1)


def fingerprints(data: ExampleData, batch_size: int = 1024) -> np.ndarray:
    """uint64[n, 3] for every example of `data`, streamed in batches."""
    parts = [batch_fingerprints(data, rows, x, y) for rows, x, y in data.batches(batch_size)]
    return np.concatenate(parts)


def digest(array: np.ndarray) -> str:
    """SHA-256 of a fingerprint array (one string for a whole shard or data set)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def first_difference(stored: np.ndarray, current: np.ndarray) -> str | None:
    """None when equal; else which parts of which rows differ, e.g. "the labels of row 17
    (and of 9 more rows)"."""
    if stored.shape != current.shape:
        return f"the number of examples ({len(current)} now, {len(stored)} when the index was built)"
    differ = stored != current
    rows = np.flatnonzero(differ.any(axis=1))
    if not len(rows):
        return None
    first = int(rows[0])
    parts = " and ".join(k for k, d in zip(KINDS, differ[first]) if d)
    more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
    return f"the {parts} of row {first}{more}"
