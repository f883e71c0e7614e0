"""The Regression tab's data: the report.json of the report folder the app was opened on.

Only reads and tabulates: every number is the report's (`influence.report`), shown with the
report's readable formatting. Harm > 0 caused the regressions (units: the eval loss).
"""

from __future__ import annotations

import pandas as pd

from influence_app.tabs.common import plain_finding
from influence.report.render_md import regressions_sentence
from influence.report.readable import SHARE_DIGITS, class_name, percent, sig, verification_sentence


def summary_text(doc: dict) -> str:
    """The headline and the counts, as plain text (finding code spans as quoted names)."""
    s = doc["summary"]
    accuracy = ""
    if s.get("old_accuracy") is not None and s.get("new_accuracy") is not None:
        accuracy = f"; accuracy {sig(s['old_accuracy'])} → {sig(s['new_accuracy'])}"
    return (f"{plain_finding(s['headline'])}\n{regressions_sentence(s)[:-1]}{accuracy}; "
            f"mean loss {sig(s['old_mean_loss'])} → {sig(s['new_mean_loss'])}")


def verification_table(doc: dict) -> pd.DataFrame:
    """Per candidate fix: what was removed or relabelled, accuracy now / estimated / measured, recovered."""
    s, names = doc["summary"], ["candidate", "removed", "relabelled", "accuracy now", "estimated accuracy",
                                "measured accuracy", "recovered (estimated)", "recovered (measured)"]

    def accuracy(m):
        return "—" if m is None else sig(m.get("accuracy"))

    rows = [[v["candidate"], v["removed"], v["relabelled"], sig(s.get("new_accuracy")), accuracy(v["estimated"]),
             accuracy(v["measured"]), percent(v["estimated_recovered"]), percent(v["recovered"])]
            for v in doc["verification"]]
    return pd.DataFrame(rows, columns=names)


def verification_text(doc: dict) -> str:
    """One sentence per candidate fix ("Without source = day-4: accuracy 0.815 → 0.853, ...")."""
    lines = [verification_sentence(v, doc["summary"]) for v in doc["verification"]]
    return "\n".join(lines) or "no candidate fix was verified (no harmful group, no flags)"


def flags_fix(session) -> dict | None:
    """The reviewer's current verdicts as one candidate fix, estimated as the report estimates
    its own (`influence.report.verification.verify`: one Newton step, no retraining), for the
    Regression tab to show beside the report's fixes. None when the verdicts change nothing."""
    from influence.data import as_data
    from influence.newton import Metrics
    from influence.report.flags import Flag
    from influence.report.verification import flag_candidate, verify

    setup, s = session.setup, session.setup.report["summary"]
    flags = [Flag(f["train_id"], f["verdict"], f.get("corrected_label", ""), f.get("note", ""),
                  f.get("source", "")) for f in session.flags.all()]
    candidate = flag_candidate(flags, session.n_train, setup.class_names)
    if candidate is None:
        return None
    read = session.read
    entry = verify([candidate], session.attr, setup.train, as_data(setup.train, "train", **read),
                   as_data(setup.eval, "eval", **read), session.attr.task,
                   Metrics(s.get("old_accuracy"), s["old_mean_loss"]),
                   Metrics(s.get("new_accuracy"), s["new_mean_loss"]))[0]
    return vars(entry)


def flags_fix_text(session) -> str:
    """One sentence about the current verdicts' estimated fix (as the report words its own)."""
    with session._lock:
        entry = flags_fix(session)
    if entry is None:
        return ("your verdicts change nothing yet (no 'remove' or 'mislabeled'): flag examples, "
                "then estimate")
    return (verification_sentence(entry, session.setup.report["summary"])
            + " Measure it by retraining with the command the export prints.")


def groups_table(doc: dict) -> pd.DataFrame:
    rows = [{"column": g["column"], "value": str(g["value"]), "harm": sig(g["harm"]),
             "estimator": g["estimator"].replace("_", " "),
             "share": percent(g["share"], SHARE_DIGITS),
             "confidence": f"{g['confidence']:.3f}", "count": g["count"],
             "finding": plain_finding(g.get("headline") or "")} for g in doc["groups"]]
    return pd.DataFrame(rows, columns=["column", "value", "harm", "estimator", "share", "confidence", "count",
                                       "finding"])


def regressions_table(doc: dict) -> pd.DataFrame:
    names = doc["settings"].get("class_names")
    rows = [{"eval id": r["eval_index"], "kind": r["kind"], "label": class_name(r["label"], names),
             "old prediction": class_name(r["old_prediction"], names),
             "new prediction": class_name(r["new_prediction"], names),
             "old loss": sig(r["old_loss"]), "new loss": sig(r["new_loss"]),
             "most harmful train ids": " ".join(str(h["train_index"]) for h in r["harmful"][:5])}
            for r in doc["regressions"]]
    return pd.DataFrame(rows, columns=["eval id", "kind", "label", "old prediction", "new prediction", "old loss",
                                       "new loss", "most harmful train ids"])


def suspects_table(doc: dict) -> pd.DataFrame:
    names = doc["settings"].get("class_names")
    rows = [{"train id": e["train_index"], "label": class_name(e["label"], names), "harm": sig(e["harm"]),
             "regressions harmed": e["harmful_to"],
             "self-influence percentile": percent(e["self_influence_percentile"]),
             **{str(k): str(v) for k, v in (e.get("groups") or {}).items()}}
            for e in doc["suspects"]]
    return pd.DataFrame(rows)
