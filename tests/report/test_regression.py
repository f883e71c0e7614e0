"""regression_report end to end on small tables with one corrupted source, plus bad inputs."""

import numpy as np
import pytest
import torch

import influence as inf
from influence.report import regression_report
from tests.report.scenarios import WEIGHT_DECAY, build

TASK = inf.ClassificationTask(weight_decay=WEIGHT_DECAY)


def test_flipped_labels_rank_their_source_first_and_are_explained(flipped_report):
    report = flipped_report
    first = report.groups[0]
    assert (first.column, first.value) == ("source", "s3")
    assert first.share > 0.5 and first.confidence >= 0.99 and first.top_rate > 0.9
    assert first.findings[0].kind == "labels" and first.findings[0].columns == ["label"]
    assert [g.harm for g in report.groups] == sorted((g.harm for g in report.groups), reverse=True)
    assert report.summary["n_flipped"] > 0 and "source s3" in report.headline


def test_first_order_group_harm_equals_attributor_group_scores(flipped, flipped_report):
    old, new, train, eval_set, _ = flipped
    report = flipped_report
    rows = [r.eval_index for r in report.regressions]
    attr = inf.Attributor(new, train, task=TASK, method="exact", progress=False).fit()
    totals = attr.group_scores(eval_set.select(rows), "source")
    expected = dict(zip(totals.groups, (-totals.sum.sum(dim=0) / len(train)).tolist()))  # eval-loss units
    for g in report.groups:
        assert g.first_order_harm == pytest.approx(expected[g.value], rel=1e-6)
        assert g.estimator == "newton"


def test_regressions_are_right_then_wrong_first_and_their_harmful_examples_are_negative(flipped, flipped_report):
    old, new, _, eval_set, _ = flipped
    X = torch.tensor(np.stack(eval_set["input"]), dtype=torch.float64)
    y = np.array(eval_set["label"])
    with torch.no_grad():
        right_before, right_after = old(X).argmax(1).numpy() == y, new(X).argmax(1).numpy() == y
    flipped_rows = set(np.flatnonzero(right_before & ~right_after).tolist())
    kinds = [r.kind for r in flipped_report.regressions]
    assert kinds == sorted(kinds)  # "flipped" before "loss_rise"
    assert {r.eval_index for r in flipped_report.regressions if r.kind == "flipped"} == flipped_rows
    for r in flipped_report.regressions:
        assert r.new_loss >= r.old_loss or r.kind == "flipped"
        assert all(h["score"] <= 0 for h in r.harmful[:1]) and r.harmful[0]["score"] <= r.helpful[0]["score"]
    suspects = [s.train_index for s in flipped_report.suspects]
    in_s3 = [flipped[2][i]["source"] == "s3" for i in suspects]
    assert suspects and np.mean(in_s3) > 0.8


def test_swapped_columns_are_found_with_first_order_groups_too():
    old, new, train, eval_set, _ = build("swap", "s2", ["x1", "x2"])
    report = regression_report(old, new, train, eval_set, ["source", "color"], task=TASK, group_estimator="first_order",
                               permutations=199, bootstrap=50)
    first = report.groups[0]
    assert (first.column, first.value, first.estimator) == ("source", "s2", "first_order")
    assert first.findings[0].kind == "swap" and set(first.findings[0].columns) == {"x1", "x2"}
    assert {g.column for g in report.groups} == {"source", "color"}


def test_no_regressions_gives_an_empty_but_valid_report(flipped, tmp_path):
    old, _, train, eval_set, _ = flipped
    report = regression_report(old, old, train, eval_set, "source", task=TASK, permutations=9, bootstrap=5)
    assert report.regressions == [] and report.summary["n_flipped"] == 0
    assert all(g.harm == 0 for g in report.groups)
    assert "nothing to attribute" in report.headline
    report.save(tmp_path)


def test_missing_group_column_names_group_by(flipped):
    old, new, train, eval_set, _ = flipped
    with pytest.raises(inf.InvalidArgumentError, match=r"`group_by`.*'day'.*columns are"):
        regression_report(old, new, train, eval_set, ["source", "day"], task=TASK)


def test_models_with_different_outputs_name_new_model(flipped):
    old, _, train, eval_set, encoder = flipped
    three = torch.nn.Linear(encoder.dim, 3).double()
    expected = r"`new_model` returns outputs of shape \[batch, 3\].*\[batch, 2\]"
    with pytest.raises(inf.InvalidArgumentError, match=expected):
        regression_report(old, three, train, eval_set, "source", task=TASK)


def test_eval_labels_the_models_cannot_produce_name_eval(flipped):
    old, new, train, eval_set, _ = flipped
    bad = eval_set.map(lambda row, i: {"label": 5 if i == 7 else row["label"]}, with_indices=True)
    with pytest.raises(inf.InvalidArgumentError, match=r"labels of `eval` must lie in \[0, 1\].*found label 5"):
        regression_report(old, new, train, bad, "source", task=TASK)


def test_group_labels_of_the_wrong_length_and_bad_options_are_refused(flipped):
    old, new, train, eval_set, _ = flipped
    with pytest.raises(inf.InvalidArgumentError, match=r"`group_by\['batch'\]` has 3 labels"):
        regression_report(old, new, train, eval_set, {"batch": [1, 2, 3]}, task=TASK)
    with pytest.raises(inf.InvalidArgumentError, match="`group_estimator`"):
        regression_report(old, new, train, eval_set, "source", task=TASK, group_estimator="magic")
    with pytest.raises(inf.InvalidArgumentError, match="`k` must be a positive integer"):
        regression_report(old, new, train, eval_set, "source", task=TASK, k=0)
    with pytest.raises(inf.InvalidArgumentError, match="`verify=True` needs `retrain`"):
        regression_report(old, new, train, eval_set, "source", task=TASK, verify=True, permutations=0, bootstrap=0)


def test_tensor_data_with_explicit_group_labels(flipped):
    old, new, train, eval_set, _ = flipped
    to_tensors = lambda ds: (torch.tensor(np.stack(ds["input"])), torch.tensor(ds["label"]))
    report = regression_report(old, new, to_tensors(train), to_tensors(eval_set), {"batch": list(train["source"])},
                               task=TASK, permutations=99, bootstrap=20)
    assert (report.groups[0].column, report.groups[0].value) == ("batch", "s3")
    assert [f.kind for f in report.groups[0].findings] == ["labels"]  # labels are known even without a table


def test_findings_name_the_classes_when_the_report_has_class_names():
    """Why 7: the culprit's explanation says label `high`, not label `1`."""
    old, new, train, eval_set, _ = build("join", "s3")
    report = regression_report(old, new, train, eval_set, "source", task=TASK,
                               class_names=["low", "high"], permutations=99, bootstrap=50)
    text = " ".join(f.text for g in report.groups if g.findings for f in g.findings)
    assert "label `high`" in text and "label `1`" not in text and "label `0`" not in text
