"""Fixtures of the report tests (scenarios built in `tests/report/scenarios.py`)."""

import pytest

import influence as inf
from tests.report.scenarios import WEIGHT_DECAY, build


@pytest.fixture(scope="session")
def flipped():
    """Labels flipped in source s3."""
    return build("labels", "s3")


@pytest.fixture(scope="session")
def flipped_report(flipped):
    from influence.report import regression_report

    old, new, train, eval_set, _ = flipped
    task = inf.ClassificationTask(weight_decay=WEIGHT_DECAY)
    return regression_report(old, new, train, eval_set, "source", task=task, permutations=199, bootstrap=100)
