"""`influence.parameters`: which parameters a task attributes (names, patterns, defaults) and
the report of what was attributed and held fixed."""

import pytest
import torch
from torch import nn

import influence as inf
from influence.parameters import parameter_report, select_parameters


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class Encoder(nn.Module):
    """Names like a Hugging Face model: `bert.encoder.layer.N.query.weight`, `classifier.*`."""

    def __init__(self):
        super().__init__()
        self.bert = nn.Module()
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList([Block() for _ in range(12)])
        self.classifier = nn.Linear(4, 2)


def test_default_is_every_trainable_parameter_in_model_order():
    model = Encoder()
    model.bert.requires_grad_(False)
    assert select_parameters(model, None) == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("wanted, expected", [
    (["classifier"], ["classifier.weight", "classifier.bias"]),
    (["classifier.bias"], ["classifier.bias"]),
    (["bert.encoder.layer.11"], [f"bert.encoder.layer.11.{m}" for m in
                                 ("query.weight", "query.bias", "norm.weight", "norm.bias")]),
    (["encoder.layer.11.*"], [f"bert.encoder.layer.11.{m}" for m in
                              ("query.weight", "query.bias", "norm.weight", "norm.bias")]),  # from inside
    (["layer.1?.query"], [f"bert.encoder.layer.{i}.query.{w}" for i in (10, 11) for w in ("weight", "bias")]),
    (["*.norm.weight", "classifier.weight"],
     [f"bert.encoder.layer.{i}.norm.weight" for i in range(12)] + ["classifier.weight"]),
])
def test_names_and_patterns(wanted, expected):
    assert select_parameters(Encoder(), wanted) == expected


def test_a_match_from_the_root_wins_over_matches_inside():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    assert select_parameters(model, ["1"]) == ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"]


def test_named_frozen_parameters_are_attributed():
    model = Encoder().requires_grad_(False)
    assert select_parameters(model, ["classifier"]) == ["classifier.weight", "classifier.bias"]
    with pytest.raises(inf.InvalidArgumentError, match="no trainable parameters.*parameters="):
        select_parameters(model, None)


def test_unmatched_patterns_name_the_modules():
    with pytest.raises(inf.InvalidArgumentError, match=r"\['decoder\.\*'\].*bert\.encoder\.layer\.\*\.query"):
        select_parameters(Encoder(), ["classifier", "decoder.*"])


def test_report_sizes_add_up_and_group_layers():
    model = Encoder()
    names = select_parameters(model, ["*query*"])
    report = parameter_report(model, names)
    total = sum(p.numel() for p in model.parameters())
    assert report["attributed"]["numel"] == 12 * 20
    assert report["attributed"]["numel"] + report["held_fixed"]["numel"] == total
    assert report["attributed"]["groups"] == {"bert.encoder.layer.*.query.weight": 12 * 16,
                                              "bert.encoder.layer.*.query.bias": 12 * 4}
    assert report["held_fixed"]["tensors"] == 12 * 2 + 2 and report["dtypes"] == ["float32"]


@pytest.mark.filterwarnings("ignore:the model looks untrained")
def test_a_task_passes_its_patterns_to_the_attributor():
    model = Encoder()
    X, y = torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 1, 0])
    model.forward = lambda x: model.classifier(model.bert.encoder.layer[11].query(x))
    task = inf.ClassificationTask(parameters=["encoder.layer.11.query"])
    attr = inf.Attributor(model, (X, y), task=task, method="identity", progress=False).fit()
    assert attr.fm.names == ["bert.encoder.layer.11.query.weight", "bert.encoder.layer.11.query.bias"]
