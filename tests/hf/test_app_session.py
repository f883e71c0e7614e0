"""The app's `Session` over a Hugging Face model with dict inputs (the text-finetuned demo's
path): predictions, a trace, "explain this input" from an encode() returning a dict,
suspects and group harm — on a tiny BERT, in seconds."""

import pytest

import influence as inf
from influence_app.session import Session, Setup
from tests.hf.conftest import sentences, tiny_bert
from tests.hf.test_transformers import tokenized

pytestmark = pytest.mark.filterwarnings("ignore:the model looks untrained")


def test_a_session_traces_dict_input_predictions(tokenizer, tmp_path):
    model = tiny_bert(classes=2)
    train = tokenized(tokenizer, 20, seed=11, classes=2).add_column("source", ["a", "b"] * 10)
    test = tokenized(tokenizer, 8, seed=12, classes=2)
    attr = inf.Attributor(model, train, progress=False).fit()

    def encode(text):
        tokens = tokenizer(text)
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    session = Session(Setup(name="tiny", model=model, attributor=attr, train=train, eval=test, modality="text",
                            class_names=["rotten", "fresh"], flags_path=tmp_path / "flags.json", encode=encode,
                            text_column="text", group_columns=["source"]), max_bad=5, k_suspects=3)
    table, total = session.predictions(correctness="all")
    assert len(table) == total == 8
    trace = session.trace(0, k=3)
    assert len(trace.harmful) == 3 and len(trace.helpful) == 3
    explained = session.explain(sentences(1, seed=13)[0], k=2)
    assert explained.predicted in ("rotten", "fresh") and len(explained.harmful) == 2
    assert len(session.suspects(top_n=5)) == 5
    assert set(session.group_harm("source")["group"]) == {"a", "b"}
