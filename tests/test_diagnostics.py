"""influence.diagnostics: a typed, frozen record that still reads as the flat mapping the
diagnostics always were, kept through an index folder; a query hands back a new one."""

import dataclasses

import pytest

import influence as inf
from tests.index_worker import problem
from tests.test_index import query

pytestmark = pytest.mark.filterwarnings("ignore:the model looks untrained")


def test_fields_are_typed_and_the_mapping_view_is_flat(tmp_path):
    model, X, y = problem()
    attr = inf.Attributor(model, (X, y), method="exact", cache_dir=tmp_path, progress=False)
    attr.fit()
    d = attr.diagnostics
    assert isinstance(d, inf.Diagnostics)
    assert (d.method, d.n_train, d.n_params, d.curvature) == ("exact", 300, 53, "ggn")
    assert d["method"] == "exact" and d["n_train"] == 300 and d.get("absent") is None
    assert d["condition_number"] == d.method_info["condition_number"] > 1
    assert dict(d) == d.to_dict() and "last_solve" not in d
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.n_train = 1
    loaded = inf.Attributor.load(tmp_path, model)
    assert loaded.diagnostics == d


def test_a_query_hands_back_a_new_record_with_its_solve():
    model, X, y = problem()
    attr = inf.Attributor(model, (X, y), method="cg", progress=False).fit()
    before = attr.diagnostics
    attr.scores(query())
    assert "last_solve" not in before and before.last_solve is None
    assert attr.diagnostics.last_solve["converged"] is True
    assert dataclasses.replace(attr.diagnostics, last_solve=None) == before
