"""Numbers a person can read: 3 significant digits, percentages, the sign of an effect in words.

Shared by report.html / report.md, the CLI and the app, so the same number reads the same
everywhere. Full precision stays in report.json and in the app's downloads.

Sign convention (the package's): a score > 0 is helpful, < 0 harmful; `loss_change` =
score / n_train is the estimated change of the eval loss if the training example were
removed; harm > 0 = removing the data would lower the loss (it caused it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def sig(value: Any, digits: int = 3) -> str:
    """`value` to `digits` significant digits ("—" for None or NaN); integers and text as they are."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if 1e3 <= abs(value) < 1e9:  # 1640.3 -> "1,640", not "1.64e+03"
        return f"{float(f'{value:.{digits}g}'):,.0f}"
    return f"{value:.{digits}g}"


SHARE_DIGITS = 2  # a group's share of the harm, everywhere: "-30%", "6.3%"


def percent(fraction: float | None, digits: int = 3) -> str:
    """0.0629999 -> "6.3%" (`digits` significant digits); None -> "—"."""
    if fraction is None:
        return "—"
    return f"{float(f'{100 * fraction:.{digits}g}'):g}%"


def effect(loss_change: float) -> str:
    """The sign of a training example's estimated effect, in words."""
    if loss_change < 0:
        return "harmful: removing it lowers the loss"
    if loss_change > 0:
        return "helpful: removing it raises the loss"
    return "no effect"


def class_name(label: Any, class_names: Sequence[str] | None) -> str:
    """The name of a class index (the index itself when there are no names or it is outside them)."""
    if class_names and isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def metric_change(before: dict | None, after: dict | None) -> str:
    """"accuracy 0.815 → 0.852" (or the mean loss when there is no accuracy)."""
    if before is None or after is None:
        return "not available"
    if before.get("accuracy") is not None and after.get("accuracy") is not None:
        return f"accuracy {sig(before['accuracy'])} → {sig(after['accuracy'])}"
    return f"mean loss {sig(before['mean_loss'])} → {sig(after['mean_loss'])}"


def verification_sentence(v: dict, summary: dict) -> str:
    """"Without source = day-4: accuracy 0.815 → 0.852, 97% of the regression recovered (estimated 95%)."."""
    new = {"accuracy": summary.get("new_accuracy"), "mean_loss": summary["new_mean_loss"]}
    what = f"Without {v['candidate']}" if v["kind"] == "group" else f"With the {v['candidate']} fixed"
    if v.get("measured") is not None:
        text = f"{what}: {metric_change(new, v['measured'])} (measured by retraining)"
        if v.get("recovered") is not None:
            text += f", {percent(v['recovered'])} of the regression recovered"
        if v.get("estimated_recovered") is not None:
            text += f" (estimated {percent(v['estimated_recovered'])})"
        return text + "."
    if v.get("estimated") is not None:
        text = f"{what}: {metric_change(new, v['estimated'])} (estimated, not retrained)"
        if v.get("estimated_recovered") is not None:
            text += f", {percent(v['estimated_recovered'])} of the regression recovered"
        return text + "."
    return f"{what}: {v.get('note') or 'not estimated'}."


def summary_headline(s: dict, worst, first_check) -> str:
    """The report's one-paragraph answer: what changed, the most harmful group, what fixing it does.

    Args:
        s: the summary counts and metrics.
        worst: the most harmful `GroupEntry` (None when nothing is harmful or nothing regressed).
        first_check: the verification entry of `worst` (a dataclass or dict), or None.
    """
    if s["old_accuracy"] is not None:
        text = (f"{s['n_flipped']} eval examples went from right to wrong and {s['n_improved']} from wrong to "
                f"right (accuracy {sig(s['old_accuracy'])} → {sig(s['new_accuracy'])}).")
    else:
        text = f"Mean eval loss {sig(s['old_mean_loss'])} → {sig(s['new_mean_loss'])}."
    if worst is not None:
        share = percent(worst.share, SHARE_DIGITS)
        text += (f" Most harmful: {worst.column} {worst.value} ({share} of the harm, "
                 f"confidence {worst.confidence:.3f})")
        text += f": {worst.headline}." if worst.headline else "."
        if first_check is not None:
            check = first_check if isinstance(first_check, dict) else vars(first_check)
            text += " " + verification_sentence(check, s)
    elif not s["n_regressions"]:
        text += " No eval example got worse: nothing to attribute."
    return text
