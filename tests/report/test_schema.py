"""report.json against the schema shipped in the package (jsonschema and the fallback validator)."""

import copy

import pytest

from influence.report import SchemaError, validate
from influence.report.schema import schema


@pytest.fixture(scope="module")
def doc(flipped_report):
    return flipped_report.to_dict()


@pytest.mark.parametrize("use_jsonschema", [True, False])
def test_report_matches_its_schema(doc, use_jsonschema):
    if use_jsonschema:
        pytest.importorskip("jsonschema")
    validate(doc, use_jsonschema=use_jsonschema)


@pytest.mark.parametrize("use_jsonschema", [True, False])
@pytest.mark.parametrize("breakage", ["missing groups", "bad confidence", "bad kind", "version", "string count"])
def test_broken_reports_are_rejected(doc, use_jsonschema, breakage):
    if use_jsonschema:
        pytest.importorskip("jsonschema")
    bad = copy.deepcopy(doc)
    if breakage == "missing groups":
        del bad["groups"]
    elif breakage == "bad confidence":
        bad["groups"][0]["confidence"] = 1.5
    elif breakage == "bad kind":
        bad["regressions"][0]["kind"] = "mystery"
    elif breakage == "version":
        bad["schema_version"] = "0.9"
    else:
        bad["suspects"] = [dict(bad["groups"][0], train_index="7")]
    with pytest.raises(SchemaError, match="schema"):
        validate(bad, use_jsonschema=use_jsonschema)


def test_schema_is_shipped_as_package_data():
    s = schema()
    assert s["properties"]["schema_version"]["const"] == "1.0"
    assert {"groups", "regressions", "suspects"} <= set(s["required"])
