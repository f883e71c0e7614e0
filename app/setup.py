"""What the app opens: a model, its fitted influence index, the training and eval data, and how
to show an example (`Setup`). Built by `app.sources` (an index or a report folder) or
`app.demo` (the built-in demos)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

MODALITIES = ("image", "text", "table")


@dataclass
class Setup:
    """Everything the app opens.

    Attributes:
        name: a title for the page.
        model: the classifier (returns logits [b, C]); run in eval mode, never modified.
        attributor: a fitted `influence.Attributor` over `train` (same order).
        train, eval: `datasets.Dataset`s with `input_column`, `label_column`; the training
            data carries the metadata (groups); the eval data needs none.
        modality: "image", "text" or "table": how an example is shown.
        class_names: one name per class (the model output index).
        flags_path: the reviewer's verdicts file (JSON), beside the index or the report.
        transform: turns a row's input into a tensor (as for `Attributor`), or None.
        encode: turns a raw user input (image array, text, dict of row values) into one
            model input tensor; None disables "explain this input" unless the view can do it.
        image_shape: (H, W) of a flattened image input.
        text_column: column with the text shown for an example.
        row_columns: raw columns shown for a tabular example (and edited for "explain").
        group_columns: metadata columns of `train` offered as groups (e.g. "source").
        notes: a line about the data shown under the title (plain text).
        report_folder: a regression report folder, when the app was opened on one.
        report: that report's report.json (checked against the opened model and eval data).
    """

    name: str
    model: nn.Module
    attributor: Any
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
    report: dict | None = None
