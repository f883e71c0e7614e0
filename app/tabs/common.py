"""What every tab of the page shares: errors shown in place, tables rounded for reading,
thumbnails, Markdown-safe text.

Errors in place: a handler wrapped by `in_place(n)` returns its n outputs and a status line.
On our errors (`InfluenceError`, `ValueError`: a bad id, an empty upload, an unknown class)
it leaves the n outputs as they are (`gr.update()`) and shows our message in the tab's status
box; `InfluenceWarning`s raised while it ran are shown there too (and as a toast).
"""

from __future__ import annotations

import functools
import html
import re
import warnings

import gradio as gr
import pandas as pd

from influence.errors import InfluenceError, InfluenceWarning
from influence.report.flags import VERDICTS
from influence.report.readable import SHARE_DIGITS, percent, sig

SIGN_NOTE = ("loss change if removed = the estimated change of this prediction's loss if the training example were "
             "left out (score / n_train): < 0 harmful (it pushed the loss up), > 0 helpful. Harm of a group or an "
             "example = the estimated drop of the chosen predictions' summed loss without it.")
VERDICT_CHOICES = [*VERDICTS, "clear"]  # "clear" removes a flag
PERCENT_COLUMNS = ("share", "self-influence percentile", "confidence")
INTEGER_COLUMNS = ("eval id", "train id", "rank", "count", "harmed", "removed", "relabelled")


def md_text(text) -> str:
    """`text` for a Markdown component, shown literally: HTML and Markdown characters escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", html.escape(str(text), quote=False))


def plain_finding(text: str) -> str:
    """A report finding for a text box: its `column` code spans as quoted names."""
    return re.sub(r"`([^`]*)`", r"‘\1’", str(text))


def status_box(elem_id: str) -> gr.Textbox:
    return gr.Textbox(show_label=False, container=False, interactive=False, lines=1, max_lines=6,
                      placeholder="messages appear here", elem_id=elem_id)


def in_place(n: int):
    """Decorator: the handler returns `n` outputs then a status line; our errors keep the outputs."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", InfluenceWarning)
                try:
                    out = fn(*args, **kwargs)
                except (InfluenceError, ValueError) as error:
                    return (*[gr.update()] * n, f"⚠ {error}") if n else f"⚠ {error}"
            notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, InfluenceWarning)))
            for note in notes:
                gr.Warning(note)
            out = out if isinstance(out, tuple) else (out,)
            status = " ".join(filter(None, [out[-1], *(f"⚠ warning: {note}" for note in notes)]))
            return (*out[:-1], status) if n else status

        return wrapper

    return decorate


def bulk_status(outcome, what: str, verdict: str) -> str:
    """The status line of a bulk flag: how many changed, how many hand-made verdicts were kept."""
    line = f"flagged {outcome.changed} training examples {what} as {verdict}"
    if outcome.kept:
        plural = "s" if outcome.kept > 1 else ""
        line += (f"; kept {outcome.kept} hand-made verdict{plural} (tick “replace hand-made "
                 "verdicts” to overwrite them)")
    return line + "; Undo (Review tab) reverts this"


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy for reading: floats to 3 significant digits, shares and percentiles as percents
    (downloads keep the full precision)."""
    out = frame.copy()
    for c in out.columns:
        if c in PERCENT_COLUMNS:
            out[c] = [percent(float(v), SHARE_DIGITS if c == "share" else 3) for v in out[c]]
        elif c in INTEGER_COLUMNS:
            continue
        elif pd.api.types.is_float_dtype(out[c]):
            out[c] = [sig(float(v)) for v in out[c]]
    return out


def _thumbnail_columns(columns, view, id_column: str) -> list[str]:
    """The columns of a table as shown: an "image" column after the id when the view draws thumbnails."""
    columns = list(columns)
    if view is not None and view.has_thumbnails:
        columns.insert(columns.index(id_column) + 1, "image")
    return columns


def with_thumbnails(frame: pd.DataFrame, view=None, split: str = "train", id_column: str = "train id"
                    ) -> pd.DataFrame:
    """`frame` as read (`readable`), with image thumbnails after the id column when the view
    draws them (image modality). The columns match `thumbnail_datatypes`."""
    shown = readable(frame)
    if "image" in _thumbnail_columns(shown.columns, view, id_column):
        shown.insert(list(shown.columns).index(id_column) + 1, "image",
                     [view.thumbnail(split, i) for i in shown[id_column]])
    return shown


def empty_table(columns: list[str], view=None, id_column: str = "train id") -> pd.DataFrame:
    """An empty table with the columns a `with_thumbnails` table will have (its headers show)."""
    return pd.DataFrame(columns=_thumbnail_columns(columns, view, id_column))


def thumbnail_datatypes(columns: list[str], view=None, id_column: str = "train id") -> list[str]:
    """Column datatypes of a `with_thumbnails` table: the thumbnail column is the only Markdown
    one, so a data value is never rendered as Markdown or HTML."""
    return ["markdown" if c == "image" else "str" for c in _thumbnail_columns(columns, view, id_column)]


def file_box(label: str, elem_id: str) -> gr.File:
    """A download slot, hidden until a handler fills it (`shown_file`)."""
    return gr.File(label=label, interactive=False, visible=False, elem_id=elem_id)


def shown_file(path) -> dict:
    return gr.update(value=str(path), visible=True)


def clicked(evt: gr.SelectData, column: int = 0) -> int:
    """The id in column `column` of a clicked table row."""
    if not evt.row_value:
        raise ValueError("click a row of the table")
    try:
        return int(float(evt.row_value[column]))
    except (TypeError, ValueError, IndexError):
        raise ValueError("click a row of the table (its id could not be read)") from None
