"""The app opened on a report folder: the report's model, index and eval data with no other flag,
the Regression tab, the same top group as the report, and mismatches refused by fingerprint."""

from __future__ import annotations

import json
import shutil

import pytest

from influence_app import report
from influence_app.session import Session
from influence_app.sources import attach_report, open_report
from influence.errors import InvalidArgumentError
from influence.report.readable import sig

REGRESSIONS = "the report's regressions"


@pytest.fixture(scope="module")
def opened(demo_report, tmp_path_factory):
    folder = tmp_path_factory.mktemp("copy") / "report"
    shutil.copytree(demo_report, folder)  # tests below alter copies, never the shared folder
    return folder, open_report(folder)


def test_a_report_folder_opens_alone(opened):
    folder, setup = opened
    doc = json.loads((folder / "report.json").read_text())
    assert setup.report == doc and setup.report_folder == folder
    assert setup.modality == "image" and setup.image_shape == (8, 8) and setup.group_columns == ["source"]
    assert setup.class_names == [str(c) for c in range(10)] and setup.flags_path == folder / "flags.json"
    assert len(setup.eval) == doc["summary"]["n_eval"] and len(setup.train) == doc["summary"]["n_train"]
    assert setup.attributor.diagnostics["damping"] == pytest.approx(doc["diagnostics"]["damping"])


def test_eval_data_needs_no_metadata_columns(opened, tmp_path):
    import datasets

    folder = tmp_path / "report"
    shutil.copytree(opened[0], folder)
    path = str(folder / "data" / "eval.parquet")
    datasets.Dataset.from_parquet(path).remove_columns(["source", "index"]).to_parquet(path)
    session = Session(open_report(folder))  # the fingerprint covers inputs and labels only
    assert "source" not in session.setup.eval.column_names
    table, _ = session.predictions("all", "all", "all", 0)
    assert "source" not in table.columns and len(session.trace(int(table["eval id"][0]), 3).harmful) == 3
    assert session.group_harm("source")["group"][0] == "batch-9"


def test_the_groups_tab_and_the_report_rank_the_same_group_first(opened):
    _, setup = opened
    session = Session(setup)
    assert next(iter(session.queries)) == REGRESSIONS  # the default predictions of the tabs
    table = session.group_harm("source", REGRESSIONS)
    groups = {g["value"]: g for g in setup.report["groups"] if g["column"] == "source"}
    assert table["group"][0] == setup.report["groups"][0]["value"] == "batch-9"
    for value, harm, first in zip(table["group"], table["harm"], table["first-order harm"]):
        assert harm == pytest.approx(groups[value]["harm"], rel=1e-6)
        assert first == pytest.approx(groups[value]["first_order_harm"], rel=1e-6)
    suspects = session.suspects("harm", 5, REGRESSIONS)
    listed = [e["train_index"] for e in setup.report["harmful_examples"][:5]]
    assert suspects["train id"].tolist() == listed


def test_the_app_and_the_report_count_the_same_regressions_harmed(opened):
    """One rule, `influence.harm.harmed_counts`: a training example harms a regression when it is
    among that regression's k most harmful with a negative score."""
    _, setup = opened
    doc = setup.report
    k = doc["settings"]["k"]
    harmed = Session(setup, k_suspects=k).suspect_scores(REGRESSIONS)["harmed"].to_numpy()
    listed = doc["harmful_examples"] + doc["suspects"]
    assert listed and harmed.sum() > 0
    for entry in listed:
        i = entry["train_index"]
        recount = sum(h["train_index"] == i and h["score"] < 0
                      for r in doc["regressions"] for h in r["harmful"][:k])
        assert harmed[i] == entry["harmful_to"] == recount


def test_report_tables_read_at_three_significant_digits(opened):
    _, setup = opened
    doc = setup.report
    groups = report.groups_table(doc)
    assert groups["harm"].tolist() == [sig(g["harm"]) for g in doc["groups"]]
    assert groups["share"][0] == "100%" and "`" not in " ".join(groups["finding"])  # no literal backticks
    regressions = report.regressions_table(doc)
    assert regressions["eval id"].tolist() == [r["eval_index"] for r in doc["regressions"]]
    verification = report.verification_table(doc)
    assert verification["candidate"][0] == "source = batch-9" and verification["recovered (measured)"][0].endswith("%")
    assert "Without source = batch-9: accuracy" in report.verification_text(doc)
    assert doc["summary"]["headline"].split(":")[0] in report.summary_text(doc)


