"""Both models over the eval set: losses, predictions, and which examples regressed."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from influence.batching import to_model
from influence.data import ExampleData
from influence.errors import InvalidArgumentError
from influence.model import eval_mode
from influence.task import ClassificationTask, Task


def outputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    param = next(model.parameters(), None)
    return model(inputs if param is None else to_model(inputs, param.device, param.dtype))


def evaluate(model: nn.Module, data: ExampleData, task: Task, name: str, batch_size: int) -> dict:
    """Losses, predictions and correctness of `model` on every example of `data`."""
    losses, predictions, correct, targets, shapes = [], [], [], [], set()
    classify = isinstance(task, ClassificationTask)
    with torch.no_grad(), eval_mode(model):
        for _, x, y in data.batches(batch_size):
            try:
                out = outputs(model, x)
            except Exception as error:
                raise InvalidArgumentError(f"`{name}` failed on the inputs of `{data.argument}`: {error}") from error
            shapes.add(tuple(out.shape[1:]))
            task.check_batch(out, y.to(out.device), data.argument)
            losses.append(task.loss(out, y.to(out.device)).double().cpu())
            targets.append(y.cpu())
            if classify:
                pred = out.argmax(dim=-1).cpu()
                predictions.append(pred)
                correct.append(pred == y.cpu())
    losses_t = torch.cat(losses)
    if not torch.isfinite(losses_t).all():
        raise InvalidArgumentError(f"`{name}` gives non-finite losses on `{data.argument}`")
    return {"name": name, "shape": shapes.pop(), "losses": losses_t.numpy(), "targets": torch.cat(targets).numpy(),
            "predictions": torch.cat(predictions).numpy() if classify else [None] * len(losses_t),
            "correct": torch.cat(correct).numpy() if classify else None}


def check_same_outputs(old: dict, new: dict) -> None:
    if old["shape"] != new["shape"]:
        raise InvalidArgumentError(
            f"`new_model` returns outputs of shape [batch, {', '.join(map(str, new['shape']))}] but `old_model` "
            f"returns [batch, {', '.join(map(str, old['shape']))}]; the two versions must have the same outputs "
            "(same classes) to be compared")


def select_regressions(old: dict, new: dict, max_regressions: int, loss_rise: int) -> tuple[np.ndarray, list[str]]:
    """Eval indices: flipped right → wrong (largest loss rise first, at most `max_regressions`),
    then the `loss_rise` other examples whose loss rose most."""
    rise = new["losses"] - old["losses"]
    order = np.argsort(-rise, kind="stable")
    if old["correct"] is not None:
        flipped_mask = old["correct"] & ~new["correct"]
    else:
        flipped_mask = np.zeros(len(rise), bool)
    flipped = [j for j in order if flipped_mask[j]][:max_regressions]
    others = [j for j in order if not flipped_mask[j] and rise[j] > 0][:max(0, loss_rise)]
    return np.array(flipped + others, dtype=np.int64), ["flipped"] * len(flipped) + ["loss_rise"] * len(others)


def label_agreement(old_model: nn.Module, train: ExampleData, task: Task, batch_size: int):
    """bool[n_train]: does each training label equal the old model's prediction? (classification only)"""
    if not isinstance(task, ClassificationTask):
        return None
    out = []
    with torch.no_grad(), eval_mode(old_model):
        for _, x, y in train.batches(batch_size):
            out.append((outputs(old_model, x).argmax(dim=-1).cpu() == y.cpu()).numpy())
    return np.concatenate(out)
