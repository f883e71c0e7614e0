"""Why is a group of training rows different? Per-column comparisons of the group vs the rest.

`explain_group(frame, mask)` compares the rows of a group (`mask`) with the other rows,
column by column, and returns findings ordered strongest first:

- `swap`: two columns look exchanged — the group's column A is distributed like the rest's
  column B and vice versa, while each differs from its own column in the rest;
- `nulls`: the missing-value rate differs;
- `distribution`: the values differ — numeric columns by the Kolmogorov-Smirnov statistic
  (with mean shift in units of the rest's standard deviation and scale ratio), categorical
  columns by the total-variation distance of their category mix;
- `labels`: the label mix differs, or the labels disagree with a reference model (e.g. the
  old model's predictions) much more often than in the rest (flipped or noisy labels).

A finding's `strength` is an effect size in [0, 1] (KS, total variation, or a difference of
rates), and only findings that are both sizeable (≥ `min_effect`) and statistically clear
(beyond chance at about 1e-4) are returned. Works for any table: nothing here knows the
columns' names or meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KS_CRITICAL = 2.23  # √(−½ ln(α/2)) for α ≈ 1e-4: the two-sample KS critical coefficient
Z_CRITICAL = 4.0  # rates: two-proportion z beyond this counts as a clear difference


@dataclass
class Finding:
    """One way in which a group differs from the rest.

    Attributes:
        kind: "swap", "nulls", "distribution" or "labels".
        columns: the columns involved (two for a swap).
        strength: effect size in [0, 1]; findings are ordered by it (swaps first).
        text: one sentence for a person, with the numbers.
        details: the statistics behind it (JSON-serialisable).
    """

    kind: str
    columns: list[str]
    strength: float
    text: str
    details: dict = field(default_factory=dict)


def explain_group(frame, mask, label_column: str | None = None, agreement=None, skip=(),
                  min_effect: float = 0.05, reference=None) -> list[Finding]:
    """Findings that set the rows `mask` apart from the other rows of `frame`.

    Args:
        frame: pandas DataFrame, one row per training example (metadata columns; columns
            holding lists or arrays are skipped).
        mask: bool[n], the group's rows.
        reference: bool[n], the rows it is compared with (default: all the others). Leave
            out other suspicious groups, or their oddities show up mirrored here.
        label_column: the label column, compared as labels (mix and `agreement`).
        agreement: optional bool[n], whether each row's label equals a reference model's
            prediction (e.g. the old model); a group that disagrees much more often than
            the rest has suspicious labels.
        skip: columns to leave out (e.g. the group column itself).
        min_effect: smallest effect size reported.
    Returns:
        Findings, strongest first, swaps before the per-column findings they explain.
    """
    mask = np.asarray(mask, dtype=bool)
    rest = ~mask if reference is None else np.asarray(reference, dtype=bool) & ~mask
    if not mask.any() or not rest.any():
        return []
    frame = frame[mask | rest].reset_index(drop=True)
    agreement = None if agreement is None else np.asarray(agreement, dtype=bool)[mask | rest]
    mask = mask[mask | rest]
    columns = [c for c in frame.columns if c not in set(skip) and _usable(frame[c])]
    findings: list[Finding] = []
    shifted: dict[str, float] = {}
    for c in columns:
        if c == label_column:
            continue
        column = frame[c]
        null = column.isna().to_numpy()
        f = _null_finding(c, null[mask], null[~mask], min_effect)
        if f:
            findings.append(f)
        g, r = column[mask & ~null].to_numpy(), column[~mask & ~null].to_numpy()
        if len(g) and len(r):
            f = _distribution_finding(c, g, r, min_effect)
            if f:
                findings.append(f)
                shifted[c] = f.strength
    swaps = _swap_findings(frame, mask, shifted)
    swapped = {c for s in swaps for c in s.columns}
    findings = [f for f in findings if not (f.kind == "distribution" and set(f.columns) & swapped)]
    if label_column is not None and label_column in frame.columns:
        f = _label_finding(label_column, frame[label_column].to_numpy(), mask, agreement, min_effect)
        if f:
            findings.append(f)
    findings.sort(key=lambda f: -f.strength)
    return swaps + findings


def headline(findings: list[Finding]) -> str:
    """The strongest finding's text, or a note that nothing stands out."""
    return findings[0].text if findings else "no column stands out from the rest of the training data"


# ---------------------------------------------------------------- statistics
def _usable(series) -> bool:
    """Scalar columns that are not row identifiers (all-distinct integers or strings)."""
    sample = series.dropna()
    if sample.empty:
        return True
    if isinstance(sample.iloc[0], (list, tuple, np.ndarray, dict)):
        return False
    identifier = sample.is_unique and len(sample) == len(series) and series.dtype.kind in "iuOSU"
    return not identifier


def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (max distance between empirical CDFs)."""
    a, b = np.sort(a.astype(np.float64)), np.sort(b.astype(np.float64))
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between the category frequencies of a and b (as strings)."""
    fa, fb = _frequencies(a), _frequencies(b)
    return 0.5 * sum(abs(fa.get(k, 0.0) - fb.get(k, 0.0)) for k in set(fa) | set(fb))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """KS when both samples are numeric, else total variation over categories."""
    return ks(a, b) if _is_numeric(a) and _is_numeric(b) else tv(a, b)


def _critical(n: int, m: int) -> float:
    return KS_CRITICAL * math.sqrt((n + m) / (n * m))


def _frequencies(values: np.ndarray) -> dict[str, float]:
    import pandas as pd

    return pd.Series(values, dtype=object).astype(str).value_counts(normalize=True).to_dict()


