"""`app.session.Session`: the tables behind the tabs, against independent computations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from influence_app.session import Session
from influence.data import as_data
from influence.errors import InvalidArgumentError
from tests.app.tiny import BOLD, SCRIPT

WORST = "worst wrong predictions"


@pytest.fixture(scope="module")
def session(digits_setup, tmp_path_factory):
    setup = replace(digits_setup, flags_path=tmp_path_factory.mktemp("flags") / "flags.json")
    return Session(setup, max_bad=10, k_suspects=5)


def dense_reference(session):
    """Scores of the worst wrong predictions over all training examples, from one dense `scores` call."""
    X, y = as_data(session.setup.eval, "eval").batch(range(len(session.setup.eval)))
    return session.attr.scores((X[session.bad], y[session.bad])).double()


def test_bad_predictions_are_the_worst_wrong_ones(session):
    X, y = as_data(session.setup.eval, "eval").batch(range(len(session.setup.eval)))
    with torch.no_grad():
        logits = session.setup.model(X)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    wrong = torch.nonzero(logits.argmax(1) != y).flatten()
    assert session.bad.tolist() == wrong[loss[wrong].argsort(descending=True)][:10].tolist()
    table, total = session.predictions("all", "all", "right", 1.0, page_size=500)
    assert all(table["correct"] == "yes") and all(table["loss"] >= 1.0 - 1e-6)
    assert total == int(((logits.argmax(1) == y) & (loss >= 1.0)).sum())


def test_every_prediction_is_reachable_by_page_and_search(session):
    n = len(session.setup.eval)
    pages = [session.predictions("all", "all", "all", 0, page=p, page_size=25)[0] for p in range(1, -(-n // 25) + 1)]
    assert sum(len(p) for p in pages) == n and len({j for p in pages for j in p["eval id"]}) == n
    assert session.predictions("all", "all", "all", 0, search="17")[0]["eval id"].tolist() == [17]
    by_source = session.predictions("all", "all", "all", 0, search="batch-3", page_size=500)[0]
    assert len(by_source) and set(by_source["source"]) == {"batch-3"}
    with pytest.raises(InvalidArgumentError, match="`page` must be between 1 and"):
        session.predictions("all", "all", "all", 0, page=10**4)


def test_suspects_use_the_harm_definition(session):
    S = dense_reference(session)
    suspects = session.suspect_scores(WORST)
    np.testing.assert_allclose(suspects["harm"], -S.sum(dim=0).numpy() / session.n_train, rtol=1e-5, atol=1e-9)
    values, ids = torch.topk(S, 5, dim=1, largest=False)
    counts = torch.bincount(ids[values < 0], minlength=session.n_train).numpy()
    np.testing.assert_array_equal(suspects["harmed"], counts)
    np.testing.assert_allclose(suspects["self-influence"], session.attr.self_influence().numpy(), rtol=1e-5)
    top = session.suspects("harm", 5, WORST)
    assert top["train id"].tolist() == np.argsort(S.sum(dim=0).numpy(), kind="stable")[:5].tolist()


def test_group_harm_is_the_first_order_sum_or_the_group_removal_step(session):
    S = dense_reference(session)
    sources = np.array(session.setup.train["source"])
    table = session.group_harm("source", WORST)
    assert set(table["estimator"]) == {"newton"}  # a small model: group removal
    for group, first, count in zip(table["group"], table["first-order harm"], table["count"]):
        members = torch.from_numpy(sources == group)
        assert first == pytest.approx(-S[:, members].sum().item() / session.n_train, rel=1e-4, abs=1e-9)
        assert count == members.sum().item()
    assert np.isclose(table["share"][table["harm"] > 0].sum(), 1.0)
    members = session.group_members("source", table["group"][0], WORST)
    assert set(members["source"]) == {table["group"][0]}


def test_flags_with_corrected_labels_and_bulk_flags(session):
    session.flag(7, "mislabeled", "3", "note")
    assert session.trace(0, 3).harmful.columns.tolist()[-1] == "flag"
    assert session.suspects("self-influence", session.n_train, WORST).set_index("train id").at[7, "flag"] == \
        "mislabeled → 3"
    flags = session.flag_table()
    assert flags[["train id", "verdict", "corrected label"]].values.tolist() == \
        [[7, "mislabeled", "3"]]
    assert flags["source"][0] == session.setup.train[7]["source"]
    ids = session.members("source", "batch-2")
    outcome = session.flag(ids + [7], "remove", bulk=True)
    assert (outcome.changed, outcome.kept) == (len(ids), 1)
    assert len(session.flag_table()) == len(ids) + 1
    assert session.flags.get(7) == "mislabeled → 3"  # the hand-made verdict was kept
    session.flag(ids + [7], "clear")
    assert session.flag_table().empty


def test_bad_arguments_name_what_is_wrong(session):
    with pytest.raises(InvalidArgumentError, match="eval example must be an integer"):
        session.trace(-1)
    with pytest.raises(InvalidArgumentError, match="unknown class"):
        session.predictions("eleven")
    with pytest.raises(InvalidArgumentError, match="sort_by"):
        session.suspects("alphabetical")
    with pytest.raises(InvalidArgumentError, match="`queries` must be one of"):
        session.suspects("harm", 5, "the report's regressions")  # no report is open
    with pytest.raises(InvalidArgumentError, match="column"):
        session.group_harm("day")
    with pytest.raises(InvalidArgumentError, match="training example must be an integer"):
        session.flag(10**6, "keep")
    with pytest.raises(InvalidArgumentError, match="choose a verdict"):
        session.flag(3, None)
    with pytest.raises(InvalidArgumentError, match="unknown class 'eleven'"):
        session.flag(3, "mislabeled", "eleven")


def test_session_refuses_training_data_of_another_length(digits_setup):
    with pytest.raises(InvalidArgumentError, match="rows"):
        Session(replace(digits_setup, train=digits_setup.train.select(range(10))))


def test_text_and_table_sessions_explain_new_inputs(tiny_text, tiny_table):
    text = Session(tiny_text)
    trace = text.explain(f"{SCRIPT} great", k=2)
    assert trace.label is None and trace.target == trace.predicted == "fresh"
    assert trace.query == f"{SCRIPT} great" and len(trace.harmful) == 2
    assert text.explain("awful", label="fresh", k=2).target == "fresh"
    table = Session(tiny_table)
    trace = table.explain({"color": BOLD, "size": "1.5"}, k=3)
    assert trace.predicted in ("small", "big") and set(trace.harmful["color"]) <= {"red", BOLD, SCRIPT}


def test_downloads_keep_full_precision(session):
    trace = session.trace(int(session.bad[0]), 4)
    path = session.download(trace.harmful, "trace")
    import pandas as pd

    again = pd.read_csv(path)
    np.testing.assert_array_equal(again["score"].to_numpy(), trace.harmful["score"].to_numpy())
    assert "/" not in path.name
