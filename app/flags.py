"""Reviewer verdicts on training examples: a record with history, kept in a JSON file beside
the index (or in the report folder).

The file never alters the training data or the index. Per training example it holds the
verdict ("mislabeled", "remove" or "keep"), an optional corrected label, a note, the example's
group (`source`), its current label, who gave it, when, and how (`by`: "review" for a verdict
saved on one example shown on screen, "bulk" for the k most harmful of a trace or a whole
group). Every action (a save, a bulk flag, an undo) is appended to `history` with the previous
flag of each row it touched, so the last action can be undone and nothing is lost without a
trace. Bulk actions keep hand-made ("review") verdicts unless told to replace them, and say
how many they kept.

Every save is atomic (`influence.storage.write_json`: temp file, fsync, rename), so a crash
leaves the previous complete file, and verdicts survive a restart. `export` writes the CSV /
JSON Lines files that `influence report --flags` reads (`influence.report.flags`).

    {"format_version": 3, "n_train": 1347,
     "flags": [{"train_id": 12, "verdict": "mislabeled", "corrected_label": "7", "note": "",
                "source": "batch-7", "label": "1", "who": "ana", "time": "...", "by": "review"}],
     "history": [{"action": "save", "who": "ana", "time": "...", "verdict": "mislabeled",
                  "ids": [12], "previous": {"12": null}}]}
"""

from __future__ import annotations

import getpass
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from influence.errors import InvalidArgumentError
from influence.report.flags import VERDICTS, Flag, write_flags
from influence.storage import write_json

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # 1: no corrected labels; 2: no history, no `by`
HAND_MADE = "review"


@dataclass(frozen=True)
class Outcome:
    """What one write did: rows changed, hand-made verdicts kept (not overwritten)."""

    changed: int
    kept: int


