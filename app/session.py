"""The app's one handle on a model, its influence index and its data.

`Session` answers the questions the tabs ask, as plain tables at full precision (the UI rounds
them for display, downloads keep them). It routes, filters and tabulates only: every influence
number comes from the `influence` API (`Attributor.top_k`, `scores`, `self_influence`) and
every harm from `influence.harm`, the one definition the report uses too.

Sign convention (the package's): `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`; removing
train_i changes test_j's loss by about `score / n_train` ("loss change"): < 0 harmful, > 0
helpful. Harm = the estimated drop of the queried examples' summed loss if the data were removed.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from influence_app.flags import HAND_MADE, FlagStore, Outcome
from influence_app.setup import MODALITIES, Setup
from influence.batching import num_rows, take, to_model, unsqueeze
from influence.data import as_data
from influence.errors import InvalidArgumentError
from influence.harm import example_harm, group_harm, harmed_counts
from influence.report.ranking import percentile_rank, shares
from influence.report.readable import effect

PAGE_SIZES = (25, 50, 100, 500)
FLAG_COLUMNS = {"train_id": "train id", "verdict": "verdict", "corrected_label": "corrected label",
                "label": "label", "source": "source", "note": "note", "by": "given by",
                "who": "reviewer", "time": "time"}
SUSPECT_COLUMNS = ["harm", "harmed", "self-influence", "self-influence percentile"]
Progress = Callable[[float, str], None]


@dataclass
class Trace:
    """One traced prediction: the query, its prediction, and its top-k training examples."""

    query: Any                 # raw display value of the input (image array, text, row dict)
    label: str | None          # true class name (None for an unlabeled input)
    predicted: str
    target: str                # the class whose loss was attributed
    loss: float
    probabilities: dict[str, float]
    harmful: pd.DataFrame      # rank, train id, label, groups..., loss change, effect, score, flag
    helpful: pd.DataFrame


class Session:
    """Questions about one `Setup`, answered from the influence API.

    Args:
        setup: what to open.
        max_bad: how many of the worst wrong predictions form the "worst wrong predictions" queries.
        k_suspects: a training example counts as harming a query when it is among that query's
            `k_suspects` most harmful (with a negative score).
    """

    def __init__(self, setup: Setup, max_bad: int = 300, k_suspects: int = 10):
        if setup.modality not in MODALITIES:
            raise InvalidArgumentError(f"`modality` must be one of {MODALITIES}, got {setup.modality!r}")
        self.setup, self.attr, self.k_suspects = setup, setup.attributor, k_suspects
        if self.attr.index is None:
            raise InvalidArgumentError("`attributor` is not fitted: call fit(), or open it with Attributor.load()")
        self.n_train = int(self.attr.diagnostics["n_train"])
        if len(setup.train) != self.n_train:
            raise InvalidArgumentError(f"`train` has {len(setup.train)} rows but the index was built over "
                                       f"{self.n_train} training examples; pass the training data the index was "
                                       "fitted on")
        self.read = dict(input_column=setup.input_column, label_column=setup.label_column, transform=setup.transform)
        self.X_eval, self.y_eval = as_data(setup.eval, "eval", **self.read).batch(range(len(setup.eval)))
        self.train_labels = [int(v) for v in setup.train[setup.label_column]]
        self.columns = {c: [str(v) for v in setup.train[c]] for c in setup.group_columns}
        logits = self.logits(self.X_eval)
        self.probs = torch.softmax(logits, dim=1)
        self.pred = logits.argmax(dim=1)
        self.loss = self.attr.task.loss(logits, self.y_eval.to(logits.device)).detach().double()
        self.flags = FlagStore(setup.flags_path, self.n_train)
        wrong = torch.nonzero(self.pred != self.y_eval).flatten()
        self.queries = {"worst wrong predictions": wrong[self.loss[wrong].argsort(descending=True)][:max_bad]}
        if setup.report is not None:
            ids = [r["eval_index"] for r in setup.report["regressions"]]
            self.queries = {"the report's regressions": torch.tensor(ids, dtype=torch.long), **self.queries}
        self.exports = Path(tempfile.mkdtemp(prefix="influence-app-"))
        self._lock = threading.RLock()  # one influence query at a time (the attributor is shared)
        self._cache: dict[tuple, Any] = {}
        self._search: list[str] | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def bad(self) -> Tensor:
        """The worst wrong predictions (eval ids, highest loss first)."""
        return self.queries["worst wrong predictions"]

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
        if not isinstance(name, str) or name not in self.setup.class_names:
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
        return {c: row.get(c) for c in self.setup.row_columns}

    def preview(self, split: str, i: int) -> str:
        """A short text of an example for tables (texts only; other modalities have thumbnails/rows)."""
        if self.setup.modality != "text":
            return ""
        text = self.example(split, i)
        return text if len(text) <= 90 else text[:87] + "..."

    def check_eval_id(self, eval_id: Any) -> int:
        return _check_id(eval_id, len(self.y_eval), "the eval example", "a row of the eval data")

    def check_train_id(self, train_id: Any) -> int:
        return _check_id(train_id, self.n_train, "the training example", "pick one by clicking a row")

    def source_of(self, i: int) -> str:
        """The training example's first group value (its data source), for flags."""
        column = "source" if "source" in self.columns else next(iter(self.columns), None)
        return "" if column is None else self.columns[column][i]

    def train_table(self, ids: list[int], extra: dict[str, list]) -> pd.DataFrame:
        """rank, train id, label, group columns..., extra columns, flag (and text)."""
        table = {"rank": extra.pop("rank")} if "rank" in extra else {}
        table["train id"] = ids
        table["label"] = [self.class_name(self.train_labels[i]) for i in ids]
        for c, values in self.columns.items():
            table[c] = [values[i] for i in ids]
        table.update(extra)
        table["flag"] = [self.flags.get(i) for i in ids]
        if self.setup.modality == "text":
            table["text"] = [self.preview("train", i) for i in ids]
        return pd.DataFrame(table)

    def columns_of(self, table: str) -> list[str]:
        """The columns of the "predictions" or "suspects" tables (fixed for a session)."""
        if table == "predictions":
            return list(self.prediction_table([]).columns)
        return list(self.train_table([], {c: [] for c in SUSPECT_COLUMNS}).columns)

    def query_ids(self, queries: str) -> Tensor:
        if not isinstance(queries, str) or queries not in self.queries:
            raise InvalidArgumentError(f"`queries` must be one of {list(self.queries)}, got {queries!r}")
        return self.queries[queries]

    # ------------------------------------------------------------------ predictions
    def predictions(self, true_class: str = "all", predicted_class: str = "all", correctness: str = "wrong",
                    min_loss: float = 0.0, search: str = "", page: int = 1, page_size: int = 50
                    ) -> tuple[pd.DataFrame, int]:
        """One page of the eval predictions, filtered and searched (`search`: an eval id, or text found
        in a class name or a column of the eval data), worst (highest loss) first.

        Returns the page's table and the number of matching predictions."""
        ids = self.matching(true_class, predicted_class, correctness, min_loss, search)
        if int(page_size) not in PAGE_SIZES:
            raise InvalidArgumentError(f"`page_size` must be one of {PAGE_SIZES}, got {page_size!r}")
        pages = max(1, -(-len(ids) // int(page_size)))
        if not 1 <= int(page or 1) <= pages:
            raise InvalidArgumentError(f"`page` must be between 1 and {pages}, got {page!r}")
        start = (int(page or 1) - 1) * int(page_size)
        return self.prediction_table(ids[start:start + int(page_size)]), len(ids)

    def matching(self, true_class: str = "all", predicted_class: str = "all", correctness: str = "wrong",
                 min_loss: float = 0.0, search: str = "") -> list[int]:
        """Eval ids that pass the filters and the search, highest loss first."""
        keep = self.loss >= float(min_loss or 0.0)
        if true_class not in (None, "", "all"):
            keep &= self.y_eval == self.class_index(true_class)
        if predicted_class not in (None, "", "all"):
            keep &= self.pred == self.class_index(predicted_class)
        if correctness == "wrong":
            keep &= self.pred != self.y_eval
        elif correctness == "right":
            keep &= self.pred == self.y_eval
        elif correctness is not None and correctness not in ("", "all"):
            raise InvalidArgumentError(f"`correctness` must be 'wrong', 'right' or 'all', got {correctness!r}")
        ids = torch.nonzero(keep).flatten()
        ids = ids[self.loss[ids].argsort(descending=True, stable=True)].tolist()
        search = str(search or "").strip().lower()
        if search.isdigit():  # a number is an eval id
            return [j for j in ids if j == int(search)]
        if search:
            texts = self._search_texts()
            ids = [j for j in ids if search in texts[j]]
        return ids

    def _search_texts(self) -> list[str]:
        """Per eval example, the lower-case text a search matches: classes, metadata, text or row values."""
        if self._search is None:
            eval_data = self.setup.eval
            columns = [c for c in eval_data.column_names if c not in (self.setup.input_column,)]
            values = {c: eval_data[c] for c in columns}
            self._search = [" ".join([self.class_name(int(self.y_eval[j])), self.class_name(int(self.pred[j]))]
                                     + [str(values[c][j]) for c in columns]).lower() for j in range(len(self.y_eval))]
        return self._search

    def prediction_table(self, ids: list[int]) -> pd.DataFrame:
        table = {"eval id": ids,
                 "true": [self.class_name(int(self.y_eval[j])) for j in ids],
                 "predicted": [self.class_name(int(self.pred[j])) for j in ids],
                 "correct": ["yes" if self.pred[j] == self.y_eval[j] else "no" for j in ids],
                 "loss": [float(self.loss[j]) for j in ids],
                 "confidence": [float(self.probs[j].max()) for j in ids]}
        for c in self.setup.group_columns:
            if c in self.setup.eval.column_names:
                table[c] = [str(v) for v in self.setup.eval.select(ids)[c]] if ids else []
        if self.setup.modality == "text":
            table["text"] = [self.preview("eval", j) for j in ids]
        return pd.DataFrame(table)

    # ------------------------------------------------------------------ trace
    def _trace(self, x: Any, target: int, k: int, query: Any, label: str | None) -> Trace:
        if not isinstance(k, int) or not 1 <= k <= 100:
            raise InvalidArgumentError(f"`k` must be an integer in [1, 100], got {k!r}")
        logits = self.logits(unsqueeze(x))
        probs = torch.softmax(logits, dim=1)[0]
        y = torch.tensor([target])
        with self._lock:
            top = self.attr.top_k((unsqueeze(x), y), k=k)
        loss = float(self.attr.task.loss(logits, y)[0])

        def table(ranking) -> pd.DataFrame:
            ids, scores = ranking.indices[0].tolist(), ranking.scores[0].double().tolist()
            changes = [s / self.n_train for s in scores]
            return self.train_table(ids, {"rank": list(range(1, len(ids) + 1)), "loss change if removed": changes,
                                          "effect": [effect(c) for c in changes], "score": scores})

        return Trace(query=query, label=label, predicted=self.class_name(int(probs.argmax())),
                     target=self.class_name(target), loss=loss,
                     probabilities={self.class_name(c): float(p) for c, p in enumerate(probs)},
                     harmful=table(top.harmful), helpful=table(top.helpful))

    def trace(self, eval_id: Any, k: int = 8) -> Trace:
        """Top-k helpful and harmful training examples for one eval example (its true label's loss)."""
        j = self.check_eval_id(eval_id)
        target = int(self.y_eval[j])
        return self._trace(take(self.X_eval, j), target, int(k), self.example("eval", j), self.class_name(target))

    def explain(self, raw: Any, label: str | None = None, k: int = 8) -> Trace:
        """Predict and trace a new input (`raw` as the view parsed it). Without `label`, the
        loss of the predicted class is attributed: which training data made it say that."""
        if self.setup.encode is None:
            raise InvalidArgumentError("this app was opened without an `encode` function (the factory's 'encode'), "
                                       "so it cannot read new inputs")
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
        return self._trace(x, target, int(k), raw, label if given else None)

    # ------------------------------------------------------------------ suspects and groups
    def _query_data(self, queries: str) -> tuple[Tensor, Tensor]:
        ids = self.query_ids(queries)
        return take(self.X_eval, ids), self.y_eval[ids]

    def suspect_scores(self, queries: str, progress: Progress | None = None) -> pd.DataFrame:
        """Per training example: self-influence (and its percentile), how many queries it is among
        the `k_suspects` most harmful for, and its harm on them (`influence.harm.example_harm`)."""
        progress = progress or (lambda fraction, what: None)
        self.query_ids(queries)  # a known name (a cache key) before anything else
        with self._lock:
            if ("suspects", queries) not in self._cache:
                X, y = self._query_data(queries)
                progress(0.0, "self-influence of every training example")
                self_influence = self.attr.self_influence().double().cpu().numpy()
                harmed, harm = np.zeros(self.n_train, dtype=np.int64), np.zeros(self.n_train)
                if len(y):
                    progress(0.4, f"top-{self.k_suspects} harmful for {len(y)} predictions")
                    top = self.attr.top_k((X, y), k=self.k_suspects).harmful
                    harmed = harmed_counts(top, self.n_train)
                    for lo in range(0, len(y), 256):
                        progress(0.6 + 0.4 * lo / len(y), f"scores of predictions {lo}..{lo + 256}")
                        part = (take(X, slice(lo, lo + 256)), y[lo:lo + 256])
                        harm += example_harm(self.attr.scores(part), self.n_train)
                self._cache[("suspects", queries)] = pd.DataFrame(dict(zip(
                    SUSPECT_COLUMNS, [harm, harmed, self_influence, percentile_rank(self_influence)])))
                progress(1.0, "done")
            return self._cache[("suspects", queries)]

    def suspects(self, sort_by: str = "harm", top_n: int = 50, queries: str | None = None,
                 progress: Progress | None = None, ids: list[int] | None = None) -> pd.DataFrame:
        """Training examples ranked by `sort_by` ("harm", "harmed" or "self-influence"), highest
        first, with their labels, groups and flags."""
        scores = self.suspect_scores(queries or next(iter(self.queries)), progress)
        if not isinstance(sort_by, str) or sort_by not in ("harm", "harmed", "self-influence"):
            raise InvalidArgumentError(f"`sort_by` must be 'harm', 'harmed' or 'self-influence', got {sort_by!r}")
        if not isinstance(top_n, (int, float)) or not 1 <= int(top_n) <= 10_000:
            raise InvalidArgumentError(f"`show` must be a number of rows in [1, 10000], got {top_n!r}")
        rows = scores if ids is None else scores.iloc[ids]
        order = [int(i) for i in rows.sort_values([sort_by, "self-influence"], ascending=False,
                                                   kind="stable").index[:int(top_n)]]
        return self.train_table(order, {c: scores[c].to_numpy()[order].tolist() for c in scores.columns})

    def group_harm(self, column: str, queries: str | None = None, progress: Progress | None = None
                   ) -> pd.DataFrame:
        """Harm of each value of a group column on the queries, most harmful first
        (`influence.harm.group_harm`: the group-removal estimate when affordable, else first order)."""
        if not isinstance(column, str) or column not in self.columns:
            raise InvalidArgumentError(f"`column` must be one of {list(self.columns)}, got {column!r}")
        queries = queries or next(iter(self.queries))
        self.query_ids(queries)
        with self._lock:
            if ("groups", column, queries) not in self._cache:
                if progress:
                    progress(0.0, f"harm of each {column} on {len(self.query_ids(queries))} predictions")
                self._cache[("groups", column, queries)] = self._group_table(column, queries)
            return self._cache[("groups", column, queries)]

    def _group_table(self, column: str, queries: str) -> pd.DataFrame:
        X, y = self._query_data(queries)
        if not len(y):
            return pd.DataFrame({c: [] for c in ("group", "harm", "estimator", "share", "count",
                                                 "first-order harm")})
        result = group_harm(self.attr, (X, y), self.columns[column], train=self.setup.train)
        table = pd.DataFrame({"group": [str(v) for v in result.values], "harm": result.harm,
                              "estimator": result.estimator.replace("_", " "), "share": shares(result.harm),
                              "count": result.count, "first-order harm": result.first_order_harm})
        return table.sort_values("harm", ascending=False, kind="stable").reset_index(drop=True)

    def group_members(self, column: str, value: str, queries: str | None = None, top_n: int = 50) -> pd.DataFrame:
        """The training examples of one group, most harmful first."""
        ids = self.members(column, value)
        return self.suspects("harm", top_n, queries, ids=ids)

    def members(self, column: str, value: str) -> list[int]:
        if not isinstance(column, str) or column not in self.columns:
            raise InvalidArgumentError(f"`column` must be one of {list(self.columns)}, "
                                       f"got {column!r}")
        ids = [i for i, v in enumerate(self.columns.get(column, [])) if v == str(value)]
        if not ids:
            raise InvalidArgumentError(f"no training example has {column} = {value!r}; pick a group from the list")
        return ids

    # ------------------------------------------------------------------ flags
    def flag(self, train_ids: Any, verdict: str, corrected_label: str | None = None, note: str = "",
             bulk: bool = False, replace_hand_made: bool = False) -> Outcome:
        """Record a reviewer's verdict (and corrected label) on one or more training examples.

        `bulk=False`: a verdict given on one example shown on screen (hand-made). `bulk=True`
        (the k most harmful, a whole group): hand-made verdicts are kept unless
        `replace_hand_made`; the `Outcome` says how many rows changed and how many were kept."""
        ids = [self.check_train_id(i) for i in (train_ids if isinstance(train_ids, (list, tuple)) else [train_ids])]
        if not ids:
            raise InvalidArgumentError("no training example to flag: pick one by clicking a row")
        if verdict in (None, ""):
            raise InvalidArgumentError("choose a verdict (mislabeled, remove, keep or clear) before saving")
        corrected = corrected_label or ""
        if corrected:
            self.class_index(corrected)
        return self.flags.set_many(ids, verdict, corrected, note or "",
                                   {i: self.class_name(self.train_labels[i]) for i in ids},
                                   {i: self.source_of(i) for i in ids},
                                   by="bulk" if bulk else HAND_MADE,
                                   replace_hand_made=replace_hand_made or not bulk)

    def undo_flags(self) -> str:
        """Undo the last save or bulk flag; returns what was undone, in words."""
        last = self.flags.undo()
        if last is None:
            raise InvalidArgumentError("nothing to undo: no verdict has been saved yet")
        ids = last["ids"]
        what = f"training example {ids[0]}" if len(ids) == 1 else f"{len(ids)} training examples"
        return f"undone: {last['verdict']} on {what} (back to their previous verdicts)"

    def flag_table(self) -> pd.DataFrame:
        """Every verdict, one row per training example, with readable headers."""
        frame = pd.DataFrame(self.flags.all(), columns=list(FLAG_COLUMNS))
        return frame.rename(columns=FLAG_COLUMNS)

    def export_flags(self, kind: str) -> Path:
        """The flags as a `flags.csv` or `flags.jsonl` file to download (train id, verdict,
        corrected label, note, source); opened on a report folder, also written there for
        `verify_line`."""
        if kind not in ("csv", "jsonl"):
            raise InvalidArgumentError(f"`kind` must be 'csv' or 'jsonl', got {kind!r}")
        if self.setup.report_folder is not None:
            self.flags.export(self.setup.report_folder / f"flags.{kind}")
        return self.flags.export(self.exports / f"flags.{kind}")

    def verify_line(self, flags: Path) -> str:
        """How to verify exported flags: the exact `influence report` line when the app was opened
        on a report folder that can be retrained, else where to pass them."""
        from influence.report.bundle import verify_command

        folder = self.setup.report_folder
        if folder is not None and (folder / "bundle.json").exists():
            try:
                command = verify_command(folder, folder / flags.name, folder / "verified")
                return f"also saved as {folder / flags.name}; verify them with:\n{command}"
            except InvalidArgumentError:
                pass
        return ("pass it to influence report --flags (with --retrain and --verify to measure the "
                "fix)")

    def download(self, table: pd.DataFrame, name: str) -> Path:
        """A table at full precision as a CSV file to download."""
        path = self.exports / f"{name}.csv"
        table.to_csv(path, index=False)
        return path

    def summary(self) -> dict:
        """Facts for the page header."""
        d = self.attr.diagnostics
        return {"name": self.setup.name, "n_train": self.n_train, "n_eval": len(self.y_eval),
                "wrong": int((self.pred != self.y_eval).sum()), "method": d.get("method"),
                "curvature_backend": d.get("curvature_backend"), "damping": d.get("damping"),
                "notes": self.setup.notes}


def _check_id(value: Any, n: int, what: str, hint: str) -> int:
    """`value` as a row index in [0, n), or an `InvalidArgumentError` saying what was expected."""
    try:
        i = float(value)
    except (TypeError, ValueError):
        i = -1.5
    if not math.isfinite(i) or i != int(i) or not 0 <= i < n:
        raise InvalidArgumentError(f"{what} must be an integer in [0, {n - 1}] ({hint}), got {value!r}")
    return int(i)
