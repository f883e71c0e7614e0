"""Hugging Face models with dict batches, no wrappers: every method at its defaults on a tiny
randomly initialised BERT, gradients against brute-force autograd, a padding collator, a
bfloat16 model attributed in float32, a GPT-2 language model, and errors naming the argument."""

import copy

import datasets
import pytest
import torch

import influence as inf
from tests.hf.conftest import sentences, tiny_bert, tiny_gpt2

N_TRAIN, N_TEST = 16, 3
pytestmark = pytest.mark.filterwarnings("ignore:the model looks untrained")  # random weights, on purpose


def tokenized(tokenizer, n, seed, classes=3):
    text = sentences(n, seed)
    encoded = tokenizer(text)
    labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed + 100)).tolist()
    return datasets.Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                                       "label": labels, "text": text})


def brute_force_grads(model, data, names=None):
    """Tensor[n, p]: one autograd backward per unpadded example, over `names` (default: all)."""
    params = dict(model.named_parameters())
    names = names or list(params)
    rows = []
    for row in data:
        model.zero_grad()
        one = {k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask")}
        logits = model(**one).logits.float()
        torch.nn.functional.cross_entropy(logits, torch.tensor([row["label"]])).backward()
        rows.append(torch.cat([params[n].grad.float().reshape(-1) for n in names]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def data(tokenizer):
    return tokenized(tokenizer, N_TRAIN, seed=1), tokenized(tokenizer, N_TEST, seed=2)


@pytest.mark.filterwarnings("ignore::influence.InfluenceWarning")
@pytest.mark.parametrize("method", sorted(inf.METHODS))
def test_every_method_at_defaults_takes_dict_batches(method, data):
    train, test = data
    model = tiny_bert()
    options = {"ekfac": {"skip_unsupported": True},  # the embeddings and LayerNorms are not nn.Linear
               "lissa": {"hvp_batch_size": 8, "max_iter": 50}}.get(method, {})  # stochastic: O(κ) full-batch steps
    # would take minutes through a transformer; minibatch products also slice dict inputs
    attr = inf.Attributor(model, train, method=method, progress=False, **options).fit()
    scores, self_influence = attr.scores(test), attr.self_influence()
    assert scores.shape == (N_TEST, N_TRAIN) and torch.isfinite(scores).all()
    assert self_influence.shape == (N_TRAIN,) and torch.isfinite(self_influence).all()
    top = attr.top_k(test, k=4)
    assert torch.equal(top.helpful.scores, scores.topk(4, dim=1).values)
    assert attr.diagnostics["parameters"]["attributed"]["numel"] == sum(p.numel() for p in model.parameters())
    if method == "identity":
        G, Gt = brute_force_grads(model, train), brute_force_grads(model, test)
        torch.testing.assert_close(scores, Gt @ G.T, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(self_influence, (G * G).sum(1), rtol=1e-4, atol=1e-6)


def test_ekfac_names_the_layers_it_cannot_factor(data):
    with pytest.raises(inf.InvalidArgumentError, match=r"embeddings.*skip_unsupported=True"):
        inf.Attributor(tiny_bert(), data[0], method="ekfac", progress=False).fit()


def test_a_padding_collator_in_a_dataloader_gives_the_same_scores(data, tokenizer):
    train, test = data
    model = tiny_bert()
    collator = transformers_collator(tokenizer)
    items = train.remove_columns("text").with_format(None)
    loader = torch.utils.data.DataLoader(list(items), batch_size=4, collate_fn=collator)
    from_loader = inf.Attributor(model, loader, method="identity", progress=False).fit()
    from_columns = inf.Attributor(model, train, method="identity", progress=False).fit()
    torch.testing.assert_close(from_loader.scores(test), from_columns.scores(test), rtol=1e-5, atol=1e-6)


def transformers_collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def test_a_bfloat16_model_is_attributed_in_float32_with_a_note(data):
    train, test = data
    model = tiny_bert().to(torch.bfloat16)
    attr = inf.Attributor(model, train, method="identity", progress=False).fit()
    scores = attr.scores(test)
    assert scores.dtype == torch.float32 and next(model.parameters()).dtype == torch.bfloat16
    note = attr.diagnostics["parameters"]["precision"]
    assert "bfloat16" in note and "float32" in note and attr.diagnostics["parameters"]["dtypes"] == ["bfloat16"]
    reference = tiny_bert().to(torch.bfloat16).float()  # the same weights, rounded to bfloat16, in float32
    G, Gt = brute_force_grads(reference, train), brute_force_grads(reference, test)
    torch.testing.assert_close(scores, Gt @ G.T, rtol=1e-4, atol=1e-6)


def test_gpt2_language_model_scores_equal_brute_force(tokenizer):
    model = tiny_gpt2()
    encoded = tokenizer(sentences(6, seed=3), padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    train = {"input_ids": ids, "attention_mask": mask, "labels": inf.token_labels(ids, mask)}
    test = {"input_ids": ids[:2], "attention_mask": mask[:2],
            "labels": inf.token_labels(ids[:2], mask[:2], prompt_length=2)}  # the completion after 2 tokens
    task = inf.LanguageModelingTask()
    attr = inf.Attributor(model, train, task=task, method="identity", label_column="labels", progress=False).fit()

    def grads(labels):
        rows = []
        for i in range(len(labels)):
            model.zero_grad()
            n = int(mask[i].sum())
            logits = model(input_ids=ids[i:i + 1, :n]).logits[0]
            total = sum(-torch.log_softmax(logits[t - 1], -1)[labels[i, t]] for t in range(1, n) if labels[i, t] >= 0)
            total.backward()
            rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        return torch.stack(rows)

    G, Gt = grads(train["labels"]), grads(test["labels"])
    torch.testing.assert_close(attr.scores(test), Gt @ G.T, rtol=1e-4, atol=1e-6)


def test_unsupported_inputs_raise_errors_naming_the_argument(data):
    train, test = data
    attr = inf.Attributor(tiny_bert(), train, method="identity", progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match=r"`test` has no column 'label'"):
        attr.scores(test.remove_columns("label"))
    wrong = {"attention_mask": torch.ones(2, 3, dtype=torch.long), "label": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(inf.InvalidArgumentError, match=r"model cannot run on the inputs of `test` \(\{attention_mask"):
        attr.scores(wrong)
    with pytest.raises(inf.InvalidArgumentError, match="`test` must be"):
        attr.scores([{"input_ids": [1, 2]}])


def gpt2_lm_data(tokenizer, n, seed, prompt_length=0):
    encoded = tokenizer(sentences(n, seed=seed), padding="max_length", max_length=8, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    mask[:, :3] = 1  # at least two scored tokens per row
    return {"input_ids": ids, "attention_mask": mask, "labels": inf.token_labels(ids, mask, prompt_length)}


def test_gpt2_conv1d_layers_factored_exactly_equal_the_exact_ggn(tokenizer):
    """transformers' Conv1D (W: [d_in, d_out]) as a Kronecker block: with the exact output-Hessian
    factor, every component kept and a dense block over all of them, EK-FAC is the exact GGN."""
    model = tiny_gpt2().double()
    train, test = gpt2_lm_data(tokenizer, 10, seed=4), gpt2_lm_data(tokenizer, 3, seed=5, prompt_length=2)
    task = inf.LanguageModelingTask(parameters=["*.0.attn.c_proj", "*.1.mlp.c_fc"])
    common = dict(task=task, damping=0.05, label_column="labels", progress=False)
    expected = inf.Attributor(model, train, method="exact", **common).fit().scores(test)
    attr = inf.Attributor(model, train, method="ekfac", output_samples=0, output_rank=None, keep=1.0,
                          dense_block=10_000, **common).fit()
    assert attr.diagnostics["ekfac_curvature"].startswith("ggn (exact")
    torch.testing.assert_close(attr.scores(test), expected, rtol=1e-6, atol=1e-9)


def as_linear(model):
    """A copy with each transformers Conv1D (W: [d_in, d_out]) as the equal nn.Linear."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "Conv1D":
            linear = torch.nn.Linear(*module.weight.shape, dtype=module.weight.dtype)
            linear.weight.data, linear.bias.data = module.weight.data.T.clone(), module.bias.data.clone()
            parent, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), attr, linear)
    return model


@pytest.mark.parametrize("output_samples", [0, 1])
def test_gpt2_ekfac_equals_ekfac_of_the_same_model_with_nn_linear_layers(tokenizer, output_samples):
    model = tiny_gpt2().double()
    train, test = gpt2_lm_data(tokenizer, 10, seed=4), gpt2_lm_data(tokenizer, 3, seed=5, prompt_length=2)
    task = inf.LanguageModelingTask(parameters=["*.c_attn", "*.c_proj", "*.c_fc"])
    common = dict(task=task, method="ekfac", damping=0.05, label_column="labels", progress=False, dense_block=0,
                  output_samples=output_samples, output_rank=None, keep=1.0)
    expected = inf.Attributor(as_linear(model), train, **common).fit().scores(test)
    torch.testing.assert_close(inf.Attributor(model, train, **common).fit().scores(test), expected,
                               rtol=1e-6, atol=1e-9)


def test_auto_keeps_ekfac_on_gpt2_factors_the_tied_head_and_names_what_it_leaves_out(tokenizer):
    train, test = gpt2_lm_data(tokenizer, 12, seed=6), gpt2_lm_data(tokenizer, 2, seed=7, prompt_length=2)
    attr = inf.Attributor(tiny_gpt2(), train, task=inf.LanguageModelingTask(), label_column="labels",
                          progress=False).fit()
    d = attr.diagnostics
    assert d["method"] == "ekfac" and "nn.Embedding" in d["method_choice"]
    assert "transformer.wpe.weight" in d["skipped_parameters"]
    assert "lm_head" in d["layers"]  # the output layer, tied to the token embedding: factored as a layer
    assert "transformer.wte.weight" not in d["skipped_parameters"]
    assert "sampled pseudo-labels" in d["ekfac_curvature"]
    scores = attr.scores(test)
    assert scores.shape == (2, 12) and torch.isfinite(scores).all() and (attr.self_influence() > 0).all()


def test_a_conv1d_block_maps_its_rows_to_the_output_units_in_the_flat_parameters():
    from influence.methods.ekfac import find_layers
    from influence.model import FunctionalModel

    model = tiny_gpt2()
    fm = FunctionalModel(model, ["transformer.h.1.mlp.c_fc"])
    (layer,), _ = find_layers(fm, skip_unsupported=False)
    conv = model.transformer.h[1].mlp.c_fc
    expected = torch.cat([conv.weight.T, conv.bias[:, None]], dim=1)  # W̃ [d_out, d_in + 1]
    torch.testing.assert_close(fm.theta[layer.index], expected, rtol=0, atol=0)
