"""Report.breaches: the thresholds behind `influence report --fail-on`."""

import pytest

import influence as inf


def test_share_threshold_counts_only_confident_groups(flipped_report):
    top = flipped_report.groups[0]
    assert flipped_report.breaches({"share": 0.5}) and "share" in flipped_report.breaches({"share": 0.5})[0]
    assert flipped_report.breaches({"share": top.share + 0.01}) == []
    assert flipped_report.breaches({"share": 0.5}, min_confidence=1.0) == []  # no group reaches confidence 1


def test_other_metrics_and_unknown_names(flipped_report):
    s = flipped_report.summary
    assert flipped_report.breaches({"regressions": s["n_flipped"]})
    assert not flipped_report.breaches({"regressions": s["n_flipped"] + 1})
    drop = s["old_accuracy"] - s["new_accuracy"]
    assert bool(flipped_report.breaches({"accuracy_drop": drop - 1e-9})) and not flipped_report.breaches(
        {"accuracy_drop": drop + 1e-9})
    with pytest.raises(inf.InvalidArgumentError, match="unknown metric"):
        flipped_report.breaches({"sharee": 0.5})