def reviewer() -> str:
    """The name verdicts are recorded under (the operating-system user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class FlagStore:
    """Verdicts keyed by training index, with history, loaded from and saved to `path` (JSON)."""

    def __init__(self, path: str | Path, n_train: int, who: str | None = None):
        self.path = Path(path)
        self.n_train = n_train
        self.who = who or reviewer()
        self._lock = threading.Lock()
        self._flags: dict[int, dict] = {}
        self._history: list[dict] = []
        if self.path.exists():
            self._flags, self._history = self._read()

    def _read(self) -> tuple[dict[int, dict], list[dict]]:
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidArgumentError(
                f"flags file {self.path} is not valid JSON ({error}); fix or move it (it is never "
                "overwritten while unreadable)") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version not in READABLE_VERSIONS:
            raise InvalidArgumentError(f"flags file {self.path} has format version {version}, "
                                       f"expected {FORMAT_VERSION}")
        try:
            flags = {int(f["train_id"]): dict(f) for f in data.get("flags", [])}
        except (TypeError, KeyError, ValueError):
            raise InvalidArgumentError(f"flags file {self.path}: every flag needs an integer "
                                       "train_id") from None
        for i, f in flags.items():
            if not 0 <= i < self.n_train:
                raise InvalidArgumentError(f"flags file {self.path}: train_id {i} is outside the "
                                           f"training data [0, {self.n_train - 1}]; it belongs to "
                                           "other data")
            f.setdefault("corrected_label", "")
            f.setdefault("source", "")
            f.setdefault("by", HAND_MADE)  # older files: every verdict was saved by hand
        history = data.get("history", [])
        return flags, history if isinstance(history, list) else []

    def get(self, train_id: int) -> str:
        """The verdict of one training example ("mislabeled → 7" with a correction), or ""."""
        f = self._flags.get(int(train_id))
        if f is None:
            return ""
        fix = f.get("corrected_label")
        return f"{f['verdict']} → {fix}" if fix else f["verdict"]

    def flag_of(self, train_id: int) -> dict | None:
        """The full record of one training example's flag (a copy), or None."""
        f = self._flags.get(int(train_id))
        return None if f is None else dict(f)

    def all(self) -> list[dict]:
        """Every flag, ordered by training index."""
        with self._lock:
            return [dict(self._flags[i]) for i in sorted(self._flags)]

    def history(self) -> list[dict]:
        """Every action, oldest first (a copy)."""
        with self._lock:
            return [dict(h) for h in self._history]

    def set_many(self, train_ids: list[int], verdict: str, corrected_label: str = "",
                 note: str = "", labels: dict[int, str] | None = None,
                 sources: dict[int, str] | None = None, by: str = HAND_MADE,
                 replace_hand_made: bool = True) -> Outcome:
        """Record `verdict` ("mislabeled", "remove", "keep", or "clear" to remove the flag) for
        every id, with an optional corrected label, as one action in one atomic save.

        `by` says how the verdict was given ("review": one example on screen; "bulk"). With
        `replace_hand_made=False`, rows holding a hand-made verdict are left as they are and
        counted in `Outcome.kept`."""
        self._check(train_ids, verdict, corrected_label)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            kept = [i for i in train_ids
                    if not replace_hand_made and self._flags.get(i, {}).get("by") == HAND_MADE]
            ids = [i for i in dict.fromkeys(train_ids) if i not in set(kept)]
            previous = {str(i): self._flags.get(i) for i in ids}
            for i in ids:
                if verdict == "clear":
                    self._flags.pop(i, None)
                    continue
                self._flags[i] = {"train_id": i, "verdict": verdict,
                                  "corrected_label": str(corrected_label or ""),
                                  "note": str(note or ""),
                                  "source": str((sources or {}).get(i, "")),
                                  "label": str((labels or {}).get(i, "")), "who": self.who,
                                  "time": now, "by": by}
            if ids:
                self._history.append({"action": "save" if by == HAND_MADE else "bulk",
                                      "who": self.who, "time": now, "verdict": verdict, "ids": ids,
                                      "previous": previous})
                self._save()
        return Outcome(len(ids), len(set(kept)))

    def _check(self, train_ids: list[int], verdict: str, corrected_label: str) -> None:
        for i in train_ids:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n_train:
                raise InvalidArgumentError(f"`train_id` must be an integer in "
                                           f"[0, {self.n_train - 1}], got {i!r}")
        if verdict not in VERDICTS + ("clear",):
            raise InvalidArgumentError(f"`verdict` must be one of {VERDICTS + ('clear',)}, "
                                       f"got {verdict!r}")
        if corrected_label and verdict != "mislabeled":
            raise InvalidArgumentError(f"a corrected label goes with the verdict 'mislabeled', "
                                       f"not {verdict!r}")

    def undo(self) -> dict | None:
        """Revert the last save or bulk action (each row back to its previous flag, or none);
        returns that action, or None when there is nothing to undo. The undo is recorded too."""
        with self._lock:
            done = [h for h in self._history
                    if h["action"] in ("save", "bulk") and not h.get("undone")]
            if not done:
                return None
            last = done[-1]
            for key, flag in last["previous"].items():
                if flag is None:
                    self._flags.pop(int(key), None)
                else:
                    self._flags[int(key)] = dict(flag)
            last["undone"] = True
            self._history.append({"action": "undo", "who": self.who,
                                  "time": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "verdict": last["verdict"], "ids": last["ids"]})
            self._save()
            return dict(last)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"format_version": FORMAT_VERSION, "n_train": self.n_train,
                               "flags": [self._flags[i] for i in sorted(self._flags)],
                               "history": self._history})

    def set(self, train_id: int, verdict: str, label: str = "", note: str = "",
            corrected_label: str = "", source: str = "") -> Outcome:
        """One hand-made verdict (see `set_many`); `label` is the example's current label."""
        return self.set_many([train_id], verdict, corrected_label, note, {train_id: label},
                             {train_id: source})

    def export(self, path: str | Path) -> Path:
        """Write the flags as CSV or JSON Lines (by the suffix), the format `--flags` reads."""
        return write_flags(path, [Flag(f["train_id"], f["verdict"], f.get("corrected_label", ""),
                                       f.get("note", ""), f.get("source", "")) for f in self.all()])
