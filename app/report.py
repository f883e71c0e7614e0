"""The Regression tab's data: a report folder written by `influence.report` (`report.json`).

Only reads and tabulates: every number is the report's. Sign convention (the report's):
harm = −(sum of scores over the regressions), so harm > 0 means "caused the regressions".
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from influence.errors import InvalidArgumentError


def load_report(folder: str | Path) -> dict:
    """`folder/report.json`, checked against the report schema when `influence.report` is there."""
    path = Path(folder) / "report.json"
    if not path.exists():
        raise InvalidArgumentError(f"--report {folder} has no report.json (write one with Report.save(folder))")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"--report {path} is not valid JSON ({error})") from None
    try:
        from influence.report import validate
    except ImportError:  # the report package is optional for the app
        return doc
    validate(doc)
    return doc


def summary_text(doc: dict) -> str:
    s = doc["summary"]
    accuracy = ""
    if s.get("old_accuracy") is not None and s.get("new_accuracy") is not None:
        accuracy = f"; accuracy {s['old_accuracy']:.3f} → {s['new_accuracy']:.3f}"
    return (f"{s['headline']}\n{s['n_regressions']} regressions ({s['n_flipped']} flipped right → wrong, "
            f"{s['n_loss_rise']} with the largest loss rise) over {s['n_eval']} eval examples{accuracy}; "
            f"mean loss {s['old_mean_loss']:.4f} → {s['new_mean_loss']:.4f}")


def groups_table(doc: dict) -> pd.DataFrame:
    rows = [{"column": g["column"], "value": str(g["value"]), "harm": g["harm"], "share": g["share"],
             "confidence": g["confidence"], "count": g["count"], "finding": g.get("headline") or ""}
            for g in doc["groups"]]
    return pd.DataFrame(rows, columns=["column", "value", "harm", "share", "confidence", "count", "finding"])


def regressions_table(doc: dict) -> pd.DataFrame:
    rows = [{"eval id": r["eval_index"], "kind": r["kind"], "label": str(r["label"]),
             "old prediction": str(r["old_prediction"]), "new prediction": str(r["new_prediction"]),
             "old loss": r["old_loss"], "new loss": r["new_loss"],
             "most harmful train ids": " ".join(str(h["train_index"]) for h in r["harmful"][:5])}
            for r in doc["regressions"]]
    return pd.DataFrame(rows, columns=["eval id", "kind", "label", "old prediction", "new prediction", "old loss",
                                       "new loss", "most harmful train ids"])


def suspects_table(doc: dict) -> pd.DataFrame:
    rows = [{"train id": e["train_index"], "label": str(e["label"]), "harm": e["harm"],
             "regressions harmed": e["harmful_to"], "self-influence": e["self_influence"],
             **{str(k): str(v) for k, v in (e.get("groups") or {}).items()}}
            for e in doc["suspects"]]
    return pd.DataFrame(rows)
