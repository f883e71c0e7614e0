"""`app.session.Session`: the tables behind the tabs, against independent computations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from influence.data import as_data
from influence.errors import InvalidArgumentError

from app.session import Session
from tests.app.tiny import BOLD, SCRIPT


@pytest.fixture(scope="module")
def session(digits_setup, tmp_path_factory):
    setup = replace(digits_setup, flags_path=tmp_path_factory.mktemp("flags") / "flags.json")
    return Session(setup, max_bad=10, k_suspects=5)


def dense_reference(session):
    """Scores of the bad predictions over all training examples, from one dense `scores` call."""
    X, y = as_data(session.setup.eval, "eval").batch(range(len(session.setup.eval)))
    return session.attr.scores((X[session.bad], y[session.bad])).double()


def test_bad_predictions_are_the_worst_wrong_ones(session):
    X, y = as_data(session.setup.eval, "eval").batch(range(len(session.setup.eval)))
    with torch.no_grad():
        logits = session.setup.model(X)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    wrong = torch.nonzero(logits.argmax(1) != y).flatten()
    assert session.bad.tolist() == wrong[loss[wrong].argsort(descending=True)][:10].tolist()
    table = session.predictions("all", "all", "right", 1.0)
    assert all(table["correct"] == "yes") and all(table["loss"] >= 1.0 - 1e-4)


def test_suspect_scores_match_dense_scores(session):
    S = dense_reference(session)
    suspects = session.suspect_scores()
    np.testing.assert_allclose(suspects["total harm"], -S.sum(dim=0).numpy(), rtol=1e-5, atol=1e-6)
    values, ids = torch.topk(S, 5, dim=1, largest=False)
    counts = torch.bincount(ids[values < 0], minlength=session.n_train).numpy()
    np.testing.assert_array_equal(suspects["bad predictions harmed"], counts)
    np.testing.assert_allclose(suspects["self-influence"], session.attr.self_influence().numpy(), rtol=1e-5)
    top = session.suspects("total harm", 5)
    assert top["train id"].tolist() == np.argsort(S.sum(dim=0).numpy(), kind="stable")[:5].tolist()


def test_group_harm_sums_the_scores_of_each_group(session):
    S = dense_reference(session)
    sources = np.array(session.setup.train["source"])
    table = session.group_harm("source")
    for group, harm, count in zip(table["group"], table["harm"], table["count"]):
        members = torch.from_numpy(sources == group)
        assert harm == pytest.approx(-S[:, members].sum().item(), rel=1e-4, abs=1e-4)
        assert count == members.sum().item()
    members = session.group_members("source", table["group"][0])
    assert set(members["source"]) == {table["group"][0]}


def test_flags_show_in_tables(session):
    session.flag(7, "mislabeled", "note")
    assert session.trace(0, 3).harmful.columns.tolist()[-1] == "flag"
    assert session.suspects("self-influence", session.n_train).set_index("train id").at[7, "flag"] == "mislabeled"
    assert session.flag_table()["train_id"].tolist() == [7]
    session.flag(7, "clear")
    assert session.flag_table().empty


def test_bad_arguments_name_what_is_wrong(session, digits_setup):
    with pytest.raises(InvalidArgumentError, match="eval_id"):
        session.trace(-1)
    with pytest.raises(InvalidArgumentError, match="unknown class"):
        session.predictions("eleven")
    with pytest.raises(InvalidArgumentError, match="sort_by"):
        session.suspects("alphabetical")
    with pytest.raises(InvalidArgumentError, match="column"):
        session.group_harm("day")
    with pytest.raises(InvalidArgumentError, match="train_id"):
        session.flag(10**6, "keep")


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
