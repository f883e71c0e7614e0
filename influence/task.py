"""What is attributed: the training loss, the test measurement and the parameters.

A `Task` turns model outputs into per-example quantities. The training objective whose
curvature the influence methods invert is

    L(θ) = mean_i loss(f(x_i; θ), y_i) + (weight_decay / 2) · ‖θ_attr‖²,

where θ_attr are the attributed parameters (`Task.parameters`). Scores follow the sign
convention of the package (see `influence.Attributor`): the test side uses
`measurement(...)`, which defaults to the loss, so a positive score means "helpful".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from influence.data import IGNORE_INDEX
from influence.errors import InvalidArgumentError
from influence.linalg import eigh
from influence.model import default_forward
from influence_kernels.softmax_jacobian import softmax_jacobian_vp

# `Task.output_hessian` refuses to materialise more than this (b × O × O entries).
DENSE_OUTPUT_HESSIAN_BYTES = 1 << 30


class Task(ABC):
    """Defines the per-example training loss, the test measurement and what is attributed.

    Args:
        weight_decay: coefficient of the L2 regulariser `(weight_decay / 2)·‖θ‖²` that was
            part of the training objective (not AdamW's decoupled decay). It is added to
            the curvature as `weight_decay · I`.
        parameters: which parameters are attributed. `None` means every parameter with
            `requires_grad`; otherwise a sequence of names or name prefixes, e.g.
            `["fc2"]` for the last layer of `fc1 → relu → fc2`. Other parameters are held
            fixed.
    """

    # True when `loss` is convex in the model outputs, so that the Gauss-Newton curvature is
    # positive semi-definite (solvers then skip their indefiniteness check). A custom task
    # keeps False unless it knows better.
    convex_loss: bool = False

    def __init__(self, weight_decay: float = 0.0, parameters: Sequence[str] | None = None):
        if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay must be a float >= 0, got {weight_decay!r}")
        if isinstance(parameters, str):
            parameters = [parameters]
        self.weight_decay = float(weight_decay)
        self.parameters = None if parameters is None else list(parameters)

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-example training loss.

        Args:
            outputs: model outputs for a batch, shape [b, ...].
            targets: targets for the batch, shape [b, ...].
        Returns:
            Tensor[b], the loss of each example (not reduced).
        """

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-example test quantity whose change is attributed; defaults to the loss.

        Returns Tensor[b]. With the default, `score > 0` means the training example helped
        (removing it raises the test loss). For a custom "higher is better" measurement
        (e.g. a margin) the same formula holds: removing train_i changes the measurement
        by about `+score / n_train`.
        """
        return self.loss(outputs, targets)

    def output_hessian_vp(self, outputs: Tensor, targets: Tensor, U: Tensor) -> Tensor:
        """Products of the per-example Hessian of `loss` w.r.t. the outputs with k directions.

        Args:
            outputs: Tensor[b, ...]; targets: Tensor[b, ...].
            U: Tensor[k, b, ...], k output-space directions.
        Returns:
            Tensor[k, b, ...]. Used by the Gauss-Newton curvature `Jᵀ H_out J`. The default
            uses double differentiation; subclasses with a closed form override it.
        """
        grad = torch.func.grad(lambda o: self.loss(o, targets).sum())
        return torch.func.vmap(lambda u: torch.func.jvp(grad, (outputs,), (u,))[1])(U)

    def output_hessian(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-example Hessian of `loss` w.r.t. the outputs, Tensor[b, O, O] (O outputs per
        example), from `output_hessian_vp` applied to the O unit directions. Raises
        `InvalidArgumentError` rather than allocate more than `DENSE_OUTPUT_HESSIAN_BYTES`
        (a language model's sequence × vocabulary outputs)."""
        b, O = outputs.shape[0], outputs[0].numel()
        size = b * O * O * outputs.element_size()
        if size > DENSE_OUTPUT_HESSIAN_BYTES:
            raise InvalidArgumentError(
                f"the dense output Hessian of {type(self).__name__} for outputs of shape "
                f"{tuple(outputs.shape)} would take {size / 2**30:.1f} GiB ({O:,} outputs per "
                "example); the curvature paths use `output_hessian_vp` or "
                "`sample_output_hessian_factor` for outputs this large")
        eye = torch.eye(O, dtype=outputs.dtype, device=outputs.device)
        directions = eye[:, None, :].expand(O, b, O).reshape(O, *outputs.shape)
        return self.output_hessian_vp(outputs, targets, directions).reshape(O, b, O).transpose(0, 1)

    def output_hessian_factor(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """U: Tensor[b, O, r] with U Uᵀ = the output Hessian per example (the Gauss-Newton
        curvature's square root: one back-propagated direction per column). The default
        eigendecomposes `output_hessian`, clips negative eigenvalues (a non-convex loss) to
        zero, and drops directions that are zero for every example of the batch."""
        H = self.output_hessian(outputs, targets)
        w, V = eigh(0.5 * (H + H.transpose(1, 2)))
        w = w.clamp_min(0)
        keep = w.amax(dim=0) > 1e-12 * float(w.max().clamp_min(1e-300))
        return V[:, :, keep] * w[:, keep].sqrt()[:, None, :]

    def sample_output_hessian_factor(self, outputs: Tensor, targets: Tensor, samples: int,
                                     generator: torch.Generator | None = None) -> Tensor | None:
        """A random factor U: Tensor[b, O, samples] with E[U Uᵀ] = the output Hessian, for
        outputs too large to factorise exactly (a language model's tokens × vocabulary), or
        None when the task has none (then `output_hessian_factor` is used)."""
        return None

    def check_batch(self, outputs: Tensor, targets: Tensor, argument: str) -> None:
        """Raise `InvalidArgumentError` if `targets` cannot go with `outputs` (hook)."""

    def suspicious(self, outputs: Tensor, targets: Tensor) -> list[str]:
        """Reasons to doubt that the model fits this task (hook; checked once on a sample of the
        training data and warned about): e.g. an untrained model, or probabilities for logits."""
        return []

    def forward(self, model: torch.nn.Module, inputs) -> Tensor:
        """The model outputs for a batch of inputs (hook): `model(**inputs)` for a dict,
        `model(*inputs)` for a tuple, else `model(inputs)`; `.logits` of a Hugging Face output."""
        return default_forward(model, inputs)


class ClassificationTask(Task):
    """Cross-entropy on logits of shape [b, C] with integer labels of shape [b].

    Its Gauss-Newton output Hessian is the softmax Jacobian `diag(p) − p pᵀ`, applied in
    closed form by the fused `kernels.softmax_jacobian_vp` (no double differentiation).
    """

    convex_loss = True

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def output_hessian_vp(self, outputs: Tensor, targets: Tensor, U: Tensor) -> Tensor:
        return softmax_jacobian_vp(torch.softmax(outputs, dim=-1), U)

    def output_hessian_factor(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Closed form for diag(p) − ppᵀ: column c is √p_c (e_c − p) (C columns; for two
        classes the single column √(p₀p₁) (e₀ − e₁), the Hessian's rank). A subclass that
        changes the loss or its output Hessian gets the generic factor."""
        cls = type(self)
        if cls.loss is not ClassificationTask.loss or cls.output_hessian_vp is not ClassificationTask.output_hessian_vp:
            return super().output_hessian_factor(outputs, targets)
        p = torch.softmax(outputs, dim=-1)
        if p.shape[-1] == 2:
            return (p[:, :1] * p[:, 1:]).sqrt()[:, :, None] * p.new_tensor([1.0, -1.0])[None, :, None]
        eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
        return (eye[None] - p[:, :, None]) * p.sqrt()[:, None, :]

    def suspicious(self, outputs: Tensor, targets: Tensor) -> list[str]:
        """Probabilities instead of logits (rows ≥ 0 summing to 1), and a model no better than
        the best constant guess (mean loss ≥ 95% of the labels' entropy: untrained)."""
        reasons = []
        if (outputs >= 0).all() and torch.allclose(outputs.sum(-1), outputs.new_ones(()), atol=1e-4):
            reasons.append("the model's outputs look like probabilities (every row is >= 0 and sums to 1), but "
                           "ClassificationTask expects logits: remove the final softmax (or pass a Task whose loss "
                           "takes probabilities)")
        frequencies = torch.bincount(targets, minlength=outputs.shape[-1]).to(outputs.dtype) / len(targets)
        entropy = float(-(frequencies * frequencies.clamp_min(1e-30).log()).sum())
        loss = float(self.loss(outputs, targets).mean())
        if entropy > 0 and loss >= 0.95 * entropy:
            reasons.append(f"the model looks untrained: its mean training loss {loss:.3g} is no better than the best "
                           f"constant guess ({entropy:.3g}, the labels' entropy). Influence assumes a model trained to "
                           "a minimum of its objective; attribute the trained model")
        return reasons

    def check_batch(self, outputs: Tensor, targets: Tensor, argument: str) -> None:
        if outputs.ndim != 2:
            raise InvalidArgumentError(
                f"ClassificationTask expects the model to return logits of shape [batch, classes]; "
                f"got outputs of shape {tuple(outputs.shape)} for `{argument}`"
            )
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise InvalidArgumentError(
                f"labels of `{argument}` must be integers for ClassificationTask, got dtype {targets.dtype}"
            )
        if targets.shape != outputs.shape[:1]:
            raise InvalidArgumentError(
                f"labels of `{argument}` must be one class index per example, shape [{outputs.shape[0]}]; "
                f"got shape {tuple(targets.shape)}"
            )
        n_classes = outputs.shape[-1]
        if targets.numel() and (targets.min() < 0 or targets.max() >= n_classes):
            bad = targets[(targets < 0) | (targets >= n_classes)][0].item()
            raise InvalidArgumentError(
                f"labels of `{argument}` must lie in [0, {n_classes - 1}] (the model has {n_classes} "
                f"outputs); found label {bad}"
            )


class RegressionTask(Task):
    """Half squared error `0.5·‖f(x) − y‖²` per example (outputs and targets of equal shape)."""

    convex_loss = True

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        diff = (outputs - targets.reshape(outputs.shape).to(outputs.dtype)).reshape(outputs.shape[0], -1)
        return 0.5 * (diff**2).sum(dim=1)

    def output_hessian_vp(self, outputs: Tensor, targets: Tensor, U: Tensor) -> Tensor:
        return U

    def check_batch(self, outputs: Tensor, targets: Tensor, argument: str) -> None:
        if outputs.numel() != targets.numel():
            raise InvalidArgumentError(
                f"targets of `{argument}` have shape {tuple(targets.shape)}, which does not match "
                f"the model outputs of shape {tuple(outputs.shape)}"
            )


class LanguageModelingTask(Task):
    """Next-token cross-entropy of a language model, summed over each sequence's scored tokens.

    Outputs are logits Tensor[b, L, V] (a causal LM's `.logits`); targets are token ids
    LongTensor[b, L] aligned with the inputs (Hugging Face's `labels`), with
    `IGNORE_INDEX` (-100) where a token is not scored: padding, and for a measurement the
    prompt. With `shift=True` (default, causal LMs) the logits at position t predict
    targets[t + 1]; with `shift=False` they predict targets[t]. Per sequence,

        loss_i = Σ_t −log softmax(logits[i, t])[target[i, t']]   over scored tokens t',

    so a training document's loss is its summed token loss and a test measurement is the
    loss of the scored span: with `token_labels(ids, mask, prompt_length=...)` as the test
    targets, "which training documents made the model write this completion?".
    Scores follow the package convention: positive = the training document made the
    completion more likely (removing it raises the completion's loss).
    """

    convex_loss = True

    def __init__(self, weight_decay: float = 0.0, parameters: Sequence[str] | None = None, shift: bool = True):
        super().__init__(weight_decay, parameters)
        self.shift = bool(shift)

    def _align(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(logits Tensor[b, T, V], labels LongTensor[b, T]) with logits[:, t] predicting labels[:, t]."""
        if self.shift:
            return outputs[:, :-1], targets[:, 1:]
        return outputs, targets

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        logits, labels = self._align(outputs, targets)
        scored = labels != IGNORE_INDEX
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return -(picked * scored).sum(dim=1)

    def output_hessian_vp(self, outputs: Tensor, targets: Tensor, U: Tensor) -> Tensor:
        """Per scored position the softmax Jacobian `diag(p) − p pᵀ`; zero elsewhere."""
        logits, labels = self._align(outputs, targets)
        V = outputs.shape[-1]
        probs = torch.softmax(logits, dim=-1).reshape(-1, V)
        part = U[:, :, :-1] if self.shift else U
        product = softmax_jacobian_vp(probs, part.reshape(U.shape[0], -1, V)).reshape(part.shape)
        product = product * (labels != IGNORE_INDEX).unsqueeze(-1).to(product.dtype)
        if self.shift:
            product = torch.cat([product, torch.zeros_like(U[:, :, -1:])], dim=2)
        return product

    def sample_output_hessian_factor(self, outputs: Tensor, targets: Tensor, samples: int,
                                     generator: torch.Generator | None = None) -> Tensor:
        """Pseudo-label factor (as Kronfluence's sampled Fisher): column s holds, at each scored
        position t, (p_t − e_y) / √samples with y ~ p_t drawn from the model's own prediction,
        zero elsewhere; Tensor[b, L·V, samples]. Per position E[(p − e_y)(p − e_y)ᵀ] =
        diag(p) − ppᵀ, the softmax Jacobian, and draws at different positions are independent
        with mean zero, so E[U Uᵀ] is the exact block-diagonal output Hessian — without ever
        forming it (memory: `samples` copies of the logits)."""
        logits, labels = self._align(outputs, targets)
        probs = torch.softmax(logits.detach(), dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        draws = torch.multinomial(flat, samples, replacement=True, generator=generator)  # [b·T, s]
        draws = draws.to(probs.device).unsqueeze(1)
        columns = probs.unsqueeze(-1).expand(*probs.shape, samples).clone()  # [b, T, V, samples]
        minus_one = -torch.ones_like(draws, dtype=probs.dtype)
        columns.view(-1, probs.shape[-1], samples).scatter_add_(1, draws, minus_one)
        scored = (labels != IGNORE_INDEX)[..., None, None].to(columns.dtype)
        columns = columns * scored / samples ** 0.5
        if self.shift:
            last = columns.new_zeros(columns.shape[0], 1, *columns.shape[2:])
            columns = torch.cat([columns, last], dim=1)
        return columns.reshape(outputs.shape[0], -1, samples)

    def check_batch(self, outputs: Tensor, targets: Tensor, argument: str) -> None:
        if outputs.ndim != 3:
            raise InvalidArgumentError(
                f"LanguageModelingTask expects the model to return logits of shape [batch, length, vocabulary]; "
                f"got outputs of shape {tuple(outputs.shape)} for `{argument}`"
            )
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise InvalidArgumentError(f"labels of `{argument}` must be token ids (integers), got {targets.dtype}")
        if targets.shape != outputs.shape[:2]:
            raise InvalidArgumentError(
                f"labels of `{argument}` must be one token id per position, shape {list(outputs.shape[:2])}, with "
                f"{IGNORE_INDEX} where a token is not scored; got shape {tuple(targets.shape)}"
            )
        empty = ~(self._align(outputs, targets)[1] != IGNORE_INDEX).any(dim=1)
        if empty.any():
            raise InvalidArgumentError(
                f"row {int(empty.nonzero()[0])} of `{argument}` scores no token (every label is "
                f"{IGNORE_INDEX} after the shift: padding, or a prompt_length covering the whole "
                "sequence), so its loss and gradient are zero; give each sequence at least one "
                "scored token after its first")
        vocabulary = outputs.shape[-1]
        bad = targets[(targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocabulary))]
        if bad.numel():
            raise InvalidArgumentError(
                f"labels of `{argument}` must be token ids in [0, {vocabulary - 1}] or {IGNORE_INDEX} (not scored); "
                f"found {bad[0].item()}"
            )


def token_labels(input_ids: Tensor, attention_mask: Tensor | None = None,
                 prompt_length: int | Tensor = 0) -> Tensor:
    """Targets for `LanguageModelingTask`: a copy of `input_ids` (LongTensor[b, L]) with
    `IGNORE_INDEX` at padding (`attention_mask == 0`) and at the first `prompt_length`
    positions of each row (an int, or LongTensor[b] per row), so that only the completion
    after the prompt is scored."""
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        raise InvalidArgumentError("`input_ids` must be an integer tensor of shape [batch, length]")
    labels = input_ids.clone().long()
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise InvalidArgumentError(f"`attention_mask` has shape {tuple(attention_mask.shape)}, `input_ids` "
                                       f"{tuple(input_ids.shape)}; they must match")
        labels[attention_mask == 0] = IGNORE_INDEX
    start = torch.as_tensor(prompt_length, device=input_ids.device).reshape(-1, 1)
    if (start < 0).any():
        raise InvalidArgumentError(f"`prompt_length` must be >= 0, got {prompt_length!r}")
    labels[(torch.arange(input_ids.shape[1], device=input_ids.device) < start).expand_as(labels)] = IGNORE_INDEX
    empty = (labels == IGNORE_INDEX).all(dim=1)
    if empty.any():
        raise InvalidArgumentError(
            f"row {int(empty.nonzero()[0])} has no token left to score after its prompt_length "
            f"and padding (prompt_length={prompt_length!r}): the completion span is empty, so "
            "every score would be 0. Give each row a prompt shorter than its sequence")
    return labels


def describe_task(task: Task) -> dict:
    """What an index stores of its task: class path, weight decay, attributed parameters."""
    cls = type(task)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "weight_decay": task.weight_decay,
            "parameters": task.parameters}


def task_from_description(description: dict, task_class: type[Task] | None = None) -> Task:
    """Rebuild a task stored with an index (`{"class", "weight_decay", "parameters"}`).

    The stored class path is only a name to look up, never imported: it must be one of this
    package's own task classes, or `task_class` (the caller's own `Task` subclass) with the
    same name. Anything else raises an `InvalidArgumentError` naming the `task=` to pass."""
    path = description.get("class", "")
    allowed = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in BUILT_IN_TASKS}
    if task_class is not None:
        if not issubclass(task_class, Task):
            raise InvalidArgumentError(f"`task` must be an influence.Task or a Task subclass, got {task_class!r}")
        allowed[f"{task_class.__module__}.{task_class.__qualname__}"] = task_class
    cls = allowed.get(path)
    if cls is None:
        raise InvalidArgumentError(
            f"the index was built with task {path!r}(weight_decay={description.get('weight_decay')}, "
            f"parameters={description.get('parameters')}), which is not one of this package's task classes "
            f"({', '.join(sorted(allowed))}); an index folder never makes us import code: pass task=YourTask(...) "
            "or task=YourTask (the class) to load()")
    try:
        return cls(weight_decay=description["weight_decay"], parameters=description["parameters"])
    except Exception as error:  # noqa: BLE001 — any failure means: the user must pass the task
        raise InvalidArgumentError(
            f"the index's task {path}(weight_decay={description.get('weight_decay')}, parameters="
            f"{description.get('parameters')}) cannot be rebuilt here ({type(error).__name__}: {error}); "
            "pass task= to load()") from None


BUILT_IN_TASKS = (ClassificationTask, RegressionTask, LanguageModelingTask)
