"""influence.report.explain on tables with planted differences (and one without)."""

import numpy as np
import pandas as pd

from influence.report.explain import explain_group, headline


def table(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.normal(40, 12, n).round(), "hours": rng.normal(20, 3, n).round(),
                         "income": rng.lognormal(10, 1, n), "city": rng.choice(["a", "b", "c"], n),
                         "id": np.arange(n), "label": rng.integers(0, 2, n)})


def test_swapped_columns_are_named_together():
    df, mask = table(), np.zeros(3000, bool)
    mask[:400] = True
    df.loc[mask, ["age", "hours"]] = df.loc[mask, ["hours", "age"]].to_numpy()
    findings = explain_group(df, mask, label_column="label")
    assert findings[0].kind == "swap" and set(findings[0].columns) == {"age", "hours"}
    assert "look swapped" in headline(findings)
    assert not any(f.kind == "distribution" and f.columns[0] in {"age", "hours"} for f in findings)


def test_nulls_and_category_mix_are_found():
    df, mask = table(), np.zeros(3000, bool)
    mask[1000:1500] = True
    df.loc[mask, "income"] = np.nan
    df.loc[np.flatnonzero(mask)[:300], "city"] = "z"
    findings = explain_group(df, mask, label_column="label")
    kinds = {(f.kind, f.columns[0]) for f in findings}
    assert ("nulls", "income") in kinds and ("distribution", "city") in kinds
    assert findings[0].kind == "nulls" and findings[0].details["null_rate_group"] == 1.0


def test_labels_that_disagree_with_the_reference_model_are_flagged():
    df, mask = table(), np.zeros(3000, bool)
    mask[2000:2400] = True
    agreement = np.random.default_rng(1).uniform(size=3000) < 0.85
    agreement[mask] = np.random.default_rng(2).uniform(size=400) < 0.2
    findings = explain_group(df, mask, label_column="label", agreement=agreement)
    assert findings[0].kind == "labels" and findings[0].columns == ["label"]


def test_a_random_group_has_no_findings_and_identifiers_are_ignored():
    df = table()
    mask = np.random.default_rng(3).uniform(size=3000) < 0.15
    assert explain_group(df, mask, label_column="label") == []
    assert headline([]).startswith("no column stands out")


def test_reference_rows_leave_out_other_groups():
    df, mask, other = table(), np.zeros(3000, bool), np.zeros(3000, bool)
    mask[:500], other[500:1000] = True, True
    df.loc[other, "income"] = np.nan  # another group's oddity
    assert any(f.kind == "nulls" for f in explain_group(df, mask))  # mirrored: the group has *fewer* nulls
    assert explain_group(df, mask, reference=~other) == []
