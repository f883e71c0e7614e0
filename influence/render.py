"""HTML views of results for notebooks: `TopK` and `GroupScores` as tables.

    from influence.render import view
    view(attr.top_k(test, k=5), train, image_shape=(8, 8))   # thumbnails of the training images
    view(attr.group_scores(test, "source"))                   # groups with bars

`TopK._repr_html_` / `GroupScores._repr_html_` call `topk_html(self)` / `group_scores_html(self)`
(indices and scores only); `view(...)` adds the training examples: images as inline base64
PNG (no files, no network), texts and table cells escaped, so a value such as
`<script>` is shown as text, never run. Scores follow the package convention: positive =
helpful (a proponent), negative = harmful (an opponent).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # type hints only: results.py imports this module (lazily), never the reverse
    from influence.results import GroupScores, TopK

STYLE = ("<style>.inf-r table{border-collapse:collapse;font-size:12px}.inf-r td,.inf-r th{border:1px solid #ddd;"
         "padding:2px 6px;text-align:left;vertical-align:top}.inf-r .harm{color:#a11}.inf-r .help{color:#171}"
         ".inf-r img{image-rendering:pixelated;display:block}.inf-r .bar{display:inline-block;height:9px}</style>")


def png(image: Any, scale: int = 4, ink_high: bool = True) -> bytes:
    """Encode a grayscale image [H, W] (floats in [0, 1] or uint8) as PNG bytes (Pillow).

    `ink_high`: high values are drawn dark (digits, MNIST). Each pixel becomes a
    `scale`×`scale` block.
    """
    from PIL import Image

    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"png() needs a 2-D grayscale image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.round(255 * np.clip(a.astype(np.float64), 0.0, 1.0)).astype(np.uint8)
    if ink_high:
        a = 255 - a
    buffer = io.BytesIO()
    Image.fromarray(np.kron(a, np.ones((scale, scale), dtype=np.uint8)), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def img_tag(image: Any, scale: int = 4, title: str = "") -> str:
    """An `<img>` with the image inline as a base64 PNG data URI."""
    data = base64.b64encode(png(image, scale)).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" title="{html.escape(title, quote=True)}" alt="">'


def _example_html(train: Any, i: int, input_column: str, image_shape: Sequence[int] | None,
                  text_column: str | None, columns: Sequence[str] | None) -> str:
    row = train[int(i)]
    parts = []
    if image_shape is not None:
        parts.append(img_tag(np.asarray(row[input_column], dtype=np.float32).reshape(tuple(image_shape))))
    if text_column is not None:
        text = str(row[text_column])
        parts.append(html.escape(text if len(text) <= 200 else text[:197] + "..."))
    for c in columns or ():
        parts.append(f"{html.escape(str(c))}={html.escape(str(row[c]))}")
    return "<br>".join(parts) if image_shape is None else " ".join(parts)


def topk_html(top: TopK, train: Any = None, *, input_column: str = "input", label_column: str = "label",
              image_shape: Sequence[int] | None = None, text_column: str | None = None,
              columns: Sequence[str] | None = None, max_test: int = 10) -> str:
    """HTML table per test row: rank, most harmful and most helpful training examples.

    Args:
        top: `Attributor.top_k(...)`.
        train: the training `datasets.Dataset` (optional): adds labels and the examples —
            images (`image_shape`, from `input_column`) as inline PNG, `text_column`
            escaped, and the values of `columns`.
        max_test: show at most this many test rows.
    """
    n_test, k = top.helpful.indices.shape
    out = [STYLE, '<div class="inf-r">',
           f"<p>top-{k} for {n_test} test example(s); score &gt; 0 helpful, &lt; 0 harmful</p>"]
    for j in range(min(n_test, max_test)):
        out.append(f"<table><tr><th>test {j}</th><th class='harm'>most harmful</th>"
                   "<th class='help'>most helpful</th></tr>")
        for r in range(k):
            cells = []
            for ranking in (top.harmful, top.helpful):
                i, s = int(ranking.indices[j, r]), float(ranking.scores[j, r])
                text = f"#{i} <b>{s:+.4g}</b>"
                if train is not None:
                    text += f" label {html.escape(str(train[i][label_column]))}<br>"
                    text += _example_html(train, i, input_column, image_shape, text_column, columns)
                cells.append(f"<td>{text}</td>")
            out.append(f"<tr><td>{r + 1}</td>{''.join(cells)}</tr>")
        out.append("</table>")
    if n_test > max_test:
        out.append(f"<p>... {n_test - max_test} more test rows (use to_pandas())</p>")
    out.append("</div>")
    return "".join(out)


def group_scores_html(groups: GroupScores, max_groups: int = 30, max_test: int = 6) -> str:
    """HTML table of groups, most harmful in total first: count, total and mean score over
    the test rows (negative = harmful), a bar, and the per-test sums of the first test rows."""
    total = groups.sum.double().sum(dim=0)
    count = groups.count
    order = total.argsort().tolist()[:max_groups]  # most negative (harmful) first
    scale = float(total.abs().max()) or 1.0
    n_test = groups.sum.shape[0]
    heads = "".join(f"<th>test {j}</th>" for j in range(min(n_test, max_test)))
    out = [STYLE, '<div class="inf-r"><table>',
           f"<tr><th>group</th><th>count</th><th>sum over tests</th><th>mean per example</th><th></th>{heads}</tr>"]
    for g in order:
        t = float(total[g])
        color = "#c44" if t < 0 else "#4a4"
        bar = f'<span class="bar" style="width:{int(80 * abs(t) / scale)}px;background:{color}"></span>'
        per_test = "".join(f"<td>{float(groups.sum[j, g]):+.4g}</td>" for j in range(min(n_test, max_test)))
        out.append(f"<tr><td>{html.escape(str(groups.groups[g]))}</td><td>{int(count[g])}</td><td>{t:+.4g}</td>"
                   f"<td>{t / max(int(count[g]), 1):+.4g}</td><td>{bar}</td>{per_test}</tr>")
    out.append("</table>")
    if len(groups.groups) > max_groups:
        out.append(f"<p>... {len(groups.groups) - max_groups} more groups (use to_pandas())</p>")
    out.append("</div>")
    return "".join(out)


class HTMLView:
    """Wraps a result and rendering options; Jupyter calls `_repr_html_`."""

    def __init__(self, result: TopK | GroupScores, train: Any = None, **options: Any):
        self.result, self.train, self.options = result, train, options

    def _repr_html_(self) -> str:
        # by shape, not by class: this module never imports influence.results (which imports
        # it for its own _repr_html_), so there is no import cycle, not even a lazy one
        if hasattr(self.result, "helpful") and hasattr(self.result, "harmful"):
            return topk_html(self.result, self.train, **self.options)
        if hasattr(self.result, "groups") and hasattr(self.result, "sum"):
            return group_scores_html(self.result, **self.options)
        raise TypeError(f"nothing to render for {type(self.result).__name__}")


def view(result: TopK | GroupScores, train: Any = None, **options: Any) -> HTMLView:
    """A notebook view of `result`; see `topk_html` and `group_scores_html` for options."""
    return HTMLView(result, train, **options)
