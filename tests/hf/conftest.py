"""Tiny Hugging Face models built from configs with random weights (nothing is downloaded),
and a WordPiece tokenizer written on the spot. Skipped without `transformers`."""

import os

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers, peft) is not installed")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers.logging.set_verbosity_error()

WORDS = ["good", "bad", "great", "awful", "film", "plot", "not", "very", "dull", "fun", "the", "a", "was", "is"]


def tiny_bert(classes=3, hidden=8, layers=1, seed=0, **extra):
    """A randomly initialised BertForSequenceClassification (p ≈ 1–2 k); dropout off."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=16,
                                     num_labels=classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     **extra)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_gpt2(seed=0):
    """A randomly initialised 2-layer GPT2LMHeadModel; dropout off."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=len(WORDS) + 5, n_positions=16, n_embd=8, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A BertTokenizerFast over a tiny vocabulary (written to a temporary folder)."""
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizerFast(str(folder / "vocab.txt"))


def sentences(n, seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (n,), generator=gen)
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(k),), generator=gen))
            for k in lengths]
