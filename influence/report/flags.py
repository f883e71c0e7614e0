"""Reviewer flags on training examples: the format the app exports and the report reads.

A flag is one verdict on one training example:

    train_id         row of the training data (0-based, the index's order)
    verdict          "mislabeled" (fix its label: `corrected_label`; without one, remove it),
                     "remove" (drop the example) or "keep" (reviewed, fine)
    corrected_label  the right class (a class name or a class index), or empty
    note             free text
    source           the example's group (e.g. its data source), for the reader

Files: CSV with exactly these columns, JSON Lines (one object per line), or the app's
verdicts file (`{"format_version": 2, "flags": [...]}`). `edits` turns flags into what a
retraining needs: the rows to remove and the labels to correct.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from influence.errors import InvalidArgumentError
from influence.storage import atomic_write

VERDICTS = ("mislabeled", "remove", "keep")
FIELDS = ("train_id", "verdict", "corrected_label", "note", "source")


@dataclass(frozen=True)
class Flag:
    """One reviewer verdict (see the module docstring)."""

    train_id: int
    verdict: str
    corrected_label: str = ""
    note: str = ""
    source: str = ""

    @classmethod
    def parse(cls, record: dict, where: str) -> Flag:
        """A checked `Flag` from a mapping read from a file (`where` names it in errors)."""
        try:
            train_id = int(str(record.get("train_id", "")).strip())
        except ValueError:
            raise InvalidArgumentError(f"{where}: `train_id` must be an integer, got "
                                       f"{record.get('train_id')!r}") from None
        verdict = str(record.get("verdict") or "").strip()
        if verdict not in VERDICTS:
            raise InvalidArgumentError(f"{where}: `verdict` must be one of {VERDICTS}, got {verdict!r}")
        if train_id < 0:
            raise InvalidArgumentError(f"{where}: `train_id` must be ≥ 0, got {train_id}")
        label = record.get("corrected_label")
        return cls(train_id, verdict, "" if label is None else str(label).strip(), str(record.get("note") or ""),
                   str(record.get("source") or ""))


def read_flags(path: str | Path) -> list[Flag]:
    """Flags from a `.csv`, `.jsonl` or app verdicts `.json` file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"`flags`: no such file {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"`flags`: cannot read {str(path)!r} ({error})") from None
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [f for f in ("train_id", "verdict") if f not in (reader.fieldnames or [])]
        if missing:
            raise InvalidArgumentError(f"`flags`: {path} lacks the column(s) {missing}; expected {list(FIELDS)}")
        return [Flag.parse(row, f"{path}, line {n}") for n, row in enumerate(reader, start=2)]
    if path.suffix == ".jsonl":
        return [Flag.parse(_json(line, f"{path}, line {n}"), f"{path}, line {n}")
                for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if path.suffix == ".json":
        doc = _json(text, str(path))
        records = doc.get("flags") if isinstance(doc, dict) else None
        if not isinstance(records, list):
            raise InvalidArgumentError(f"`flags`: {path} has no list under \"flags\" (an app verdicts file)")
        return [Flag.parse(r, f"{path}, flag {n}") for n, r in enumerate(records, start=1)]
    raise InvalidArgumentError(f"`flags`: {path} must be a .csv, .jsonl or .json file")


def _json(text: str, where: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(f"`flags`: {where} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"`flags`: {where} must hold a JSON object")
    return value


def flags_csv(flags: Iterable[Flag]) -> str:
    """The CSV text of `flags` (header `FIELDS`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(f) for f in flags)
    return out.getvalue()


def flags_jsonl(flags: Iterable[Flag]) -> str:
    """The JSON Lines text of `flags` (one object per flag)."""
    return "".join(json.dumps(asdict(f), ensure_ascii=False) + "\n" for f in flags)


def write_flags(path: str | Path, flags: Iterable[Flag]) -> Path:
    """Write `flags` as CSV or JSON Lines (by the suffix), atomically."""
    path = Path(path)
    writers = {".csv": flags_csv, ".jsonl": flags_jsonl}
    if path.suffix not in writers:
        raise InvalidArgumentError(f"`path` must end in .csv or .jsonl, got {path.name!r}")
    text = writers[path.suffix](list(flags))
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def write_verdicts(path: str | Path, flags: Sequence[Flag], n_train: int, origin: str) -> Path:
    """Write `flags` as the app's verdicts file (`{"format_version": 3, "flags": [...]}`), so the
    app opened on a report folder shows the verdicts the report verified; `origin` (the file they
    came from) is recorded in its history. Atomic."""
    latest = {f.train_id: f for f in flags}
    records = [{**asdict(latest[i]), "label": "", "who": "", "time": "", "by": "review"}
               for i in sorted(latest)]
    history = [{"action": "imported", "from": str(origin), "ids": sorted(latest), "who": "",
                "time": ""}]
    text = json.dumps({"format_version": 3, "n_train": n_train, "flags": records,
                       "history": history}, indent=2)
    atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))
    return Path(path)


def class_index(label: str, class_names: Sequence[str] | None, where: str) -> int:
    """The class index of a corrected label given as a class name or an index."""
    names = [str(c) for c in class_names] if class_names else None
    if names is not None and label in names:
        return names.index(label)
    try:
        index = int(label)
    except ValueError:
        known = f"one of {names}" if names is not None else "a class index"
        raise InvalidArgumentError(f"{where}: corrected label {label!r} is not {known}") from None
    if names is not None and not 0 <= index < len(names):
        raise InvalidArgumentError(f"{where}: corrected label {index} is outside [0, {len(names) - 1}]")
    return index


def edits(flags: Sequence[Flag], n_train: int, class_names: Sequence[str] | None = None
          ) -> tuple[list[int], dict[int, int]]:
    """What retraining with the flags applied changes: `(removed rows, {row: corrected class})`.

    "mislabeled" with a corrected label relabels; "mislabeled" without one and "remove" remove;
    "keep" changes nothing. A later flag on the same row replaces an earlier one.
    """
    latest = {f.train_id: f for f in flags}
    removed, relabel = [], {}
    for i, f in sorted(latest.items()):
        if not 0 <= i < n_train:
            raise InvalidArgumentError(f"`flags`: train_id {i} is outside the training data [0, {n_train - 1}]")
        if f.verdict == "mislabeled" and f.corrected_label:
            relabel[i] = class_index(f.corrected_label, class_names, f"`flags` (train_id {i})")
        elif f.verdict in ("mislabeled", "remove"):
            removed.append(i)
    return removed, relabel
