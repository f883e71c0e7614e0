"""Every input of every endpoint of the served app, hammered with out-of-range, empty and
wrong-type values through gradio_client: the answer is always ours (a "⚠ ..." status line, the
other outputs kept), never a Gradio error event, and the verdicts do not change.

File inputs get what a browser can send: nothing, an empty file and a file that is not an image.
"""

from __future__ import annotations

import pytest

pytest.importorskip("gradio", reason="gradio is not installed")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")

BAD = [-1, 0, -10**9, 10**12, 2.5, None, "", "abc", "1e999", [1, 2]]
# arguments each endpoint is hammered around: one value per input, harmless (writes need a verdict)
BASE = {
    "/predictions": ("all", "all", "wrong", 0, "", 1, 50),
    "/download_predictions": ("all", "all", "wrong", 0, "", 1, 50),
    "/trace": (3, 5),
    "/explain": (None, "predicted", 5),
    "/suspects": ("worst wrong predictions", "harm on the chosen predictions", 10),
    "/open_example": ("12",),
    "/flag": ("12", None, "", ""),
    "/flag_top": (None, "", False),
    "/groups": ("source", "worst wrong predictions"),
    "/group_members": ("source", "batch-1", "worst wrong predictions"),
    "/flag_group": ("source", "batch-1", None, "", False),
}


def answered_in_place(out, endpoint: str, args) -> None:
    status = out[-1] if isinstance(out, tuple) else out
    assert isinstance(status, str), f"{endpoint}{args}: {out!r}"
    assert "/tmp" not in status and "Traceback" not in status, f"{endpoint}{args}: {status}"
    if status.startswith("⚠"):
        kept = out[:-1] if isinstance(out, tuple) else ()
        assert all(v == {"__type__": "update"} for v in kept), f"{endpoint}{args}: outputs changed"


def test_every_input_answers_bad_values_in_place(server, tmp_path):
    client = gradio_client.Client(server.url, verbose=False, download_files=str(tmp_path),
                                  analytics_enabled=False)
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(BASE) <= set(named)
    before = client.predict(api_name="/flags")
    calls = 0
    for endpoint, base in BASE.items():
        for position in range(len(base)):
            for value in BAD if endpoint != "/explain" or position else bad_files(tmp_path):
                args = (*base[:position], value, *base[position + 1:])
                try:
                    out = client.predict(*args, api_name=endpoint)
                except Exception as error:  # noqa: BLE001 — how a Gradio error event arrives
                    pytest.fail(f"{endpoint}{args!r} raised a Gradio error: {error}")
                answered_in_place(out, endpoint, args)
                calls += 1
    assert client.predict(api_name="/flags") == before  # nothing was flagged by a bad value
    print(f"{calls} calls with bad values, all answered in place")


def bad_files(folder) -> list:
    empty, text = folder / "empty.png", folder / "notes.png"
    empty.write_bytes(b"")
    text.write_text("not an image")
    return [None, gradio_client.handle_file(str(empty)), gradio_client.handle_file(str(text))]
