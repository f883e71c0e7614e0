"""report.md: the report as Markdown (every data value escaped: HTML and table pipes).

The tables are built once here (header + rows of plain values) and rendered by both this
module and `render_html`. Numbers read at 3 significant digits (`influence.report.readable`);
report.json keeps full precision.
"""

from __future__ import annotations

import html

from influence.report.readable import SHARE_DIGITS, class_name, percent, sig, verification_sentence

SIGN_NOTE = ("Sign convention: a training example's effect on a regressed eval example is the estimated change "
             "of its loss if the training example were removed (score / n_train): < 0 harmful, > 0 helpful. "
             "Harm = the estimated drop of the regressions' summed loss if the data were removed (units: the "
             "eval loss), so harm > 0 caused the regressions. A group's share is its harm over the summed harm "
             "of the harmful groups of its column; confidence = 1 − p of a permutation test against random "
             "training groups of the same size.")
ROWS = 15


def cell(value) -> str:
    """Escape a value for a Markdown table cell (HTML special characters, pipes, newlines)."""
    return html.escape(fmt(value), quote=False).replace("|", "\\|").replace("\n", " ").replace("`", "'")


def fmt(value) -> str:
    if isinstance(value, float):
        return sig(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return "—" if value is None else str(value)


def text(value) -> str:
    """Escape running text (findings keep their `code` spans, column names are escaped inside)."""
    return html.escape(str(value), quote=False)


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


GROUP_HEADER = ["rank", "column", "value", "harm", "estimator", "share", "share 5–95%", "count", "confidence",
                "explanation"]
EXAMPLE_HEADER = ["train index", "harm", "harmful to", "self-influence percentile", "label", "groups"]
REGRESSION_HEADER = ["eval index", "kind", "label", "old → new prediction", "old → new loss",
                     "most harmful training examples (loss change if removed)"]
VERIFICATION_HEADER = ["candidate", "removed", "relabelled", "accuracy (estimated)", "accuracy (measured)",
                       "recovered (estimated)", "recovered (measured)"]


def _share_interval(g: dict) -> str:
    low, high = (percent(s, SHARE_DIGITS) for s in g["share_interval"])
    return f"{low}–{high}"


def group_rows(doc: dict, limit: int = ROWS) -> list[list]:
    return [[rank, g["column"], g["value"], g["harm"], g["estimator"].replace("_", " "),
             percent(g["share"], SHARE_DIGITS), _share_interval(g), g["count"],
             f"{g['confidence']:.3f}", g["headline"] or ""]
            for rank, g in enumerate(doc["groups"][:limit], 1)]


def _names(doc: dict):
    return doc["settings"].get("class_names")


def example_rows(doc: dict, examples: list[dict]) -> list[list]:
    return [[e["train_index"], e["harm"], e["harmful_to"], percent(e["self_influence_percentile"]),
             class_name(e["label"], _names(doc)), e["groups"]] for e in examples[:ROWS]]


def regression_rows(doc: dict) -> list[list]:
    names = _names(doc)
    return [[r["eval_index"], r["kind"], class_name(r["label"], names),
             f"{class_name(r['old_prediction'], names)} → {class_name(r['new_prediction'], names)}",
             f"{sig(r['old_loss'])} → {sig(r['new_loss'])}",
             ", ".join(f"#{h['train_index']} ({sig(h['loss_change'])})" for h in r["harmful"][:5])]
            for r in doc["regressions"][:ROWS]]


def verification_rows(doc: dict) -> list[list]:
    def accuracy(m):
        return None if m is None else m.get("accuracy")

    return [[v["candidate"], v["removed"], v["relabelled"], accuracy(v["estimated"]), accuracy(v["measured"]),
             percent(v["estimated_recovered"]), percent(v["recovered"])] for v in doc["verification"]]


def summary_rows(doc: dict) -> list[list]:
    s = doc["summary"]
    rows = [["mean eval loss", s["old_mean_loss"], s["new_mean_loss"]]]
    if s.get("old_accuracy") is not None:
        rows.insert(0, ["eval accuracy", s["old_accuracy"], s["new_accuracy"]])
    return rows


def regressions_sentence(s: dict) -> str:
    return (f"{s['n_regressions']} regressions analysed: {s['n_regressions'] - s['n_loss_rise']} of the "
            f"{s['n_flipped']} eval examples right under the old model and wrong under the new one, and "
            f"{s['n_loss_rise']} more whose loss rose most ({s['n_train']} training and {s['n_eval']} eval "
            "examples).")


def verification_lines(doc: dict) -> list[str]:
    """One sentence per candidate, e.g. "Without source = day-4: accuracy 0.815 → 0.852, ...". """
    return [verification_sentence(v, doc["summary"]) for v in doc["verification"]]


def render_markdown(doc: dict) -> str:
    """The whole report.md from the report's JSON document."""
    lines = ["# Regression report", "", f"**{text(doc['summary']['headline'])}**", "",
             *table(["", "old model", "new model"], summary_rows(doc)), "", regressions_sentence(doc["summary"]), "",
             SIGN_NOTE, "", "## Validate before promotion", ""]
    if doc["verification"]:
        lines += [*table(VERIFICATION_HEADER, verification_rows(doc)), ""]
        lines += [f"- {text(line)}" for line in verification_lines(doc)] + [""]
    else:
        lines += ["No candidate to verify (no harmful group).", ""]
    lines += ["## Most harmful groups", "", *table(GROUP_HEADER, group_rows(doc)), "", "## Explanations", ""]
    explained = [g for g in doc["groups"] if g["findings"]]
    for g in explained:
        lines += [f"### {text(g['column'])} = {text(g['value'])}", ""]
        lines += [f"- {text(f['text'])}" for f in g["findings"]]
        lines += ["- its most harmful rows (train index, harm): "
                  + ", ".join(f"#{e['train_index']} ({sig(e['harm'])})" for e in g["examples"]), ""]
    if not explained:
        lines += ["No harmful group has a column that stands out.", ""]
    lines += ["## Most harmful training examples", "",
              *table(EXAMPLE_HEADER, example_rows(doc, doc["harmful_examples"])), "", "## Suspects", "",
              "Training examples among the most harmful for the most regressions.", "",
              *table(EXAMPLE_HEADER, example_rows(doc, doc["suspects"])), "",
              f"## Regressions (first {min(ROWS, len(doc['regressions']))} of {len(doc['regressions'])})", "",
              *table(REGRESSION_HEADER, regression_rows(doc)), "", "## Diagnostics", ""]
    d = doc["diagnostics"]
    lines += [f"- {cell(k)}: {cell(v)}" for k, v in d.items() if k != "warnings"]
    lines += [f"- warning: {cell(w)}" for w in d["warnings"]] + [""]
    return "\n".join(lines)

