"""The Regression tab: a report folder from `influence.report`, tabulated as it is."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from app import report
from app.session import Session


@pytest.fixture(scope="module")
def report_folder(tiny_text, tmp_path_factory):
    """A real report: the tiny text model (new) against a copy with its weights negated (old)."""
    regression = pytest.importorskip("influence.report", reason="influence.report is not available")
    old = torch.nn.Linear(*reversed(tiny_text.model.weight.shape))
    with torch.no_grad():
        old.weight.copy_(-tiny_text.model.weight)
        old.bias.copy_(-tiny_text.model.bias)
    made = regression.regression_report(old, tiny_text.model, tiny_text.train, tiny_text.eval, group_by="critic",
                                        task=tiny_text.attributor.task, permutations=0, bootstrap=0, explain=0)
    folder = tmp_path_factory.mktemp("report")
    made.save(folder)
    return folder


def test_report_tables_are_the_reports_numbers(report_folder):
    doc = json.loads((report_folder / "report.json").read_text())
    assert report.load_report(report_folder) == doc
    groups = report.groups_table(doc)
    assert groups["harm"].tolist() == [g["harm"] for g in doc["groups"]]
    regressions = report.regressions_table(doc)
    assert regressions["eval id"].tolist() == [r["eval_index"] for r in doc["regressions"]]
    assert len(report.suspects_table(doc)) == len(doc["suspects"])
    assert doc["summary"]["headline"] in report.summary_text(doc)


def test_the_regression_tab_appears_only_with_a_report(tiny_text, report_folder):
    pytest.importorskip("gradio")
    from app.ui import build

    def labels(page) -> set:
        return {c.get("props", {}).get("label") for c in page.config["components"]}

    assert "Regression" not in labels(build(Session(tiny_text)))
    page = build(Session(replace(tiny_text, report_folder=report_folder)))
    assert {"Regression", "regressions (click a row to trace it with the opened model)"} <= labels(page)


def test_a_folder_without_a_report_is_refused(tmp_path):
    from influence.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="report.json"):
        report.load_report(tmp_path)