def test_the_regression_tab_appears_only_with_a_report(opened, tiny_text):
    pytest.importorskip("gradio")
    from influence_app.ui import build

    def labels(page) -> set:
        return {c.get("props", {}).get("label") for c in page.config["components"]}

    assert "Regression" not in labels(build(Session(tiny_text)))
    assert {"Regression", "regressions (click a row to trace it)"} <= labels(build(Session(opened[1])))


def test_a_report_opens_on_its_regression_tab_with_the_reports_counts(opened, tiny_text):
    """Why 7: a report opened on Predictions, and the tab counted "400 regressions" where the
    report says 300 of 1,384 plus 100; empty Groups tables showed headers "1 2 3"."""
    pytest.importorskip("gradio")
    from influence.report.render_md import regressions_sentence
    from influence_app.ui import build

    def selected(page):
        return next(c["props"]["selected"] for c in page.config["components"]
                    if c["type"] == "tabs")

    def headers(page, elem_id):
        return next(c["props"]["value"]["headers"] for c in page.config["components"]
                    if c.get("props", {}).get("elem_id") == elem_id)

    page = build(Session(opened[1]))
    assert selected(page) == "regression" and selected(build(Session(tiny_text))) == "predictions"
    s = opened[1].report["summary"]
    assert regressions_sentence(s)[:-1] in report.summary_text(opened[1].report)
    assert f"{s['n_regressions'] - s['n_loss_rise']} of the {s['n_flipped']} eval examples" in \
        report.summary_text(opened[1].report)
    assert headers(page, "groups-table") == ["group", "harm", "estimator", "share", "count",
                                             "first-order harm"]


def test_another_eval_set_or_model_is_refused_naming_what_differs(opened, digits_setup, tmp_path):
    folder, _ = opened
    with pytest.raises(InvalidArgumentError, match=r"the new model's weights differ \(new_model fingerprint\)"):
        attach_report(digits_setup, folder)  # the same digits eval split, another model
    broken = tmp_path / "report"
    shutil.copytree(folder, broken)
    import datasets

    eval_data = datasets.Dataset.from_parquet(str(broken / "data" / "eval.parquet"))
    eval_data.select(range(len(eval_data) - 1)).to_parquet(str(broken / "data" / "eval.parquet"))
    with pytest.raises(InvalidArgumentError, match=r"the eval data differ \(eval fingerprint\)"):
        open_report(broken)
    shutil.copy(folder / "data" / "eval.parquet", broken / "data" / "eval.parquet")
    shutil.copy(folder / "model" / "old.safetensors", broken / "model" / "new.safetensors")
    with pytest.raises(InvalidArgumentError, match=r"the new model's weights differ \(new_model fingerprint\)"):
        open_report(broken)


def test_a_folder_without_a_report_says_how_to_make_one(tmp_path):
    with pytest.raises(InvalidArgumentError, match="has no bundle.json: it was not written by `influence report`"):
        open_report(tmp_path)


def test_the_verdicts_fix_is_estimated_beside_the_reports(opened, tmp_path):
    """Why 6 / item 4: removing the top group by verdicts gives the report's own estimate for it."""
    from dataclasses import replace

    from influence_app.report import flags_fix, flags_fix_text

    _, setup = opened
    session = Session(replace(setup, flags_path=tmp_path / "flags.json"))
    assert "change nothing yet" in flags_fix_text(session)
    top = setup.report["groups"][0]
    session.flag(session.members(top["column"], top["value"]), "remove", bulk=True)
    mine = flags_fix(session)
    name = f"{top['column']} = {top['value']}"
    theirs = next(v for v in setup.report["verification"] if v["candidate"] == name)
    assert mine["removed"] == theirs["removed"]
    assert mine["estimated"]["accuracy"] == pytest.approx(theirs["estimated"]["accuracy"], abs=1e-9)
    assert mine["estimated_recovered"] == pytest.approx(theirs["estimated_recovered"], rel=1e-6)
    assert flags_fix_text(session).startswith("With the flagged examples")
