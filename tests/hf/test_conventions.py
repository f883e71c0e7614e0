"""Hugging Face conventions: tuple outputs (`return_dict=False`), a `labels` column in a
`datasets.Dataset`, and string labels (a clear error naming the fix)."""

import pytest
import torch

import influence as inf
from tests.hf.conftest import tiny_gpt2

datasets = pytest.importorskip("datasets")


def lm_data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 19, (n, 7), generator=gen)
    return {"input_ids": ids, "labels": inf.token_labels(ids)}


def test_a_model_returning_a_tuple_gives_the_same_scores_as_its_dict_output():
    train, test = lm_data(6, 0), lm_data(2, 1)
    task = inf.LanguageModelingTask()
    model = tiny_gpt2()
    expected = inf.Attributor(model, train, task=task, method="identity", label_column="labels",
                              progress=False).fit().scores(test)

    class AsTuple(torch.nn.Module):  # as `return_dict=False` gives: (logits, past_key_values, ...)
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, **inputs):
            return self.inner(**inputs).to_tuple()

    attr = inf.Attributor(AsTuple(), train, task=task, method="identity", label_column="labels",
                          progress=False).fit()
    torch.testing.assert_close(attr.scores(test), expected, rtol=1e-5, atol=1e-7)


def test_a_model_whose_tuple_does_not_start_with_a_tensor_gets_our_error():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x):
            return ({"logits": self.fc(x)},)

    with pytest.raises(inf.InvalidArgumentError, match="first element is dict"):
        data = (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
        inf.Attributor(Odd(), data, method="identity", progress=False).fit()


def test_a_labels_column_of_a_dataset_is_found_without_label_column():
    rows = lm_data(6, 2)
    table = datasets.Dataset.from_dict({k: v.tolist() for k, v in rows.items()})
    attr = inf.Attributor(tiny_gpt2(), table, task=inf.LanguageModelingTask(), method="identity",
                          progress=False).fit()
    by_dict = inf.Attributor(tiny_gpt2(), rows, task=inf.LanguageModelingTask(), method="identity",
                             label_column="labels", progress=False).fit()
    torch.testing.assert_close(attr.scores(table), by_dict.scores(rows), rtol=1e-5, atol=1e-7)


def test_string_labels_raise_an_error_naming_the_mapping_to_make():
    table = datasets.Dataset.from_dict({"input": [[0.0, 1.0], [1.0, 0.0]], "label": ["pos", "neg"]})
    model = torch.nn.Linear(2, 2)
    message = r"`train` hold strings.*\['neg', 'pos'\].*class_encode_column"
    with pytest.raises(inf.InvalidArgumentError, match=message):
        inf.Attributor(model, table, method="identity", progress=False).fit()
    encoded = table.class_encode_column("label")
    inf.Attributor(model, encoded, method="identity", progress=False).fit()  # the fix named works
