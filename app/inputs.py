"""Input components whose values always reach our handlers, which check them and answer in place.

Gradio checks some values itself before a handler runs (a number below `minimum`, a choice not
in a dropdown's list, an upload PIL cannot decode) and answers with its own red "Error" badge
and message (an upload's message even names its temporary path). These components pass the
value on unchecked instead; every handler checks it (`whole`, `real`, the `Session` methods)
and says what was expected in the tab's status line, keeping the page as it was
(`app.tabs.common.in_place`).

Uploads are checked here, before Gradio decodes them: an empty, unreadable, oversized or
non-image file becomes a `BadUpload` carrying our message, which the view turns into an error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gradio as gr

from influence.errors import InvalidArgumentError

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


class Number(gr.Number):
    """`gr.Number` whose value is passed on as sent (checked by the handler: `whole`, `real`)."""

    is_template = True  # drawn by gradio's own number component

    def preprocess(self, payload: Any) -> Any:
        return payload


class Slider(gr.Slider):
    """`gr.Slider` whose value is passed on as sent (checked by the handler)."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload


class Radio(gr.Radio):
    """`gr.Radio` whose value is passed on as sent, even when not one of its choices."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload


def dropdown(choices, **options) -> gr.Dropdown:
    """A `gr.Dropdown` that passes any value on (checked by the handler or the `Session`)."""
    return gr.Dropdown(choices, allow_custom_value=True, **options)


class BadUpload:
    """An upload that is not an image we can read; `message` says why (never a path)."""

    def __init__(self, message: str):
        self.message = message


class Image(gr.Image):
    """`gr.Image` that checks an upload (size, type, decodable) before decoding it; a bad one
    becomes a `BadUpload` with our message."""

    is_template = True
    max_bytes = 10 * 1024 * 1024  # set per instance: gradio reads props from __init__'s signature

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        problem = upload_problem(getattr(payload, "path", None), self.max_bytes)
        if problem:
            return BadUpload(problem)
        try:
            return super().preprocess(payload)
        except Exception:  # noqa: BLE001 — whatever gradio or PIL raise, the user gets our words
            return BadUpload("the upload could not be decoded as an image: choose a PNG or JPEG "
                             "file")


def upload_problem(path: str | None, max_bytes: int) -> str | None:
    """Why the file at `path` is not an image we can read, or None when it is."""
    from PIL import Image as PILImage

    if not path or not Path(path).is_file():
        return "the upload did not arrive: choose the image again"
    size = Path(path).stat().st_size
    if size == 0:
        return "the upload is empty (0 bytes): choose a PNG or JPEG image"
    if size > max_bytes:
        return (f"the upload is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:.1f} MB this "
                "app takes")
    try:
        with PILImage.open(path) as image:
            kind = image.format
            image.verify()
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as error:
        if isinstance(error, PILImage.DecompressionBombError):
            return "the image has too many pixels to decode safely"
        return "the upload is not an image (PNG, JPEG, GIF, BMP, WebP or TIFF) that can be read"
    if kind not in IMAGE_FORMATS:
        return f"the upload is a {kind} file; choose a PNG or JPEG image"
    return None


def whole(value: Any, name: str, low: int, high: int | None = None) -> int:
    """`value` as an integer in [low, high] (high None: no upper end), or our error naming
    `name`."""
    expected = f"a whole number in [{low}, {high}]" if high is not None else \
        f"a whole number ≥ {low}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be {expected}, got {_shown(value)}") from None
    above = high is not None and number > high
    if not math.isfinite(number) or number != int(number) or number < low or above:
        raise InvalidArgumentError(f"{name} must be {expected}, got {_shown(value)}")
    return int(number)


def real(value: Any, name: str, low: float) -> float:
    """`value` as a finite number ≥ low, or our error naming `name`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number ≥ {low:g}, "
                                   f"got {_shown(value)}") from None
    if not low <= number < float("inf"):
        raise InvalidArgumentError(f"{name} must be a number ≥ {low:g}, got {_shown(value)}")
    return number


def boolean(value: Any, name: str) -> bool:
    """A checkbox's value as a bool (None: False), or our error naming `name`."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise InvalidArgumentError(f"{name} must be true or false, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