def _rate_z(p1: float, n1: int, p2: float, n2: int) -> float:
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    return (p1 - p2) / se


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _null_finding(column: str, group: np.ndarray, rest: np.ndarray, min_effect: float) -> Finding | None:
    pg, pr = float(group.mean()), float(rest.mean())
    if abs(pg - pr) < min_effect or abs(_rate_z(pg, len(group), pr, len(rest))) < Z_CRITICAL:
        return None
    return Finding("nulls", [column], abs(pg - pr),
                   f"`{column}` is missing in {_pct(pg)} of the group's rows vs {_pct(pr)} in the rest",
                   {"null_rate_group": pg, "null_rate_rest": pr})


def _distribution_finding(column: str, g: np.ndarray, r: np.ndarray, min_effect: float) -> Finding | None:
    if _is_numeric(g) and _is_numeric(r):
        d = ks(g, r)
        if d < max(min_effect, _critical(len(g), len(r))):
            return None
        mg, mr, sg, sr = float(g.mean()), float(r.mean()), float(g.std()), float(r.std())
        shift = (mg - mr) / sr if sr > 0 else 0.0
        scale = sg / sr if sr > 0 else float("inf")
        text = (f"`{column}` is distributed differently (KS {d:.2f}): mean {mg:.4g} vs {mr:.4g} in the rest "
                f"({shift:+.2f} SD), spread ×{scale:.2f}")
        return Finding("distribution", [column], d, text, {"ks": d, "mean_group": mg, "mean_rest": mr,
                                                           "std_group": sg, "std_rest": sr,
                                                           "shift_sd": shift, "scale_ratio": scale})
    d = tv(g, r)
    fg, fr = _frequencies(g), _frequencies(r)
    if d < min_effect or _chi2_p(fg, len(g), fr, len(r)) > 1e-4:
        return None
    top = max(set(fg) | set(fr), key=lambda k: abs(fg.get(k, 0.0) - fr.get(k, 0.0)))
    text = (f"`{column}` has a different category mix (total variation {d:.2f}): `{top}` is "
            f"{_pct(fg.get(top, 0.0))} of the group vs {_pct(fr.get(top, 0.0))} of the rest")
    return Finding("distribution", [column], d, text, {"total_variation": d, "category": top,
                                                       "rate_group": fg.get(top, 0.0),
                                                       "rate_rest": fr.get(top, 0.0)})


def _chi2_p(fg: dict, ng: int, fr: dict, nr: int) -> float:
    from scipy.stats import chi2_contingency

    keys = sorted(set(fg) | set(fr))
    table = np.array([[fg.get(k, 0.0) * ng for k in keys], [fr.get(k, 0.0) * nr for k in keys]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table)[1])


def _swap_findings(frame, mask: np.ndarray, shifted: dict[str, float]) -> list[Finding]:
    """Pairs of shifted columns whose values look exchanged in the group."""
    values = {}
    for c in shifted:
        column = frame[c]
        ok = ~column.isna().to_numpy()
        values[c] = (column[mask & ok].to_numpy(), column[~mask & ok].to_numpy())
    candidates = []
    names = sorted(shifted, key=lambda c: -shifted[c])
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (ga, ra), (gb, rb) = values[a], values[b]
            same = min(distance(ga, ra), distance(gb, rb))
            cross = max(distance(ga, rb), distance(gb, ra))
            if cross <= 0.5 * same:
                candidates.append((same - cross, a, b, same, cross))
    findings, used = [], set()
    for gap, a, b, same, cross in sorted(candidates, reverse=True):
        if a in used or b in used:
            continue
        used |= {a, b}
        text = (f"`{a}` and `{b}` look swapped: in the group, each is distributed like the other "
                f"column in the rest (distance {cross:.2f}) and unlike itself ({same:.2f})")
        findings.append(Finding("swap", [a, b], 0.5 * (shifted[a] + shifted[b]), text,
                                {"distance_same": same, "distance_crossed": cross}))
    return findings


def _label_finding(column: str, labels: np.ndarray, mask: np.ndarray, agreement, min_effect: float
                   ) -> Finding | None:
    g, r = labels[mask], labels[~mask]
    mix = tv(g, r)
    fg, fr = _frequencies(g), _frequencies(r)
    mix_clear = mix >= min_effect and _chi2_p(fg, len(g), fr, len(r)) <= 1e-4
    details = {"total_variation": mix}
    strength, parts = 0.0, []
    if agreement is not None:
        agreement = np.asarray(agreement, dtype=bool)
        ag, ar = float(agreement[mask].mean()), float(agreement[~mask].mean())
        details.update(agreement_group=ag, agreement_rest=ar)
        drop = ar - ag
        if drop >= min_effect and _rate_z(ag, int(mask.sum()), ar, int((~mask).sum())) <= -Z_CRITICAL:
            strength = drop
            parts.append(f"the reference model agrees with only {_pct(ag)} of the group's labels vs {_pct(ar)} "
                         "in the rest")
    if mix_clear:
        top = max(set(fg) | set(fr), key=lambda k: abs(fg.get(k, 0.0) - fr.get(k, 0.0)))
        parts.append(f"label `{top}` is {_pct(fg.get(top, 0.0))} of the group vs {_pct(fr.get(top, 0.0))} "
                     "of the rest")
        strength = max(strength, mix)
    if not parts:
        return None
    lead = (f"labels of `{column}` look wrong (or the inputs are unreadable): " if strength > mix
            else f"the mix of `{column}` differs: ")
    return Finding("labels", [column], strength, lead + "; ".join(parts), details)
