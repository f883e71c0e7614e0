"""Validate before promotion: estimated (Newton step) and measured (retraining) eval metrics of the
report's candidate fixes, against retraining done here independently."""

import numpy as np
import pytest
import torch

import influence as inf
from influence.newton import Metrics
from influence.report import regression_report
from influence.report.flags import Flag
from influence.report.verification import recovered
from tests.report.scenarios import WEIGHT_DECAY, build, train_logreg

TASK = inf.ClassificationTask(weight_decay=WEIGHT_DECAY)


@pytest.fixture(scope="module")
def joined():
    """Every label of source s3 set to 1 (a broken join): a regression a person notices."""
    return build("join", "s3")


def retrain(dim):
    return lambda data: train_logreg(data, dim)


def accuracy(model, data):
    X = torch.tensor(np.stack(data["input"]), dtype=torch.float64)
    with torch.no_grad():
        return float((model(X).argmax(1).numpy() == np.array(data["label"])).mean())


@pytest.fixture(scope="module")
def verified(joined):
    old, new, train, eval_set, encoder = joined
    truth = build("none", "s3")[2]["label"]  # the clean labels of the same rows
    rows = [i for i, s in enumerate(train["source"]) if s == "s3"][:40]
    flags = [Flag(i, "mislabeled", str(truth[i])) for i in rows] + [Flag(0, "keep")]
    report = regression_report(old, new, train, eval_set, "source", task=TASK, verify=True,
                               retrain=retrain(encoder.dim), flags=flags, permutations=99, bootstrap=20)
    return report, rows, {i: truth[i] for i in rows}


def test_the_top_group_is_removed_and_measured_by_retraining(joined, verified):
    old, new, train, eval_set, encoder = joined
    report, _, _ = verified
    s = report.summary
    assert s["old_accuracy"] - s["new_accuracy"] > 0.02 and report.groups[0].value == "s3"
    top = report.verification[0]
    assert (top["candidate"], top["kind"], top["removed"]) == ("source = s3", "group", 250)
    without = train.select([i for i, v in enumerate(train["source"]) if v != "s3"])
    measured = accuracy(train_logreg(without, encoder.dim), eval_set)  # retrained here, independently
    assert top["measured"]["accuracy"] == pytest.approx(measured, abs=1e-12)
    drop = s["old_accuracy"] - s["new_accuracy"]
    assert top["recovered"] == pytest.approx((measured - s["new_accuracy"]) / drop)
    assert top["recovered"] > 0.8 and top["estimated_recovered"] == pytest.approx(top["recovered"], abs=0.25)
    assert f"Without source = s3: accuracy {s['new_accuracy']:.3g} → {measured:.3g}" in report.headline


def test_flags_are_a_candidate_with_their_relabels(joined, verified):
    old, new, train, eval_set, encoder = joined
    report, rows, fixed = verified
    flags = next(v for v in report.verification if v["kind"] == "flags")
    assert (flags["removed"], flags["relabelled"]) == (0, len(rows))
    labels = list(train["label"])
    for i, c in fixed.items():
        labels[i] = c
    relabelled = train.remove_columns("label").add_column("label", labels)
    measured = accuracy(train_logreg(relabelled, encoder.dim), eval_set)
    assert flags["measured"]["accuracy"] == pytest.approx(measured, abs=1e-12)
    assert flags["estimated"]["accuracy"] == pytest.approx(measured, abs=0.02)
    new_loss = report.summary["new_mean_loss"]  # the Newton step gets the size of the loss change right
    change = new_loss - flags["measured"]["mean_loss"]
    assert change > 0 and new_loss - flags["estimated"]["mean_loss"] == pytest.approx(change, rel=0.1)


def test_recoverable_is_a_fail_on_metric(verified):
    report, _, _ = verified
    best = max(v["recovered"] for v in report.verification)
    assert report.metrics()["recoverable"] == pytest.approx(best)
    assert report.breaches({"recoverable": 0.8}) and not report.breaches({"recoverable": best + 0.01})


def test_estimates_alone_without_verify(joined):
    old, new, train, eval_set, _ = joined
    report = regression_report(old, new, train, eval_set, "source", task=TASK, permutations=0, bootstrap=0)
    top = report.verification[0]
    assert top["measured"] is None and top["recovered"] is None and top["estimated"]["accuracy"] > 0
    assert report.metrics()["recoverable"] == pytest.approx(top["estimated_recovered"])
    assert "(estimated, not retrained)" in report.headline


def test_recovered_is_the_fraction_of_the_drop_won_back():
    old, new = Metrics(0.9, 0.3), Metrics(0.8, 0.5)
    assert recovered(old, new, Metrics(0.88, 0.4)) == pytest.approx(0.8)
    assert recovered(old, old, Metrics(0.95, 0.1)) is None  # nothing regressed
    assert recovered(Metrics(None, 0.3), Metrics(None, 0.5), Metrics(None, 0.35)) == pytest.approx(0.75)
