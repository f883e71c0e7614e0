"""How an example is shown, one class per modality: images, texts, table rows.

An `ExampleView` makes the Gradio components of its modality and turns a `Session`'s raw
values and tables into their values. Data values are always handed to components that show
text as text (gallery captions, highlighted text, table cells), never as HTML or Markdown;
the only Markdown cells are the image thumbnails this module draws (`thumbnail`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_app.session import Session, Trace
from influence.report.readable import sig


class ExampleView:
    """Base: components for the query, the ranked training examples and a new input."""

    wide_query = False  # show the query across the page (rows) rather than beside the prediction
    max_upload_bytes = 10 * 1024 * 1024  # the largest upload an input takes (the server's cap)
    has_thumbnails = False  # tables get an image column (`thumbnail`)

    def __init__(self, session: Session):
        self.session = session
        self.setup = session.setup

    def query_component(self, label: str, elem_id: str | None = None):
        """A read-only component showing one example."""
        raise NotImplementedError

    def examples_component(self, label: str, rows: int = 1, elem_id: str | None = None):
        """A component showing a ranked list of training examples (about `rows` rows high)."""
        raise NotImplementedError

    def input_component(self):
        """An editable component for "explain this input"."""
        raise NotImplementedError

    def show(self, raw):
        """Value of `query_component` for a raw example."""
        raise NotImplementedError

    def show_examples(self, table: pd.DataFrame, kind: str):
        """Value of `examples_component` for a table with `train id` (and `score`)."""
        raise NotImplementedError

    def parse(self, value):
        """The raw input (as `Setup.encode` takes it) from `input_component`'s value."""
        return value

    def caption(self, row) -> str:
        """"#12 · 7 · −0.00123": train id, label, and the estimated loss change if removed (when known)."""
        change = row.get("loss change if removed")
        effect = "" if change is None else f" · {sig(float(change))}"
        return f"#{row['train id']} · {row['label']}{effect}"

    def thumbnail(self, split: str, i: int) -> str:
        """A Markdown cell for a table (images only: an inline PNG; else "")."""
        return ""


class ImageView(ExampleView):
    """Flattened grayscale images, ink-high values in [0, 1] (like the digits)."""

    scale = 12  # display pixels per image pixel
    has_thumbnails = True

    def query_component(self, label, elem_id=None):
        import gradio as gr

        return gr.Image(label=label, type="numpy", interactive=False, height=160, format="png", elem_id=elem_id)

    def examples_component(self, label, rows=1, elem_id=None):
        import gradio as gr

        return gr.Gallery(label=label, columns=8, height=20 + 125 * rows, object_fit="scale-down",
                          allow_preview=False, format="png", interactive=False, elem_id=elem_id)

    def input_component(self):
        from influence_app.inputs import Image

        image = Image(label="upload an image (dark ink on light, or light on dark)", type="numpy",
                      image_mode="L", sources=["upload", "clipboard"], height=160,
                      elem_id="explain-image")
        image.max_bytes = self.max_upload_bytes
        return image

    def show(self, raw):
        image = np.clip(np.asarray(raw, dtype=np.float32), 0.0, 1.0)
        pixels = np.pad(np.round(255 * (1.0 - image)).astype(np.uint8), 1, constant_values=255)  # dark ink on white
        return np.kron(pixels, np.ones((self.scale, self.scale), dtype=np.uint8))

    def show_examples(self, table, kind):
        session = self.session
        return [(self.show(session.example("train", int(row["train id"]))), self.caption(row))
                for _, row in table.iterrows()]

    def thumbnail(self, split, i):
        import base64

        from influence.render import png

        data = base64.b64encode(png(self.session.example(split, int(i)), scale=3)).decode("ascii")
        return f"![#{int(i)}](data:image/png;base64,{data})"

    def parse(self, value):
        """Grayscale, resized to the model's image shape, scaled to [0, 1] with ink high."""
        from PIL import Image

        from influence_app.inputs import BadUpload

        if value is None:
            raise ValueError("no image was given")
        if isinstance(value, BadUpload):
            raise ValueError(value.message)
        array = np.asarray(value, dtype=np.float32)
        if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
            raise ValueError(f"the image must be 2-D (height × width), got shape {array.shape}")
        if array.ndim == 3:
            array = array[..., :3].mean(axis=2)
        h, w = self.setup.image_shape
        small = np.asarray(Image.fromarray(array).resize((w, h), Image.Resampling.BOX), dtype=np.float32)
        low, high = float(small.min()), float(small.max())
        small = (small - low) / (high - low) if high > low else np.zeros_like(small)
        border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
        return 1.0 - small if np.median(border) > 0.5 else small  # bright background: invert to ink-high


