"""Fingerprints of what a report was computed on: model weights and eval/training data.

`report.json` records them (`fingerprints`), so a reader (the app) can refuse to show a
report's numbers next to another model or another eval set, naming what differs.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from influence.data import ExampleData


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: names, dtypes, shapes and values."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(data: ExampleData, batch_size: int = 4096) -> str:
    """SHA-256 of every example's input and label as the library reads them (values and dtypes)."""
    h = hashlib.sha256(f"n={len(data)};".encode())
    for _, inputs, targets in data.batches(batch_size):
        for t in (inputs, targets):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}:{tuple(t.shape[1:])};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def differences(recorded: dict, current: dict) -> list[str]:
    """Names of the fingerprints present in both that differ (e.g. ["eval", "new_model"])."""
    return sorted(k for k in recorded if k in current and recorded[k] != current[k])
