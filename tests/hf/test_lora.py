"""A LoRA-wrapped model (PEFT): its adapters and head are attributed by default, also after a
save / reload that freezes everything; patterns pick layers; scores equal brute force over
the adapter parameters; EK-FAC factors the adapters (they are nn.Linear) at its defaults."""

import pytest
import torch

import influence as inf
from influence.parameters import select_parameters
from tests.hf.conftest import tiny_bert
from tests.hf.test_transformers import brute_force_grads, tokenized

peft = pytest.importorskip("peft", reason="the [hf] extra (transformers, peft) is not installed")
pytestmark = [pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
              pytest.mark.filterwarnings("ignore:the model looks untrained")]  # random weights, on purpose


def lora(seed=0):
    config = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["query", "value"],
                             task_type="SEQ_CLS")
    model = peft.get_peft_model(tiny_bert(layers=2, seed=seed), config)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # LoRA's B starts at zero: move it so that the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


ADAPTERS = [f"base_model.model.bert.encoder.layer.{i}.attention.self.{m}.lora_{ab}.default.weight"
            for i in range(2) for m in ("query", "value") for ab in "AB"]
HEAD = ["base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias"]


def test_the_adapters_and_head_are_attributed_by_default(tmp_path):
    model = lora()
    assert select_parameters(model, None) == ADAPTERS + HEAD
    model.save_pretrained(tmp_path)
    reloaded = peft.PeftModel.from_pretrained(tiny_bert(layers=2), tmp_path)  # every parameter frozen
    assert not any(p.requires_grad for p in reloaded.parameters())
    assert select_parameters(reloaded, None) == ADAPTERS + HEAD


def test_patterns_choose_layers_of_a_wrapped_model():
    model = lora()
    assert select_parameters(model, ["*lora_*"]) == ADAPTERS
    assert select_parameters(model, ["classifier"]) == HEAD  # PEFT's unused original_module copy left out
    assert select_parameters(model, ["encoder.layer.1.*lora*"]) == ADAPTERS[4:]
    assert "base_model.model.bert.encoder.layer.1.output.dense.weight" in select_parameters(model, ["layer.1.*"])


def test_scores_over_the_adapters_equal_brute_force(tokenizer):
    model = lora()
    train, test = tokenized(tokenizer, 12, seed=5), tokenized(tokenizer, 3, seed=6)
    attr = inf.Attributor(model, train, method="identity", progress=False).fit()
    report = attr.diagnostics["parameters"]
    assert report["attributed"]["numel"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report["held_fixed"]["groups"]["base_model.model.bert.encoder.layer.*.attention.self.query.base_layer"
                                          ".weight"] == 2 * 8 * 8
    G, Gt = brute_force_grads(model, train, ADAPTERS + HEAD), brute_force_grads(model, test, ADAPTERS + HEAD)
    torch.testing.assert_close(attr.scores(test), Gt @ G.T, rtol=1e-4, atol=1e-6)


def test_ekfac_factors_the_adapters_at_its_defaults(tokenizer):
    model = lora()
    train, test = tokenized(tokenizer, 24, seed=7), tokenized(tokenizer, 3, seed=8)
    attr = inf.Attributor(model, train, method="ekfac", progress=False).fit()
    assert len(attr.diagnostics["layers"]) == 8 + 1 and attr.diagnostics["skipped_parameters"] == []
    scores = attr.scores(test)
    assert scores.shape == (3, 24) and torch.isfinite(scores).all()


def test_ekfac_on_a_lora_wrapped_gpt2_language_model(tokenizer):
    from tests.hf.conftest import tiny_gpt2
    from tests.hf.test_transformers import gpt2_lm_data

    config = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["c_attn", "c_fc"],
                             fan_in_fan_out=True)
    model = peft.get_peft_model(tiny_gpt2(), config).eval()
    train, test = gpt2_lm_data(tokenizer, 10, seed=8), gpt2_lm_data(tokenizer, 2, seed=9, prompt_length=2)
    attr = inf.Attributor(model, train, task=inf.LanguageModelingTask(), method="ekfac", label_column="labels",
                          progress=False).fit()
    assert all("lora_" in name for name in attr.diagnostics["layers"])
    assert attr.diagnostics["skipped_parameters"] == []
    assert torch.isfinite(attr.scores(test)).all()
