"""report.json against the schema shipped in the package (validated with jsonschema)."""

import copy

import pytest

from influence.report import SCHEMA_VERSION, SchemaError, validate
from influence.report.schema import schema


@pytest.fixture(scope="module")
def doc(flipped_report):
    return flipped_report.to_dict()


def test_report_matches_its_schema(doc):
    validate(doc)
    assert doc["schema_version"] == SCHEMA_VERSION == "2.0"


@pytest.mark.parametrize("breakage", ["missing groups", "bad confidence", "bad kind", "version", "string count",
                                      "no verification", "bad recovered", "bad fingerprint", "no loss change"])
def test_broken_reports_are_rejected(doc, breakage):
    bad = copy.deepcopy(doc)
    if breakage == "missing groups":
        del bad["groups"]
    elif breakage == "bad confidence":
        bad["groups"][0]["confidence"] = 1.5
    elif breakage == "bad kind":
        bad["regressions"][0]["kind"] = "mystery"
    elif breakage == "version":
        bad["schema_version"] = "1.0"
    elif breakage == "string count":
        bad["suspects"] = [dict(bad["groups"][0], train_index="7")]
    elif breakage == "no verification":
        del bad["verification"]
    elif breakage == "bad recovered":
        bad["verification"][0]["recovered"] = "97%"
    elif breakage == "bad fingerprint":
        bad["fingerprints"]["eval"] = "not-a-digest"
    else:
        del bad["regressions"][0]["harmful"][0]["loss_change"]
    with pytest.raises(SchemaError, match="schema"):
        validate(bad)


def test_schema_is_shipped_as_package_data():
    s = schema()
    assert s["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert {"groups", "regressions", "suspects", "verification", "fingerprints"} <= set(s["required"])
