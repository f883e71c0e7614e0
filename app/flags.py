"""Reviewer verdicts on training examples, kept in a JSON file beside the index (or report).

The file never alters the training data or the index: it records, per training example, a
verdict ("mislabeled", "remove" or "keep"), an optional corrected label, a note, the example's
group (`source`), its current label and when it was given. Every save is atomic
(`influence.storage.write_json`: temp file, fsync, rename), so a crash leaves the previous
complete file, and verdicts survive a restart. `export` writes the CSV / JSON Lines files that
`influence report --flags` and `regression_report(flags=...)` read (`influence.report.flags`).

    {"format_version": 2, "n_train": 1347,
     "flags": [{"train_id": 12, "verdict": "mislabeled", "corrected_label": "7", "note": "",
                "source": "batch-7", "label": "1", "time": "..."}]}
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from influence.errors import InvalidArgumentError
from influence.report.flags import VERDICTS, Flag, write_flags
from influence.storage import write_json

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: verdicts without corrected labels


class FlagStore:
    """Verdicts keyed by training index, loaded from and saved to `path` (JSON)."""

    def __init__(self, path: str | Path, n_train: int):
        self.path = Path(path)
        self.n_train = n_train
        self._lock = threading.Lock()
        self._flags: dict[int, dict] = {}
        if self.path.exists():
            self._flags = self._read()

    def _read(self) -> dict[int, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidArgumentError(f"flags file {self.path} is not valid JSON ({error}); fix or move it "
                                       "(it is never overwritten while unreadable)") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version not in READABLE_VERSIONS:
            raise InvalidArgumentError(f"flags file {self.path} has format version {version}, expected "
                                       f"{FORMAT_VERSION}")
        try:
            flags = {int(f["train_id"]): dict(f) for f in data.get("flags", [])}
        except (TypeError, KeyError, ValueError):
            raise InvalidArgumentError(f"flags file {self.path}: every flag needs an integer train_id") from None
        for f in flags.values():
            f.setdefault("corrected_label", "")
            f.setdefault("source", "")
        return flags

    def get(self, train_id: int) -> str:
        """The verdict of one training example ("mislabeled → 7" with a correction), or ""."""
        f = self._flags.get(int(train_id))
        if f is None:
            return ""
        return f"{f['verdict']} → {f['corrected_label']}" if f.get("corrected_label") else f["verdict"]

    def all(self) -> list[dict]:
        """Every flag, ordered by training index."""
        with self._lock:
            return [dict(self._flags[i]) for i in sorted(self._flags)]

    def set_many(self, train_ids: list[int], verdict: str, corrected_label: str = "", note: str = "",
                 labels: dict[int, str] | None = None, sources: dict[int, str] | None = None) -> None:
        """Record `verdict` ("mislabeled", "remove", "keep", or "clear" to remove the flag) for every
        id, with an optional corrected label, in one atomic save."""
        for i in train_ids:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n_train:
                raise InvalidArgumentError(f"`train_id` must be an integer in [0, {self.n_train - 1}], got {i!r}")
        if verdict not in VERDICTS + ("clear",):
            raise InvalidArgumentError(f"`verdict` must be one of {VERDICTS + ('clear',)}, got {verdict!r}")
        if corrected_label and verdict != "mislabeled":
            raise InvalidArgumentError(f"a corrected label goes with the verdict 'mislabeled', not {verdict!r}")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            for i in train_ids:
                if verdict == "clear":
                    self._flags.pop(i, None)
                    continue
                self._flags[i] = {"train_id": i, "verdict": verdict, "corrected_label": str(corrected_label or ""),
                                  "note": str(note or ""), "source": str((sources or {}).get(i, "")),
                                  "label": str((labels or {}).get(i, "")), "time": now}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"format_version": FORMAT_VERSION, "n_train": self.n_train,
                                   "flags": [self._flags[i] for i in sorted(self._flags)]})

    def set(self, train_id: int, verdict: str, label: str = "", note: str = "", corrected_label: str = "",
            source: str = "") -> None:
        """One verdict (see `set_many`); `label` is the example's current label, for the reader."""
        self.set_many([train_id], verdict, corrected_label, note, {train_id: label}, {train_id: source})

    def export(self, path: str | Path) -> Path:
        """Write the flags as CSV or JSON Lines (by the suffix), the format `--flags` reads."""
        return write_flags(path, [Flag(f["train_id"], f["verdict"], f.get("corrected_label", ""), f.get("note", ""),
                                       f.get("source", "")) for f in self.all()])
