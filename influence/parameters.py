"""Which parameters are attributed: names, patterns, adapters, and a summary with sizes.

`select_parameters(model, wanted)` turns `Task.parameters` into parameter names:

- `None`: every trainable parameter (`requires_grad`). A PEFT model (LoRA and the other
  `peft` adapters, or a `transformers` model with an adapter added) whose base is frozen
  attributes its adapter parameters — those of the active adapter, e.g.
  `...query.lora_A.default.weight`, and its `modules_to_save` copies such as a classifier
  head — whether or not they still require gradients (`PeftModel.from_pretrained` freezes
  everything).
- a list of names and shell-style patterns (`*` any characters, dots included; `?` one):
  an entry selects a parameter when it matches the parameter's name or the name of one of
  its modules, e.g. `"fc2"` (→ `fc2.weight`, `fc2.bias`), `"classifier"`,
  `"encoder.layer.11.*"`, `"*lora_*"`. An entry that matches nothing from the model's root
  is matched from any module boundary inside, so `"encoder.layer.11.*"` finds
  `bert.encoder.layer.11.output.dense.weight` and `"classifier"` finds
  `base_model.model.classifier.modules_to_save.default.weight` (PEFT's unused
  `original_module` copies are left out unless named). Named parameters are attributed
  whether or not they require gradients.

`parameter_report(model, names)` says what was attributed and what was held fixed, with
sizes, for `Attributor.diagnostics["parameters"]`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from influence.errors import InvalidArgumentError


def _module_paths(name: str) -> list[list[str]]:
    """Dotted names a pattern may match for the parameter `name`, grouped by where they start:
    `[[from the root...], [from the 2nd segment...], ...]`, each the parameter's modules and
    the parameter itself (`a.b.w` → `[["a", "a.b", "a.b.w"], ["b", "b.w"], ["w"]]`)."""
    parts = name.split(".")
    return [[".".join(parts[i:j]) for j in range(i + 1, len(parts) + 1)] for i in range(len(parts))]


def _matches(pattern: str, name: str, anywhere: bool) -> bool:
    starts = _module_paths(name) if anywhere else _module_paths(name)[:1]
    return any(fnmatchcase(candidate, pattern) for group in starts for candidate in group)


def adapter_names(model: nn.Module) -> list[str] | None:
    """Names of the active PEFT adapters of `model` (e.g. `["default"]`), or None when it has none."""
    config = getattr(model, "peft_config", None)
    if not isinstance(config, dict) or not config:
        return None
    active = getattr(model, "active_adapters", None)
    try:
        active = active() if callable(active) else active
    except (ValueError, AttributeError):  # transformers raises when no adapter is active
        active = None
    active = [active] if isinstance(active, str) else list(active or [])
    return [a for a in active if a in config] or list(config)


def _adapter_parameters(model: nn.Module, adapters: Sequence[str]) -> list[str]:
    """Parameters that belong to one of the adapters: a name segment equal to the adapter's name
    (`lora_A.default.weight`, `classifier.modules_to_save.default.bias`)."""
    return [n for n, _ in model.named_parameters() if any(a in n.split(".") for a in adapters)]


def select_parameters(model: nn.Module, wanted: Sequence[str] | None) -> list[str]:
    """Names of the attributed parameters, in the model's order (rules: see the module docstring).

    Raises:
        InvalidArgumentError: no trainable parameter (with `wanted=None`), or an entry of
            `wanted` that matches no parameter (the message lists the module names).
    """
    names = [n for n, _ in model.named_parameters()]
    if wanted is None:
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        adapters = adapter_names(model)
        if adapters is not None:
            own = _adapter_parameters(model, adapters)
            if own and not set(trainable) - set(own):  # the base is frozen: its adapters are what was trained
                return own
        if not trainable:
            raise InvalidArgumentError(
                "`model` has no trainable parameters (all have requires_grad=False); there is nothing to attribute. "
                "Name the parameters to attribute with the task's `parameters=` (e.g. ['classifier'])"
            )
        return trainable
    if isinstance(wanted, str):
        wanted = [wanted]
    if adapter_names(model) is not None:  # PEFT keeps an unused copy of each module it trains a replacement of
        names = [n for n in names if "original_module" not in n.split(".")
                 or any("original_module" in w for w in wanted)]
    chosen: set[str] = set()
    unmatched = []
    for pattern in wanted:
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgumentError(f"task.parameters must hold parameter names or patterns, got {pattern!r}")
        found = {n for n in names if _matches(pattern, n, anywhere=False)} or \
                {n for n in names if _matches(pattern, n, anywhere=True)}
        if not found:
            unmatched.append(pattern)
        chosen |= found
    if unmatched:
        raise InvalidArgumentError(
            f"task.parameters names {unmatched}, which match no parameter of the model; its modules are "
            f"{_summarise(names, 30)} (patterns may use * and ?, e.g. 'encoder.layer.11.*' or '*lora_*')"
        )
    return [n for n in names if n in chosen]


def _group(name: str) -> str:
    """A parameter name with its layer numbers as `*`: `encoder.layer.3.attention.self.query.weight`
    → `encoder.layer.*.attention.self.query.weight`."""
    return re.sub(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)", "*", name)


def _summarise(names: Sequence[str], limit: int) -> list[str]:
    modules = list(dict.fromkeys(_group(n.rsplit(".", 1)[0]) if "." in n else n for n in names))
    return modules if len(modules) <= limit else modules[:limit] + [f"... ({len(modules) - limit} more)"]


def parameter_report(model: nn.Module, names: Sequence[str], upcast_from: str | None = None) -> dict:
    """What is attributed and what is held fixed.

    Returns:
        `{"attributed": {...}, "held_fixed": {...}}`, each with `tensors` (count), `numel`
        (number of scalars) and `groups` (`{name with layer numbers as *: numel}`), plus
        `dtypes` of the attributed parameters and, for a half-precision model attributed in
        float32 (`upcast_from`, e.g. "bfloat16"), a `precision` note.
    """
    params = dict(model.named_parameters())
    chosen = set(names)

    def part(selected: list[str]) -> dict:
        groups: dict[str, int] = {}
        for n in selected:
            groups[_group(n)] = groups.get(_group(n), 0) + params[n].numel()
        return {"tensors": len(selected), "numel": sum(params[n].numel() for n in selected), "groups": groups}

    report = {"attributed": part([n for n in params if n in chosen]),
              "held_fixed": part([n for n in params if n not in chosen]),
              "dtypes": sorted({str(params[n].dtype).removeprefix("torch.") for n in chosen})}
    if upcast_from:
        report["precision"] = (f"the model's {upcast_from} parameters are attributed in float32 (float32 copies; "
                               "the model is not changed)")
    return report
