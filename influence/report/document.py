"""The `Report` object: what `regression_report` found, and how it is saved and checked.

Sign convention: a training example's `score` on a regression is positive when it helped
(removing it would raise that regression's loss) and negative when it harmed; its
`loss_change` = score / n_train is the estimated change of that regression's loss if the
example were removed. `harm` (`influence.harm`) is the estimated drop of the regressions'
summed loss if the data were removed, in units of the eval loss: harm > 0 caused them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from influence.errors import InvalidArgumentError
from influence.report.explain import Finding
from influence.storage import atomic_write

SCHEMA_VERSION = "2.0"

# `--fail-on` metrics: name -> what is compared with the threshold (breached when ≥ it).
FAIL_ON = {
    "share": "largest share of harm of a group whose confidence ≥ min_confidence",
    "regressions": "number of eval examples right under the old model and wrong under the new one",
    "accuracy_drop": "old accuracy − new accuracy on the eval set",
    "loss_rise": "new mean eval loss − old mean eval loss",
    "recoverable": "largest fraction of the accuracy drop won back by removing or fixing a candidate "
                   "(measured with --verify, else estimated)",
}


@dataclass
class GroupEntry:
    """One value of one group column, with its harm on the regressions.

    `harm` > 0: the group caused the regressions; in units of the eval loss, the estimated drop
    of the regressions' summed loss without the group (`influence.harm`), from `estimator`:
    "newton", one Newton step for removing the whole group, or "first_order", the sum of its
    members' harm; `first_order_harm` is always the latter. `share` = harm / summed harm of
    the harmful groups of the same column; `confidence` = 1 − p of a permutation test
    against random training groups of the same size;
    `share_interval` = 5–95 % bootstrap interval over the regressions; `top_rate` = how
    often the group is the most harmful of its column across bootstrap resamples.
    Explained groups also carry `findings` (how their rows differ from the rest), a
    `headline` (the strongest finding) and `examples` (their most harmful rows by first-order
    harm: `[{"train_index", "harm"}]`).
    """

    column: str
    value: Any
    harm: float
    share: float
    count: int
    estimator: str
    first_order_harm: float
    mean_harm: float
    p_value: float
    confidence: float
    share_interval: list[float]
    top_rate: float
    findings: list[Finding] = field(default_factory=list)
    headline: str | None = None
    examples: list[dict] = field(default_factory=list)  # explained groups: their most harmful rows


@dataclass
class RegressionEntry:
    """An eval example that got worse, with its k most harmful (lowest score, most negative
    first) and k most helpful (highest score first) training examples."""

    eval_index: int
    kind: str  # "flipped" (right → wrong) or "loss_rise"
    label: Any
    old_prediction: Any
    new_prediction: Any
    old_loss: float
    new_loss: float
    harmful: list[dict]  # [{"train_index", "score", "loss_change"}], most harmful first
    helpful: list[dict]  # same, most helpful first


@dataclass
class ExampleEntry:
    """A training example: its total harm, for how many regressions it is among the k most
    harmful, its self-influence (high = unusual or mislabeled) and metadata."""

    train_index: int
    harm: float
    harmful_to: int
    self_influence: float | None
    self_influence_percentile: float | None
    label: Any
    groups: dict


@dataclass
class Figure:
    title: str
    png: bytes


@dataclass
class Report:
    """Result of `influence.report.regression_report`.

    Attributes:
        summary: counts, accuracies and losses of the old and new model, `headline`.
        groups: every group of every `group_by` column, most harmful first.
        regressions: the eval examples analysed.
        harmful_examples: training examples with the largest total harm.
        suspects: training examples harmful to the most regressions (with self-influence).
        diagnostics: the attribution method, damping, solver state and warnings, timings.
        settings: the options the report was made with.
        figures: PNG charts embedded in report.html (not part of report.json).
        verification: per candidate fix (a top group removed, the flags applied): eval
            metrics `estimated` by a Newton step and `measured` by retraining, and the
            fraction of the accuracy drop `recovered` (see `influence.report.verification`).
        fingerprints: SHA-256 of the old and new model and of the training and eval data.
    """

    summary: dict
    groups: list[GroupEntry]
    regressions: list[RegressionEntry]
    harmful_examples: list[ExampleEntry]
    suspects: list[ExampleEntry]
    diagnostics: dict
    settings: dict
    figures: list[Figure] = field(default_factory=list)
    verification: list[dict] = field(default_factory=list)
    fingerprints: dict = field(default_factory=dict)

    @property
    def headline(self) -> str:
        return self.summary["headline"]

    def to_dict(self) -> dict:
        """The JSON document (`schema_version`, ranked `groups`, `regressions`, `suspects`, ...)."""
        doc = {"schema_version": SCHEMA_VERSION, "summary": self.summary,
               "groups": [asdict(g) for g in self.groups],
               "regressions": [asdict(r) for r in self.regressions],
               "harmful_examples": [asdict(e) for e in self.harmful_examples],
               "suspects": [asdict(e) for e in self.suspects],
               "diagnostics": self.diagnostics, "settings": self.settings,
               "verification": self.verification, "fingerprints": self.fingerprints}
        return to_json_types(doc)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write `report.json` (validated against `schema.json`), `report.md` and the
        self-contained `report.html` into `folder`, each atomically. Returns their paths."""
        from influence.report.render_html import render_html
        from influence.report.render_md import render_markdown
        from influence.report.schema import validate

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc = self.to_dict()
        validate(doc)
        texts = {"report.json": json.dumps(doc, indent=2, allow_nan=False),
                 "report.md": render_markdown(doc), "report.html": render_html(doc, self.figures)}
        paths = {}
        for name, text in texts.items():
            paths[name] = folder / name
            atomic_write(paths[name], lambda f, t=text: f.write(t.encode("utf-8")))
        return paths

    def metrics(self, min_confidence: float = 0.95) -> dict[str, float]:
        """The values `breaches` compares with thresholds (see `FAIL_ON`)."""
        s = self.summary
        confident = [g.share for g in self.groups if g.confidence >= min_confidence and g.harm > 0]
        drop = None if s.get("old_accuracy") is None else s["old_accuracy"] - s["new_accuracy"]
        recovered = [v["recovered"] if v["recovered"] is not None else v["estimated_recovered"]
                     for v in self.verification]
        return {"share": max(confident, default=0.0), "regressions": float(s["n_flipped"]),
                "accuracy_drop": drop, "loss_rise": s["new_mean_loss"] - s["old_mean_loss"],
                "recoverable": max((r for r in recovered if r is not None), default=None)}

    def flags_recovery(self) -> tuple[float | None, str]:
        """The fraction of the regression the reviewer's flags won back (measured when verified,
        else estimated), and which ("measured", "estimated", or "" when they were not checked)."""
        fix = next((v for v in self.verification if v["kind"] == "flags"), None)
        if fix is None:
            return None, ""
        if fix["recovered"] is not None:
            return fix["recovered"], "measured"
        estimated = fix["estimated_recovered"]
        return estimated, "estimated" if estimated is not None else ""

    def recovery_failure(self, minimum: float) -> str | None:
        """Why the flags fail the recovery gate `minimum` (a fraction of the drop), or None when
        they pass."""
        value, how = self.flags_recovery()
        if not how:
            return (f"min-recovered: the flags were not verified (no --flags, only 'keep' "
                    f"verdicts, or no estimate), so they cannot reach {minimum:.0%} of the drop")
        if value < minimum - 1e-9:  # a fraction of whole eval examples: 4/5 passes a gate of 0.8
            return (f"min-recovered: the flags recovered {value:.1%} of the drop ({how}) < the "
                    f"gate {minimum:.0%}")
        return None

    def breaches(self, fail_on: dict[str, float], min_confidence: float = 0.95) -> list[str]:
        """One message per threshold reached (metric ≥ threshold); empty when all pass.

        Args:
            fail_on: metric name (a key of `FAIL_ON`) -> threshold.
            min_confidence: only groups at least this confident count for `share`.
        """
        unknown = sorted(set(fail_on) - set(FAIL_ON))
        if unknown:
            raise InvalidArgumentError(f"`fail_on` has unknown metric(s) {unknown}; known: {sorted(FAIL_ON)}")
        values = self.metrics(min_confidence)
        out = []
        for name, threshold in fail_on.items():
            value = values[name]
            if value is not None and value >= threshold:
                out.append(f"{name} = {value:.4g} ≥ {threshold:g} ({FAIL_ON[name]})")
        return out


def to_json_types(value: Any) -> Any:
    """Convert numpy / torch scalars and containers to JSON types; non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): to_json_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_types(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_json_types(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
