"""The app's one handle on a model, its influence index and its data.

`Setup` says what is opened (model, fitted `Attributor`, train and eval data, how to show
an example); `Session` answers the questions the tabs ask, as plain tables. Every influence
number comes from the `influence` API (`Attributor.top_k`, `scores`, `self_influence`,
`group_scores`); this module only routes, filters and tabulates.

Sign convention (the package's): `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`;
positive = helpful (removing train_i would raise the test loss), negative = harmful.
"Harm" here is `−Σ_j score[j, i]` over the bad predictions, so harm > 0 means "pushed the
bad predictions' loss up".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import influence as inf
from influence.batching import num_rows, take, to_model, unsqueeze
from influence.data import as_data
from influence.errors import InvalidArgumentError

from app.flags import FlagStore

MODALITIES = ("image", "text", "table")


@dataclass
class Setup:
    """Everything the app opens.

    Attributes:
        name: a title for the page.
        model: the classifier (returns logits [b, C]); run in eval mode, never modified.
        attributor: a fitted `influence.Attributor` over `train` (same order).
        train, eval: `datasets.Dataset`s with `input_column`, `label_column` and metadata.
        modality: "image", "text" or "table": how an example is shown.
        class_names: one name per class (the model output index).
        flags_path: the reviewer's verdicts file (JSON), beside the index.
        transform: turns a row's input into a tensor (as for `Attributor`), or None.
        encode: turns a raw user input (image array, text, dict of row values) into one
            model input tensor; None disables "explain this input" unless the view can do it.
        image_shape: (H, W) of a flattened image input.
        text_column: column with the text shown for an example.
        row_columns: raw columns shown for a tabular example (and edited for "explain").
        group_columns: metadata columns offered as groups (e.g. "source").
        notes: a line about the data shown under the title (plain text).
        report_folder: a regression report folder, when the app was opened on one.
    """

    name: str
    model: nn.Module
    attributor: inf.Attributor
    train: Any
    eval: Any
    modality: str
    class_names: list[str]
    flags_path: Path
    input_column: str = "input"
    label_column: str = "label"
    transform: Callable | None = None
    encode: Callable[[Any], Tensor] | None = None
    image_shape: tuple[int, int] | None = None
    text_column: str | None = None
    row_columns: list[str] = field(default_factory=list)
    group_columns: list[str] = field(default_factory=list)
    notes: str = ""
    report_folder: Path | None = None


@dataclass
class Trace:
    """One traced prediction: the query, its prediction, and its top-k training examples."""

    query: Any                 # raw display value of the input (image array, text, row dict)
    label: str | None          # true class name (None for an unlabeled input)
    predicted: str
    target: str                # the class whose loss was attributed
    loss: float
    probabilities: dict[str, float]
    harmful: pd.DataFrame      # rank, train id, score, label, groups..., flag
    helpful: pd.DataFrame


class Session:
    """Questions about one `Setup`, answered from the influence API.

    Args:
        setup: what to open.
        max_bad: how many of the worst wrong predictions the Suspects and Groups tabs use.
        k_suspects: a training example counts as harming a bad prediction when it is among
            that prediction's `k_suspects` most harmful (with a negative score).
    """

    def __init__(self, setup: Setup, max_bad: int = 300, k_suspects: int = 10):
        if setup.modality not in MODALITIES:
            raise InvalidArgumentError(f"`modality` must be one of {MODALITIES}, got {setup.modality!r}")
        self.setup = setup
        self.attr = setup.attributor
        if self.attr.index is None:
            raise InvalidArgumentError("`attributor` is not fitted: call fit(), or open it with Attributor.load()")
        n_train = self.attr.index.n
        if len(setup.train) != n_train:
            raise InvalidArgumentError(f"`train` has {len(setup.train)} rows but the index was built over {n_train} "
                                       "training examples; pass the training data the index was fitted on")
        read = dict(input_column=setup.input_column, label_column=setup.label_column, transform=setup.transform)
        self.X_eval, self.y_eval = as_data(setup.eval, "eval", **read).batch(range(len(setup.eval)))
        self.train_labels = [int(v) for v in setup.train[setup.label_column]]
        self.columns = {c: list(setup.train[c]) for c in setup.group_columns}
        logits = self.logits(self.X_eval)
        self.probs = torch.softmax(logits, dim=1)
        self.pred = logits.argmax(dim=1)
        self.loss = self.attr.task.loss(logits, self.y_eval.to(logits.device)).detach()
        self.flags = FlagStore(setup.flags_path, n_train)
        wrong = torch.nonzero(self.pred != self.y_eval).flatten()
        self.bad = wrong[self.loss[wrong].argsort(descending=True)][:max_bad]
        self.k_suspects = k_suspects
        self._lock = threading.RLock()  # one influence query at a time (the attributor is shared)
        self._suspects: pd.DataFrame | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    def logits(self, X: Any) -> Tensor:
        """Model outputs Tensor[n, C] for inputs X (a tensor, or a dict / tuple of tensors), in
        batches, without gradients, called as the task calls the model."""
        p = next(self.setup.model.parameters())
        self.setup.model.eval()
        forward = self.attr.task.forward
        with torch.no_grad():
            return torch.cat([forward(self.setup.model, to_model(take(X, slice(lo, lo + 512)), p.device, p.dtype))
                              for lo in range(0, num_rows(X), 512)]).float().cpu()

    def class_name(self, c: int) -> str:
        names = self.setup.class_names
        return names[c] if 0 <= c < len(names) else str(c)

    def class_index(self, name: str) -> int:
        if name not in self.setup.class_names:
            raise InvalidArgumentError(f"unknown class {name!r}; classes are {self.setup.class_names}")
        return self.setup.class_names.index(name)

    def example(self, split: str, i: int) -> Any:
        """The raw display value of one example: image array, text, or dict of row values."""
        data = self.setup.train if split == "train" else self.setup.eval
        row = data[int(i)]
        if self.setup.modality == "image":
            return np.asarray(row[self.setup.input_column], dtype=np.float32).reshape(self.setup.image_shape)
        if self.setup.modality == "text":
            return str(row[self.setup.text_column])
        return {c: row[c] for c in self.setup.row_columns}

    def _preview(self, split: str, i: int) -> str:
        if self.setup.modality == "text":
            text = self.example(split, i)
            return text if len(text) <= 90 else text[:87] + "..."
        return ""

    def _check_eval_id(self, eval_id: Any) -> int:
        if eval_id is None or float(eval_id) != int(float(eval_id)) or not 0 <= int(float(eval_id)) < len(self.y_eval):
            raise InvalidArgumentError(f"`eval_id` must be an integer in [0, {len(self.y_eval) - 1}], got {eval_id!r}")
        return int(float(eval_id))

    def _train_table(self, ids: list[int], extra: dict[str, list]) -> pd.DataFrame:
        table = {"rank": extra.pop("rank")} if "rank" in extra else {}
        table["train id"] = ids
        table["label"] = [self.class_name(self.train_labels[i]) for i in ids]
        for c, values in self.columns.items():
            table[c] = [str(values[i]) for i in ids]
        table.update(extra)
        table["flag"] = [self.flags.get(i) for i in ids]
        if self.setup.modality == "text":
            table["text"] = [self._preview("train", i) for i in ids]
        return pd.DataFrame(table)

    # ------------------------------------------------------------------ predictions
    def predictions(self, true_class: str = "all", predicted_class: str = "all", correctness: str = "wrong",
                    min_loss: float = 0.0, limit: int = 500) -> pd.DataFrame:
        """Eval examples with their predictions, filtered, worst (highest loss) first."""
        keep = self.loss >= float(min_loss or 0.0)
        if true_class not in (None, "", "all"):
            keep &= self.y_eval == self.class_index(true_class)
        if predicted_class not in (None, "", "all"):
            keep &= self.pred == self.class_index(predicted_class)
        if correctness == "wrong":
            keep &= self.pred != self.y_eval
        elif correctness == "right":
            keep &= self.pred == self.y_eval
        elif correctness not in (None, "", "all"):
            raise InvalidArgumentError(f"`correctness` must be 'wrong', 'right' or 'all', got {correctness!r}")
        ids = torch.nonzero(keep).flatten()
        ids = ids[self.loss[ids].argsort(descending=True)][:limit].tolist()
        table = {"eval id": ids,
                 "true": [self.class_name(int(self.y_eval[j])) for j in ids],
                 "predicted": [self.class_name(int(self.pred[j])) for j in ids],
                 "correct": ["yes" if self.pred[j] == self.y_eval[j] else "no" for j in ids],
                 "loss": [round(float(self.loss[j]), 4) for j in ids],
                 "confidence": [round(float(self.probs[j].max()), 4) for j in ids]}
        for c in self.setup.group_columns:
            if c in self.setup.eval.column_names:
                table[c] = [str(v) for v in self.setup.eval.select(ids)[c]] if ids else []
        if self.setup.modality == "text":
            table["text"] = [self._preview("eval", j) for j in ids]
        return pd.DataFrame(table)

    # ------------------------------------------------------------------ trace
    def _trace(self, x: Any, target: int, k: int, query: Any, label: str | None) -> Trace:
        logits = self.logits(unsqueeze(x))
        probs = torch.softmax(logits, dim=1)[0]
        y = torch.tensor([target])
        with self._lock:
            top = self.attr.top_k((unsqueeze(x), y), k=int(k))
        loss = float(self.attr.task.loss(logits, y)[0])

        def table(ranking) -> pd.DataFrame:
            ids = ranking.indices[0].tolist()
            return self._train_table(ids, {"rank": list(range(1, len(ids) + 1)),
                                           "score": [_number(s) for s in ranking.scores[0]]})

        return Trace(query=query, label=label, predicted=self.class_name(int(probs.argmax())),
                     target=self.class_name(target), loss=loss,
                     probabilities={self.class_name(c): float(p) for c, p in enumerate(probs)},
                     harmful=table(top.harmful), helpful=table(top.helpful))

    def trace(self, eval_id: Any, k: int = 8) -> Trace:
        """Top-k helpful and harmful training examples for one eval example (its true label's loss)."""
        j = self._check_eval_id(eval_id)
        target = int(self.y_eval[j])
        return self._trace(take(self.X_eval, j), target, k, self.example("eval", j), self.class_name(target))

    def explain(self, raw: Any, label: str | None = None, k: int = 8) -> Trace:
        """Predict and trace a new input (`raw` as the view parsed it). Without `label`, the
        loss of the predicted class is attributed: which training data made it say that."""
        if self.setup.encode is None:
            raise InvalidArgumentError("this app was opened without an `encode` function, so it cannot read new inputs")
        encoded = self.setup.encode(raw)
        if isinstance(encoded, dict):  # several model inputs (e.g. token ids and a mask), any length
            x = {key: torch.as_tensor(np.asarray(value)) for key, value in encoded.items()}
        else:
            x = torch.as_tensor(np.asarray(encoded))
            if x.shape != self.X_eval.shape[1:]:
                raise InvalidArgumentError(f"the encoded input has shape {tuple(x.shape)}, the model expects "
                                           f"{tuple(self.X_eval.shape[1:])}")
            x = x.to(self.X_eval.dtype)
        given = label not in (None, "", "predicted")
        target = self.class_index(label) if given else int(self.logits(unsqueeze(x)).argmax())
        return self._trace(x, target, k, raw, label if given else None)

    # ------------------------------------------------------------------ suspects and groups
    def _bad_data(self) -> tuple[Tensor, Tensor]:
        return take(self.X_eval, self.bad), self.y_eval[self.bad]

    def suspect_scores(self, progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
        """Per training example: self-influence, how many bad predictions it is among the
        `k_suspects` most harmful for, and its total harm `−Σ_j score[j, i]` over them."""
        progress = progress or (lambda fraction, what: None)
        with self._lock:
            if self._suspects is None:
                n = self.n_train
                progress(0.0, "self-influence of every training example")
                self_influence = self.attr.self_influence().float().cpu()
                harmed = torch.zeros(n, dtype=torch.long)
                harm = torch.zeros(n, dtype=torch.float64)
                X, y = self._bad_data()
                if len(y):
                    progress(0.4, f"top-{self.k_suspects} harmful for {len(y)} bad predictions")
                    top = self.attr.top_k((X, y), k=self.k_suspects).harmful
                    ids = top.indices[top.scores < 0].cpu()
                    harmed = torch.bincount(ids, minlength=n)
                    for lo in range(0, len(y), 256):
                        progress(0.6 + 0.4 * lo / len(y), f"scores of bad predictions {lo}..{lo + 256}")
                        part = (take(X, slice(lo, lo + 256)), y[lo:lo + 256])
                        harm -= self.attr.scores(part).double().sum(dim=0).cpu()
                self._suspects = pd.DataFrame({"self-influence": self_influence.numpy(),
                                               "bad predictions harmed": harmed.numpy(),
                                               "total harm": harm.numpy()})
                progress(1.0, "done")
            return self._suspects

    def suspects(self, sort_by: str = "self-influence", top_n: int = 50, progress=None,
                 ids: list[int] | None = None) -> pd.DataFrame:
        """Training examples ranked by `sort_by` ("self-influence", "bad predictions harmed"
        or "total harm"), highest first, with their labels, groups and flags."""
        scores = self.suspect_scores(progress)
        if sort_by not in scores.columns:
            raise InvalidArgumentError(f"`sort_by` must be one of {list(scores.columns)}, got {sort_by!r}")
        rows = scores if ids is None else scores.iloc[ids]
        order = rows.sort_values([sort_by, "self-influence"], ascending=False, kind="stable").index[:int(top_n)]
        order = [int(i) for i in order]
        extra = {c: [_number(scores.at[i, c]) for i in order] for c in scores.columns}
        return self._train_table(order, extra)

    def group_harm(self, column: str, progress=None) -> pd.DataFrame:
        """Harm of each value of a group column on the bad predictions, most harmful first:
        `harm = −Σ_j Σ_{i∈group} score[j, i]` (from `Attributor.group_scores`)."""
        if column not in self.columns:
            raise InvalidArgumentError(f"`column` must be one of {list(self.columns)}, got {column!r}")
        X, y = self._bad_data()
        if not len(y):
            return pd.DataFrame({"group": [], "harm": [], "harm per example": [], "count": []})
        if progress:
            progress(0.0, f"group scores of {len(y)} bad predictions by {column}")
        with self._lock:
            result = self.attr.group_scores((X, y), [str(v) for v in self.columns[column]])
        harm = -result.sum.double().sum(dim=0).cpu()
        count = result.count.cpu()
        table = pd.DataFrame({"group": [str(g) for g in result.groups], "harm": [_number(h) for h in harm],
                              "harm per example": [_number(h) for h in harm / count.double()],
                              "count": count.numpy()})
        return table.sort_values("harm", ascending=False, kind="stable").reset_index(drop=True)

    def group_members(self, column: str, value: str, top_n: int = 50) -> pd.DataFrame:
        """The training examples of one group, most harmful (total harm) first."""
        if column not in self.columns:
            raise InvalidArgumentError(f"`column` must be one of {list(self.columns)}, got {column!r}")
        ids = [i for i, v in enumerate(self.columns[column]) if str(v) == str(value)]
        if not ids:
            raise InvalidArgumentError(f"no training example has {column} = {value!r}")
        return self.suspects("total harm", top_n, ids=ids)

    # ------------------------------------------------------------------ flags
    def flag(self, train_id: Any, verdict: str, note: str = "") -> pd.DataFrame:
        """Record a reviewer's verdict on a training example; returns all flags."""
        try:
            i = int(float(train_id))
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"`train_id` must be an integer, got {train_id!r}")
        if 0 <= i < self.n_train:
            self.flags.set(i, verdict, label=self.class_name(self.train_labels[i]), note=note or "")
        else:
            self.flags.set(i, verdict)  # raises with the valid range
        return self.flag_table()

    def flag_table(self) -> pd.DataFrame:
        flags = self.flags.all()
        return pd.DataFrame(flags, columns=["train_id", "verdict", "label", "note", "time"])

    def summary(self) -> dict:
        """Facts for the page header."""
        d = self.attr.diagnostics
        return {"name": self.setup.name, "n_train": self.n_train, "n_eval": len(self.y_eval),
                "wrong": int((self.pred != self.y_eval).sum()), "method": d.get("method"),
                "curvature_backend": d.get("curvature_backend"), "damping": d.get("damping"),
                "bad_used": len(self.bad), "notes": self.setup.notes}


def _number(value) -> int | float:
    """A table cell: integers as they are, floats to 6 significant digits."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(f"{float(value):.6g}")
