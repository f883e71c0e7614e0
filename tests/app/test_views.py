"""`app.views`: what each modality shows and how it reads a new input."""

import numpy as np
import pandas as pd
import pytest

from influence_app.session import Session
from influence_app.views import ImageView, TableView, TextView
from tests.app.tiny import BOLD, SCRIPT


class FakeSession:
    def __init__(self, setup=None):
        self.setup = setup


def test_image_view_reads_a_scan_back_to_the_model_scale():
    pytest.importorskip("PIL")
    setup = type("S", (), {"image_shape": (8, 8)})()
    view = ImageView(FakeSession(setup))
    image = np.zeros((8, 8))
    image[1:7, 3:5] = np.linspace(0.2, 1.0, 12).reshape(6, 2)  # a stroke on a blank background
    shown = view.show(image)                      # dark ink on white, a white frame, upscaled
    assert shown.shape == (120, 120) and shown.dtype == np.uint8 and shown[0, 0] == 255
    np.testing.assert_array_equal(shown[12:-12:12, 12:-12:12], np.round(255 * (1 - image)))
    scan = np.kron(np.round(255 * (1 - image)).astype(np.uint8), np.ones((10, 10), dtype=np.uint8))
    shown = scan                                  # an 80×80 scan, dark ink on white
    np.testing.assert_allclose(view.parse(shown), image, atol=1 / 255)
    np.testing.assert_allclose(view.parse(255 - shown), image, atol=1 / 255)  # light ink on dark too
    rgb = np.repeat(shown[..., None], 3, axis=2)
    np.testing.assert_allclose(view.parse(rgb), image, atol=1 / 255)
    with pytest.raises(ValueError):
        view.parse(None)


def test_image_captions_and_thumbnails(digits_setup):
    import base64
    import io

    from PIL import Image

    session = Session(digits_setup)
    view = ImageView(session)
    trace = session.trace(int(session.bad[0]), 2)
    row = trace.harmful.iloc[0]
    assert view.caption(row) == f"#{row['train id']} · {row['label']} · {row['loss change if removed']:.3g}"
    cell = view.thumbnail("train", 5)
    assert cell.startswith("![#5](data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(cell.split(",", 1)[1].rstrip(")"))))
    assert image.size == (24, 24)  # 8×8 at scale 3


def test_text_view_spans_keep_the_text_as_is(tiny_text):
    session = Session(tiny_text)
    view = TextView(session)
    spans = view.show_examples(session.trace(0, 2).harmful, "harmful")
    texts = [t for t, kind in spans if kind == "harmful"]
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert any(SCRIPT in t for t in [session.example("train", i) for i in range(len(session.setup.train))])
    with pytest.raises(ValueError):
        view.parse("   ")


def test_table_view_shows_rows_and_reads_an_edited_row(tiny_table):
    session = Session(tiny_table)
    view = TableView(session)
    frame = view.show_examples(session.trace(0, 3).helpful, "helpful")
    assert list(frame.columns[:3]) == ["train id", "label", "loss change if removed"]
    assert {"color", "size"} <= set(frame.columns) and set(frame["label"]) <= {"small", "big"}
    edited = pd.DataFrame([{"color": BOLD, "size": "0.25"}])
    assert view.parse(edited) == {"color": BOLD, "size": "0.25"}
    assert view.parse({"headers": ["color", "size"], "data": [["red", 1.0]]}) == {"color": "red", "size": 1.0}
    assert view.show({"color": SCRIPT, "size": float("nan")}).iloc[0].tolist() == [SCRIPT, ""]
