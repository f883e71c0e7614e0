"""`influence.data`: every accepted form of multi-input data gives the same batches, padded
sequences have one width across the dataset, and bad input raises errors naming the argument.
End to end, a dict-input model's scores equal brute-force autograd gradient dot products."""

import datasets
import pytest
import torch

import influence as inf
from influence.data import IGNORE_INDEX, as_data


class BagOfTokens(torch.nn.Module):
    """logits = W · mean of the embeddings of the unmasked tokens (padding-invariant)."""

    def __init__(self, vocab=13, dim=4, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim, dtype=torch.float64)
        self.head = torch.nn.Linear(dim, classes, dtype=torch.float64)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(torch.float64)[..., None]
        return self.head((self.emb(input_ids) * mask).sum(1) / mask.sum(1))


IDS = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]]
LABELS = [0, 1, 2, 1, 0]


def padded(rows, fill=0):
    width = max(len(r) for r in rows)
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows])


def tensors():
    ids = padded(IDS)
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}, torch.tensor(LABELS)


class Items(torch.utils.data.Dataset):
    """Unpadded examples as dicts holding the label, or as (dict, label) pairs."""

    def __init__(self, pairs=False):
        self.pairs = pairs

    def __len__(self):
        return len(IDS)

    def __getitem__(self, i):
        x = {"input_ids": torch.tensor(IDS[i]), "attention_mask": torch.ones(len(IDS[i]), dtype=torch.long)}
        return (x, LABELS[i]) if self.pairs else {**x, "label": LABELS[i]}


def renaming_collator(items):
    """Pads to the batch's longest and renames "label" to "labels", as Hugging Face's do."""
    ids = padded([it["input_ids"].tolist() for it in items])
    labels = torch.tensor([it["label"] for it in items])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels}


def every_form():
    inputs, y = tensors()
    hf = datasets.Dataset.from_dict({"input_ids": IDS, "attention_mask": [[1] * len(r) for r in IDS],
                                     "label": LABELS, "source": list("aabbc")})
    struct = datasets.Dataset.from_dict({"tokens": [{"input_ids": r, "attention_mask": [1] * len(r)} for r in IDS],
                                         "label": LABELS})
    return {
        "tuple of a dict": ((inputs, y), {}),
        "dict of tensors": ({**inputs, "label": y}, {}),
        "datasets, tokenizer columns": (hf, {}),
        "datasets, listed columns": (hf, {"input_column": ["input_ids", "attention_mask"]}),
        "datasets, struct column": (struct, {"input_column": "tokens"}),
        "torch Dataset of dicts": (Items(), {}),
        "torch Dataset of (dict, label)": (Items(pairs=True), {}),
        "DataLoader with a collator": (torch.utils.data.DataLoader(Items(), batch_size=2,
                                                                   collate_fn=renaming_collator), {}),
        "datasets with a collator": (hf.remove_columns("source"), {"collate_fn": lambda rows: renaming_collator(
            [{k: torch.as_tensor(v) for k, v in r.items()} for r in rows])}),
    }


@pytest.mark.parametrize("form", list(every_form()))
def test_every_form_gives_the_same_padded_batches(form):
    data, read = every_form()[form]
    expected, y = tensors()
    got = as_data(data, "train", **read)
    assert len(got) == 5
    for rows in ([0, 1, 2, 3, 4], [2], [1, 4]):  # one width for every batch: the dataset's longest
        inputs, labels = got.batch(rows)
        assert set(inputs) == {"input_ids", "attention_mask"}
        for key in inputs:
            assert inputs[key].dtype == torch.int64
            assert torch.equal(inputs[key], expected[key][rows]), (form, key, rows)
        assert torch.equal(labels, y[rows])


def test_per_token_labels_are_padded_with_the_ignore_index():
    data = datasets.Dataset.from_dict({"input_ids": IDS, "labels": IDS})
    inputs, labels = as_data(data, "train", label_column="labels").batch([2, 0])
    assert inputs["input_ids"].tolist() == [[6, 0, 0, 0], [1, 2, 3, 0]]
    assert labels.tolist() == [[6] + [IGNORE_INDEX] * 3, [1, 2, 3, IGNORE_INDEX]]


def test_plain_tensors_and_metadata_still_work():
    X, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    inputs, labels = as_data((X, y), "train").batch([3, 1])
    assert torch.equal(inputs, X[[3, 1]]) and torch.equal(labels, y[[3, 1]])
    hf = datasets.Dataset.from_dict({"input": X.tolist(), "label": y.tolist(), "day": list("abab")})
    data = as_data(hf, "train")
    assert torch.allclose(data.batch([0])[0].double(), X[:1], atol=1e-6)
    assert data.column("day") == list("abab")


@pytest.mark.parametrize("data, read, message", [
    ([1, 2, 3], {}, r"`train` must be .* got list \(a list of examples"),
    ({"input_ids": torch.zeros(2, 3)}, {}, r"`train` has no labels 'label' \(set by label_column\)"),
    ({"ids": torch.zeros(2, 3), "label": torch.zeros(2)}, {"input_column": "tokens"},
     r"`train` has no input 'tokens' \(set by input_column\)"),
    (({"a": torch.zeros(3, 2), "b": torch.zeros(2, 2)}, torch.zeros(3)), {}, "one leading example dimension"),
    (({"a": torch.zeros(3, 2)}, torch.zeros(4)), {}, "3 inputs but 4 labels"),
    (datasets.Dataset.from_dict({"text": ["a"], "label": [0]}), {}, r"no column 'input' \(set by input_column\)"),
    (datasets.Dataset.from_dict({"input_ids": [[1]], "y": [0]}), {}, r"no column 'label' \(set by label_column\)"),
    (datasets.Dataset.from_dict({"input_ids": [[1]], "label": [0]}), {"input_column": ["input_ids", "mask"]},
     r"no column\(s\) \['mask'\]"),
])
def test_unsupported_inputs_raise_errors_naming_the_argument(data, read, message):
    with pytest.raises(inf.InvalidArgumentError, match=message):
        as_data(data, "train", **read).batch([0])


def test_items_that_cannot_be_batched_raise_errors_naming_the_argument():
    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return ({"x": torch.zeros(2) if i else torch.zeros(2, 2)}, 0)

    with pytest.raises(inf.InvalidArgumentError, match="`test` have tensors of different ranks"):
        as_data(Bad(), "test").batch([0, 1])

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ()

    with pytest.raises(inf.InvalidArgumentError, match="`train` is a DataLoader over an iterable dataset"):
        as_data(torch.utils.data.DataLoader(Stream()), "train")


def brute_force_grads(model, inputs, y):
    """Tensor[n, p]: one autograd backward per example, on the unpadded tokens."""
    rows = []
    for i, ids in enumerate(IDS):
        model.zero_grad()
        one = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        torch.nn.functional.cross_entropy(model(**one), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


@pytest.mark.parametrize("form", ["datasets, tokenizer columns", "DataLoader with a collator", "dict of tensors"])
def test_dict_input_scores_equal_brute_force_gradient_dot_products(form):
    model = BagOfTokens()
    data, read = every_form()[form]
    attr = inf.Attributor(model, data, method="identity", progress=False, **read).fit()
    G = brute_force_grads(model, *tensors())
    torch.testing.assert_close(attr.scores(data), G @ G.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(attr.self_influence(), (G * G).sum(1), rtol=1e-10, atol=1e-12)
