"""`influence.render`: notebook HTML for top-k and group results (images inline, values escaped)."""

import base64
import io
import re

import numpy as np
import pytest
import torch

from influence.render import group_scores_html, png, topk_html, view
from influence.results import GroupScores, Ranking, TopK


def test_png_decodes_to_the_image():
    Image = pytest.importorskip("PIL.Image")
    image = np.array([[0.0, 0.5], [1.0, 0.25]])
    decoded = np.asarray(Image.open(io.BytesIO(png(image, scale=3))))
    assert decoded.shape == (6, 6)
    expected = 255 - np.round(255 * image).astype(np.uint8)   # ink-high: 1.0 is black
    np.testing.assert_array_equal(decoded[::3, ::3], expected)


def test_topk_html_has_inline_images_and_escaped_values():
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict({"input": [[0.0] * 4, [1.0] * 4, [0.5] * 4],
                                        "label": ["<b>x</b>", "a", "b"],
                                        "text": ["<script>alert(1)</script>", "fine & dandy", "ok"]})
    top = TopK(helpful=Ranking(torch.tensor([[1, 2]]), torch.tensor([2.0, 1.0])[None]),
               harmful=Ranking(torch.tensor([[0, 2]]), torch.tensor([-3.0, -1.0])[None]))
    page = topk_html(top, train, image_shape=(2, 2), text_column="text")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "fine &amp; dandy" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "#0 <b>-3</b>" in page and "#1 <b>+2</b>" in page
    assert "-3" in topk_html(top) and "<img" not in topk_html(top)   # without train: indices and scores


def test_group_scores_html_orders_most_harmful_first_and_escapes():
    groups = GroupScores(["a", "<i>b</i>", "c"], torch.tensor([[1.0, -5.0, 0.5], [0.0, -1.0, 0.5]]),
                         torch.tensor([2, 3, 1]))
    page = group_scores_html(groups)
    assert page.index("&lt;i&gt;b&lt;/i&gt;") < page.index(">a<") < page.index(">c<")
    assert "<i>b</i>" not in page and "-6" in page
    assert view(groups)._repr_html_() == page
