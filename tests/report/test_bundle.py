"""`influence.report.bundle`: a report folder holds what it was computed on, is reopened as it
was, and refuses an index, model or eval set that is not the report's, naming what differs."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

import influence as inf
from influence.errors import IndexFolderError
from influence.report import regression_report
from influence.report.bundle import open_bundle, save_bundle
from tests.report.scenarios import WEIGHT_DECAY, build

TASK = inf.ClassificationTask(weight_decay=WEIGHT_DECAY)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, monkeypatch_module):
    old, new, train, eval_set, encoder = build("labels", "s3")
    (tmp_path_factory.getbasetemp() / "factories_bundle.py").write_text(
        f"import torch\n\ndef logreg():\n    return torch.nn.Linear({encoder.dim}, 2).double()\n")
    monkeypatch_module.syspath_prepend(str(tmp_path_factory.getbasetemp()))
    out = tmp_path_factory.mktemp("bundle") / "report"
    report = regression_report(old, new, train, eval_set, "source", task=TASK, permutations=9, bootstrap=5,
                               class_names=["no", "yes"], cache_dir=out / "index")
    report.save(out)
    save_bundle(out, old_model=old, new_model=new, train=train, eval=eval_set, factory="factories_bundle:logreg",
                task=TASK, group_by=["source"], class_names=["no", "yes"])
    return out, report


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_a_report_folder_reopens_as_it_was(folder):
    out, report = folder
    opened = open_bundle(out)
    assert opened.report["fingerprints"] == report.fingerprints and opened.class_names == ["no", "yes"]
    assert opened.task.weight_decay == WEIGHT_DECAY and opened.bundle["group_by"] == ["source"]
    rows = [r.eval_index for r in report.regressions]
    again = opened.attributor.group_scores(opened.eval.select(rows), "source")  # the reopened index
    first_order = dict(zip(again.groups, (-again.sum.sum(dim=0) / len(opened.train)).tolist()))
    for g in report.groups:
        assert first_order[g.value] == pytest.approx(g.first_order_harm, rel=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "data", "index", "model", "report.html",
                                                     "report.json", "report.md"]
    assert json.loads((out / "bundle.json").read_text())["weights"]["new"] == "model/new.safetensors"


def test_an_index_of_another_model_is_refused(folder, tmp_path):
    out, _ = folder
    copy = tmp_path / "report"
    shutil.copytree(out, copy)
    state = load_file(copy / "model" / "new.safetensors")
    save_file({k: v * 1.001 for k, v in state.items()}, copy / "model" / "new.safetensors")
    report = json.loads((copy / "report.json").read_text())
    import torch

    from influence.report.fingerprint import model_fingerprint

    model = torch.nn.Linear(state["weight"].shape[1], 2).double()
    model.load_state_dict({k: v * 1.001 for k, v in state.items()})
    report["fingerprints"]["new_model"] = model_fingerprint(model)  # the report agrees, the index does not
    (copy / "report.json").write_text(json.dumps(report))
    with pytest.raises(IndexFolderError, match="does not belong to this report's new model"):
        open_bundle(copy)
