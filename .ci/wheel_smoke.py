"""Run from a folder outside the checkout, in a venv where the built wheel was installed with
the [hf] extra from the registry: imports the package next to transformers (whose `kernels`
dependency once collided with ours), and attributes a tiny BERT built from a config."""

import importlib.metadata
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import peft  # noqa: E402, F401 — transformers' hub-kernels integration used to break this import
import torch  # noqa: E402
import transformers  # noqa: E402

import influence as inf  # noqa: E402
import influence.replay  # noqa: E402, F401 — every subpackage made it into the wheel

checkout = Path(sys.argv[1]).resolve()
assert checkout not in Path(inf.__file__).resolve().parents, f"influence imported from the checkout: {inf.__file__}"
torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=16, num_labels=2)
model = transformers.BertForSequenceClassification(config).eval()
ids = torch.randint(5, 30, (12, 6))
train = ({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.randint(0, 2, (12,)))
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="the model looks untrained")
    attr = inf.Attributor(model, train, progress=False).fit()
    scores = attr.scores(({k: v[:3] for k, v in train[0].items()}, train[1][:3]))
assert scores.shape == (3, 12) and torch.isfinite(scores).all(), scores
versions = {}
for name in ("influence-debugger", "torch", "transformers", "peft", "kernels", "numpy"):
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = None
print(f"wheel smoke test passed: method {attr.diagnostics['method']}, scores {tuple(scores.shape)}; {versions}")