class TextView(ExampleView):
    """Texts: the ranked examples as highlighted passages (red harmful, green helpful)."""

    def query_component(self, label, elem_id=None):
        import gradio as gr

        return gr.Textbox(label=label, interactive=False, lines=3, max_lines=8, elem_id=elem_id)

    def examples_component(self, label, rows=1, elem_id=None):
        import gradio as gr

        return gr.HighlightedText(label=label, color_map={"harmful": "#f6b3b3", "helpful": "#b5e8c2"},
                                  show_legend=False, combine_adjacent=False, show_inline_category=False,
                                  elem_id=elem_id)

    def input_component(self):
        import gradio as gr

        return gr.Textbox(label="type a text", lines=3, placeholder="a review to classify and trace")

    def show(self, raw):
        return str(raw)

    def show_examples(self, table, kind):
        spans = []
        for _, row in table.iterrows():
            spans.append((f"{self.caption(row)}: ", None))
            spans.append((self.session.example("train", int(row["train id"])), kind))
            spans.append(("\n\n", None))
        return spans

    def parse(self, value):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("no text was given")
        return value


class TableView(ExampleView):
    """Table rows: the raw columns of each ranked example, with its score."""

    wide_query = True

    def query_component(self, label, elem_id=None):
        import gradio as gr

        return gr.Dataframe(label=label, interactive=False, wrap=False, elem_id=elem_id)

    def examples_component(self, label, rows=1, elem_id=None):
        import gradio as gr

        return gr.Dataframe(label=label, interactive=False, wrap=False, max_height=420, elem_id=elem_id)

    def input_component(self):
        import gradio as gr

        first = self.session.example("eval", 0)
        return gr.Dataframe(value=pd.DataFrame([first]), label="edit the row, then predict and trace",
                            interactive=True, row_count=1, wrap=False, elem_id="explain-row")

    def show(self, raw):
        return pd.DataFrame([{c: _cell(v) for c, v in raw.items()}])

    def show_examples(self, table, kind):
        rows = [{"train id": int(r["train id"]), "label": r["label"],
                 **({"loss change if removed": sig(float(r["loss change if removed"]))}
                    if "loss change if removed" in r else {}),
                 **{c: _cell(v) for c, v in self.session.example("train", int(r["train id"])).items()}}
                for _, r in table.iterrows()]
        return pd.DataFrame(rows)

    def parse(self, value):
        try:
            frame = value if isinstance(value, pd.DataFrame) else \
                pd.DataFrame(value["data"], columns=value["headers"])
        except (TypeError, KeyError, ValueError, IndexError):
            raise ValueError("the row could not be read: edit the cells of the row above") from None
        if frame.empty:
            raise ValueError("the row is empty")
        return frame.iloc[0].to_dict()


def _cell(value):
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else value


VIEWS = {"image": ImageView, "text": TextView, "table": TableView}


def view_for(session: Session) -> ExampleView:
    return VIEWS[session.setup.modality](session)


def trace_summary(trace: Trace) -> str:
    """A plain-text line about a traced prediction (shown in a textbox, as text)."""
    truth = f"true class {trace.label}, " if trace.label is not None else "unlabeled input, "
    return (f"{truth}predicted {trace.predicted} ({trace.probabilities[trace.predicted]:.1%}); "
            f"attributed: the loss of class {trace.target} = {sig(trace.loss)}")
