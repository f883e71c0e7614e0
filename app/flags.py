"""Reviewer verdicts on training examples, kept in a JSON file beside the index.

The file never alters the training data or the index: it only records, per training
example, a verdict ("mislabeled" or "keep"), an optional note and when it was given.
Every save is atomic (`influence.storage.write_json`: temp file, fsync, rename), so a
crash leaves the previous complete file, and verdicts survive a restart.

    {"format_version": 1, "n_train": 1347,
     "flags": [{"train_id": 12, "verdict": "mislabeled", "label": "7", "note": "", "time": "..."}]}
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

from influence.errors import InvalidArgumentError
from influence.storage import write_json

VERDICTS = ("mislabeled", "keep")
FORMAT_VERSION = 1


class FlagStore:
    """Verdicts keyed by training index, loaded from and saved to `path` (JSON)."""

    def __init__(self, path: str | Path, n_train: int):
        self.path = Path(path)
        self.n_train = n_train
        self._lock = threading.Lock()
        self._flags: dict[int, dict] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InvalidArgumentError(f"flags file {self.path} is not valid JSON ({error}); fix or move it "
                                           "(it is never overwritten while unreadable)") from None
            if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
                raise InvalidArgumentError(f"flags file {self.path} has format version "
                                           f"{data.get('format_version') if isinstance(data, dict) else None}, "
                                           f"expected {FORMAT_VERSION}")
            try:
                self._flags = {int(f["train_id"]): dict(f) for f in data.get("flags", [])}
            except (TypeError, KeyError, ValueError):
                raise InvalidArgumentError(f"flags file {self.path}: every flag needs an integer train_id") from None

    def get(self, train_id: int) -> str:
        """The verdict of one training example, or "" when it has none."""
        return self._flags.get(int(train_id), {}).get("verdict", "")

    def all(self) -> list[dict]:
        """Every flag, ordered by training index."""
        with self._lock:
            return [dict(self._flags[i]) for i in sorted(self._flags)]

    def set(self, train_id: int, verdict: str, label: str = "", note: str = "") -> None:
        """Record `verdict` ("mislabeled", "keep", or "clear" to remove) and save atomically."""
        if not isinstance(train_id, int) or isinstance(train_id, bool) or not 0 <= train_id < self.n_train:
            raise InvalidArgumentError(f"`train_id` must be an integer in [0, {self.n_train - 1}], got {train_id!r}")
        if verdict not in VERDICTS + ("clear",):
            raise InvalidArgumentError(f"`verdict` must be one of {VERDICTS + ('clear',)}, got {verdict!r}")
        with self._lock:
            if verdict == "clear":
                self._flags.pop(train_id, None)
            else:
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                self._flags[train_id] = {"train_id": train_id, "verdict": verdict, "label": str(label),
                                         "note": str(note), "time": now}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"format_version": FORMAT_VERSION, "n_train": self.n_train,
                                   "flags": [self._flags[i] for i in sorted(self._flags)]})
