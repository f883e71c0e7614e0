"""report.md: the report as Markdown (every data value escaped: HTML and table pipes)."""

from __future__ import annotations

import html

SIGN_NOTE = ("Sign convention: a score > 0 means the training example helped the regressed eval example "
             "(removing it would raise its loss), < 0 means it harmed it; harm = −(sum of scores over the "
             "regressions), so harm > 0 caused the regressions. A group's share is its harm over the summed harm "
             "of the harmful groups of its column; confidence = 1 − p of a permutation test against random "
             "training groups of the same size.")
ROWS = 15


def cell(value) -> str:
    """Escape a value for a Markdown table cell (HTML special characters, pipes, newlines)."""
    return html.escape(fmt(value), quote=False).replace("|", "\\|").replace("\n", " ").replace("`", "'")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return "—" if value is None else str(value)


def text(value) -> str:
    """Escape running text (findings keep their `code` spans, column names are escaped inside)."""
    return html.escape(str(value), quote=False)


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def group_rows(doc: dict, limit: int = ROWS) -> list[list]:
    return [[rank, g["column"], g["value"], g["harm"], f"{100 * g['share']:.0f}%",
             f"{100 * g['share_interval'][0]:.0f}–{100 * g['share_interval'][1]:.0f}%", g["count"],
             g["confidence"], g["top_rate"], g["headline"] or ""]
            for rank, g in enumerate(doc["groups"][:limit], 1)]


GROUP_HEADER = ["rank", "column", "value", "harm", "share", "share 5–95%", "count", "confidence", "top rate",
                "explanation"]
EXAMPLE_HEADER = ["train index", "harm", "harmful to", "self-influence", "self-infl. percentile", "label", "groups"]
REGRESSION_HEADER = ["eval index", "kind", "label", "old → new prediction", "old → new loss",
                     "most harmful training examples (score)"]


def example_rows(examples: list[dict]) -> list[list]:
    return [[e["train_index"], e["harm"], e["harmful_to"], e["self_influence"], e["self_influence_percentile"],
             e["label"], e["groups"]] for e in examples[:ROWS]]


def regression_rows(doc: dict) -> list[list]:
    return [[r["eval_index"], r["kind"], r["label"], f"{fmt(r['old_prediction'])} → {fmt(r['new_prediction'])}",
             f"{r['old_loss']:.3g} → {r['new_loss']:.3g}",
             ", ".join(f"#{h['train_index']} ({h['score']:+.3g})" for h in r["harmful"][:5])]
            for r in doc["regressions"][:ROWS]]


def summary_lines(doc: dict) -> list[str]:
    s = doc["summary"]
    rows = [["mean eval loss", s["old_mean_loss"], s["new_mean_loss"]]]
    if s.get("old_accuracy") is not None:
        rows.insert(0, ["eval accuracy", s["old_accuracy"], s["new_accuracy"]])
    return table(["", "old model", "new model"], rows) + [
        "", regressions_sentence(s)]


def regressions_sentence(s: dict) -> str:
    return (f"{s['n_regressions']} regressions analysed: {s['n_regressions'] - s['n_loss_rise']} of the "
            f"{s['n_flipped']} eval examples right under the old model and wrong under the new one, and "
            f"{s['n_loss_rise']} more whose loss rose most ({s['n_train']} training and {s['n_eval']} eval "
            "examples).")


def render_markdown(doc: dict) -> str:
    """The whole report.md from the report's JSON document."""
    lines = ["# Regression report", "", f"**{text(doc['summary']['headline'])}**", "", *summary_lines(doc), "",
             SIGN_NOTE, "", "## Most harmful groups", "", *table(GROUP_HEADER, group_rows(doc)), "",
             "## Explanations", ""]
    explained = [g for g in doc["groups"] if g["findings"]]
    for g in explained:
        lines += [f"### {text(g['column'])} = {text(g['value'])}", ""]
        lines += [f"- {text(f['text'])}" for f in g["findings"]]
        lines += ["- its most harmful rows (train index, harm): "
                  + ", ".join(f"#{e['train_index']} ({e['harm']:+.3g})" for e in g["examples"]), ""]
    if not explained:
        lines += ["No harmful group has a column that stands out.", ""]
    lines += ["## Most harmful training examples", "", *table(EXAMPLE_HEADER, example_rows(doc["harmful_examples"])),
              "", "## Suspects", "", "Training examples among the most harmful for the most regressions.", "",
              *table(EXAMPLE_HEADER, example_rows(doc["suspects"])), "",
              f"## Regressions (first {min(ROWS, len(doc['regressions']))} of {len(doc['regressions'])})", "",
              *table(REGRESSION_HEADER, regression_rows(doc)), "", "## Diagnostics", ""]
    d = doc["diagnostics"]
    lines += [f"- {cell(k)}: {cell(v)}" for k, v in d.items() if k != "warnings"]
    lines += [f"- warning: {cell(w)}" for w in d["warnings"]] + [""]
    return "\n".join(lines)
