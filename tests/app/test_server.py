"""The served app (`python -m influence_app --index ...`), driven through its API with gradio_client.

Every endpoint is compared with the `influence` API called directly on the same model,
index and data (`reference`), never with the app's own earlier output; every endpoint's
error paths answer with our message in its status output (the last one) and no temp path.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gradio", reason="gradio is not installed")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")

from influence.data import as_data
from influence.harm import group_harm

K = 5
WORST = "worst wrong predictions"


@pytest.fixture(scope="module")
def reference(digits_setup):
    """Predictions and influence straight from the model and the Attributor."""
    setup = digits_setup
    X, y = as_data(setup.eval, "eval").batch(range(len(setup.eval)))
    with torch.no_grad():
        logits = setup.model(X)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    wrong = torch.nonzero(logits.argmax(1) != y).flatten()
    bad = wrong[loss[wrong].argsort(descending=True)]
    return {"X": X, "y": y, "pred": logits.argmax(1), "loss": loss, "bad": bad, "attr": setup.attributor,
            "setup": setup, "n": len(setup.train)}


def client_for(server, tmp_path):
    return gradio_client.Client(server.url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)


@pytest.fixture
def client(server, tmp_path):
    return client_for(server, tmp_path)


def rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def file_path(value) -> Path:
    """A File output: a path, or an update carrying one."""
    return Path(value["value"] if isinstance(value, dict) else value)


def test_api_lists_every_endpoint(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predictions", "/download_predictions", "/trace", "/download_trace", "/explain", "/suspects", "/flag",
            "/flags", "/export_flags_csv", "/export_flags_jsonl", "/groups", "/group_members",
            "/flag_group", "/open_example", "/undo_flags", "/flag_top"} <= names


def test_predictions_are_paged_filtered_and_searched(client, reference):
    table, count, status = client.predict("all", "all", "wrong", 0, api_name="/predictions")
    assert [r["eval id"] for r in rows(table)] == reference["bad"].tolist()[:50] and status == ""
    assert count.startswith(f"{len(reference['bad'])} matching predictions")
    n = len(reference["y"])
    seen = []
    for page in range(1, -(-n // 100) + 1):
        seen += [r["eval id"] for r in rows(client.predict("all", "all", "all", 0, "", page, 100,
                                                           api_name="/predictions")[0])]
    order = reference["loss"].argsort(descending=True, stable=True).tolist()
    assert seen == order  # every prediction, worst first, across the pages (not capped)
    threes = rows(client.predict("3", "all", "all", 0.5, api_name="/predictions")[0])
    expected = ((reference["y"] == 3) & (reference["loss"] >= 0.5)).sum().item()
    assert len(threes) == expected and all(r["true"] == "3" for r in threes)
    found = rows(client.predict("all", "all", "all", 0, str(order[7]), api_name="/predictions")[0])
    assert [r["eval id"] for r in found] == [order[7]]
    csv_file = file_path(client.predict("all", "all", "all", 0, api_name="/download_predictions")[0])
    full = list(csv.DictReader(csv_file.open()))
    assert len(full) == n and float(full[0]["loss"]) == pytest.approx(float(reference["loss"][order[0]]), rel=1e-6)


def test_trace_matches_the_influence_api(client, reference, tmp_path):
    j = int(reference["bad"][0])
    image, summary, probabilities, harmful_gallery, harmful, helpful_gallery, helpful, status = client.predict(
        j, K, api_name="/trace")
    top = reference["attr"].top_k((reference["X"][j:j + 1], reference["y"][j:j + 1]), k=K)
    for table, ranking in ((harmful, top.harmful), (helpful, top.helpful)):
        got = rows(table)
        assert [r["train id"] for r in got] == ranking.indices[0].tolist()
        changes = (ranking.scores[0].double() / reference["n"]).numpy()
        np.testing.assert_allclose([float(r["loss change if removed"]) for r in got], changes, rtol=5e-3)
        assert all(significant_digits(r["loss change if removed"]) <= 3 for r in got)
    assert all(r["effect"].startswith("harmful") for r in rows(harmful))
    assert all(r["effect"].startswith("helpful") for r in rows(helpful))
    assert len(harmful_gallery) == K and harmful_gallery[0]["caption"].startswith(f"#{int(top.harmful.indices[0, 0])} ")
    assert Path(harmful_gallery[0]["image"]).stat().st_size > 0 and Path(image).exists()
    assert probabilities["label"] == str(int(reference["pred"][j]))
    assert f"true class {int(reference['y'][j])}" in summary and status == ""
    full = list(csv.DictReader(file_path(client.predict(api_name="/download_trace")[0]).open()))  # same session
    harmful_rows = [r for r in full if r["kind"] == "harmful"]
    np.testing.assert_allclose([float(r["score"]) for r in harmful_rows], top.harmful.scores[0].numpy(), rtol=1e-6)


def significant_digits(text: str) -> int:
    mantissa = text.lower().split("e")[0]
    return len(mantissa.lstrip("-").replace(".", "").lstrip("0"))


def test_explain_an_uploaded_image(client, reference, tmp_path):
    from PIL import Image

    x = reference["X"][0].reshape(8, 8).numpy()
    pixels = np.round(255 * (1 - x)).astype(np.uint8)          # dark ink on white, as a scan would be
    path = tmp_path / "digit.png"
    Image.fromarray(np.kron(pixels, np.ones((8, 8), dtype=np.uint8))).save(path)
    out = client.predict(gradio_client.handle_file(str(path)), "predicted", K, api_name="/explain")
    summary, probabilities, harmful = out[1], out[2], rows(out[4])
    with torch.no_grad():
        predicted = int(reference["setup"].model(reference["X"][:1]).argmax())
    assert probabilities["label"] == str(predicted)
    assert "unlabeled input" in summary and f"loss of class {predicted}" in summary
    top = reference["attr"].top_k((reference["X"][:1], torch.tensor([predicted])), k=K)
    assert [r["train id"] for r in harmful][:3] == top.harmful.indices[0, :3].tolist()
    assert "loss of class 3" in client.predict(gradio_client.handle_file(str(path)), "3", K, api_name="/explain")[1]


def test_suspects_rank_by_harm_and_self_influence(client, reference):
    queries = "worst wrong predictions"
    got = rows(client.predict(queries, "self-influence (unusual or mislabeled)", 10, api_name="/suspects")[0])
    self_influence = reference["attr"].self_influence()
    assert [r["train id"] for r in got] == self_influence.argsort(descending=True)[:10].tolist()
    bad = reference["bad"][:300]
    scores = reference["attr"].scores((reference["X"][bad], reference["y"][bad])).double()
    harm = (-scores.sum(dim=0) / reference["n"]).numpy()  # the definition, computed here independently
    by_harm = rows(client.predict(queries, "harm on the chosen predictions", 5, api_name="/suspects")[0])
    assert [r["train id"] for r in by_harm] == np.argsort(-harm, kind="stable")[:5].tolist()
    np.testing.assert_allclose([float(r["harm"]) for r in by_harm], np.sort(harm)[::-1][:5], rtol=5e-3)


def test_groups_and_members_use_the_harm_definition(client, reference):
    plot, table, dropdown, status = client.predict("source", "worst wrong predictions", api_name="/groups")
    bad = reference["bad"][:300]
    expected = group_harm(reference["attr"], (reference["X"][bad], reference["y"][bad]),
                          list(reference["setup"].train["source"]), train=reference["setup"].train)
    got = {r["group"]: float(r["harm"]) for r in rows(table)}
    for value, harm in zip(expected.values, expected.harm):
        assert got[value] == pytest.approx(harm, rel=5e-3, abs=1e-9)
    top = rows(table)[0]["group"]
    assert top == expected.values[int(np.argmax(expected.harm))] and status.startswith(f"most harmful: source {top}")
    gallery, members, status = client.predict("source", top, "worst wrong predictions", api_name="/group_members")
    assert rows(members) and all(r["source"] == top for r in rows(members))


@pytest.mark.parametrize("endpoint, args, message", [
    ("/trace", (10**6, K), "the eval example must be an integer in [0, "),
    ("/predictions", ("all", "all", "all", 0, "", 99, 50), "`page` must be between 1 and"),
    ("/explain", (None, "predicted", K), "no image was given"),
    ("/suspects", (WORST, "harm on the chosen predictions", 20000), "show must be"),
    ("/open_example", ("",), "the training example must be an integer"),
    ("/flag", ("", "mislabeled", "3", ""), "open a training example first"),
    ("/group_members", ("source", "batch-99", "worst wrong predictions"), "no training example has source"),
    ("/flag_group", ("source", "batch-99", "remove", "", False), "no training example has source"),
])
def test_error_paths_answer_in_place(client, endpoint, args, message, tmp_path):
    out = client.predict(*args, api_name=endpoint)
    status = out[-1] if isinstance(out, tuple) else out
    assert status.startswith("⚠ ") and message in status, status
    assert "/tmp" not in status and "gradio" not in status.lower()  # our words, no temp paths
    kept = out[:-1] if isinstance(out, tuple) else ()
    assert all(v == {"__type__": "update"} for v in kept)  # every other output keeps its value


@pytest.mark.parametrize("endpoint, args, message", [
    ("/trace", (-1, K), "the eval example must be an integer in [0, "),
    ("/trace", (3, 0), "k must be a whole number in [1, 30], got 0"),
    ("/predictions", ("all", "all", "all", 0, "", 0, 50), "page must be a whole number ≥ 1, got 0"),
    ("/predictions", ("all", "all", "all", -5, "", 1, 50), "at least must be a number ≥ 0, got -5"),
    ("/predictions", ("all", "all", "all", "abc", "", 1, 50), "must be a number ≥ 0, got 'abc'"),
    ("/predictions", ("eleven", "all", "all", 0), "unknown class 'eleven'"),
    ("/groups", ("day", "worst wrong predictions"), "`column` must be one of ['source']"),
    ("/suspects", (WORST, "harm on the chosen predictions", 0), "show must be a whole number"),
])
def test_values_below_a_range_are_answered_like_values_above_it(client, endpoint, args, message):
    """Why 4: no Gradio range error (red badges); our message, the outputs kept."""
    out = client.predict(*args, api_name=endpoint)
    assert out[-1].startswith("⚠ ") and message in out[-1], out[-1]
    assert all(v == {"__type__": "update"} for v in out[:-1])


def test_a_bad_upload_is_refused_with_our_words(client, tmp_path):
    """Why 4: an empty or non-image .png never reaches Gradio's decoder (whose message names
    temporary paths)."""
    empty, text = tmp_path / "empty.png", tmp_path / "notes.png"
    empty.write_bytes(b"")
    text.write_text("not an image")
    for path, message in ((empty, "the upload is empty (0 bytes)"),
                          (text, "the upload is not an image")):
        upload = gradio_client.handle_file(str(path))
        status = client.predict(upload, "predicted", K, api_name="/explain")[-1]
        assert status.startswith(f"⚠ {message}")
        assert "/tmp" not in status and str(tmp_path) not in status


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_flags_with_corrected_labels_export_and_survive_a_restart(server, digits_folder, tmp_path):
    from influence.report.flags import read_flags

    before = (_digest(digits_folder / "train"), _digest(digits_folder / "index"))
    client = client_for(server, tmp_path)
    save(client, 12, "mislabeled", "7", "looks like a 7")
    table, verdict, about, status = client.predict("12", "mislabeled", "7", "looks like a 7",
                                                   api_name="/flag")
    expected = {"train id": 12, "verdict": "mislabeled", "corrected label": "7"}
    assert expected.items() <= rows(table)[0].items()
    assert status == "saved: training example 12 → mislabeled, corrected label 7" and verdict["value"] is None
    assert "flagged: mislabeled → 7" in about  # the line under the example follows the save
    save(client, 40, "remove", "", "")
    saved = json.loads((digits_folder / "index.flags.json").read_text())
    assert [(f["train_id"], f["verdict"], f["corrected_label"]) for f in saved["flags"]] == [
        (12, "mislabeled", "7"), (40, "remove", "")]
    exported = [read_flags(file_path(client.predict(api_name=f"/export_flags_{kind}")[0])) for kind in ("csv", "jsonl")]
    assert exported[0] == exported[1] and [(f.train_id, f.corrected_label, f.note) for f in exported[0]] == [
        (12, "7", "looks like a 7"), (40, "", "")]
    assert exported[0][0].source == str(server_source(digits_folder, 12))

    server.restart()
    client = client_for(server, tmp_path)
    flags = rows(client.predict(api_name="/flags"))
    assert [(f["train id"], f["verdict"], f["note"]) for f in flags] == \
        [(12, "mislabeled", "looks like a 7"), (40, "remove", "")]
    save(client, 12, "clear", "", "")
    assert rows(save(client, 40, "clear", "", "")[0]) == []
    assert (_digest(digits_folder / "train"), _digest(digits_folder / "index")) == before  # data untouched


def save(client, i: int, verdict: str, corrected: str, note: str):
    """Open training example i (its id typed, Enter), then save a verdict on it."""
    client.predict(str(i), api_name="/open_example")
    return client.predict(str(i), verdict, corrected, note, api_name="/flag")


def server_source(folder: Path, i: int) -> str:
    import datasets

    return datasets.load_from_disk(str(folder / "train"))[i]["source"]


def test_a_whole_group_can_be_flagged(client, digits_folder):
    import datasets

    status = client.predict("source", "batch-3", "remove", "", False, api_name="/flag_group")
    sources = list(datasets.load_from_disk(str(digits_folder / "train"))["source"])
    count = sources.count("batch-3")
    assert status.startswith(f"flagged {count} training examples of source batch-3 as remove")
    flags = rows(client.predict(api_name="/flags"))
    assert {f["train id"] for f in flags} == {i for i, s in enumerate(sources) if s == "batch-3"}
    client.predict("source", "batch-3", "clear", "", False, api_name="/flag_group")
    assert rows(client.predict(api_name="/flags")) == []


def test_save_applies_to_the_example_on_screen_only(client):
    """Why 1: a typed id that was not opened (Enter) is refused; nothing is saved."""
    opened = client.predict("25", api_name="/open_example")
    assert opened[0] == "25" and opened[-1] == ""
    status = client.predict("5", "keep", "", "", api_name="/flag")[-1]
    assert status.startswith("⚠ training example 5 is typed but 25 is shown")
    assert "nothing was saved" in status
    assert rows(client.predict(api_name="/flags")) == []
    fresh = gradio_client.Client(client.src, verbose=False, download_files=False,
                                 analytics_enabled=False)
    status = fresh.predict("5", "keep", "", "", api_name="/flag")[-1]
    assert "open a training example first" in status
    assert rows(client.predict(api_name="/flags")) == []


def test_a_verdict_needs_a_choice_and_a_matching_corrected_label(client):
    client.predict("12", api_name="/open_example")
    assert "choose a verdict" in client.predict("12", None, "", "", api_name="/flag")[-1]
    status = client.predict("12", "keep", "3", "", api_name="/flag")[-1]
    assert "a corrected label goes with the verdict 'mislabeled'" in status
    assert rows(client.predict(api_name="/flags")) == []


def test_a_note_belongs_to_its_row(client):
    """Why 3: opening another example shows its own note (none), so a note never carries over."""
    save(client, 12, "keep", "", "checked by hand")
    opened = client.predict("13", api_name="/open_example")
    assert opened[5] == ""                                    # the note box of example 13
    assert client.predict("12", api_name="/open_example")[5] == "checked by hand"
    save(client, 12, "clear", "", "")


def test_bulk_flags_keep_hand_made_verdicts_until_told_and_undo_reverts(client, reference):
    """Why 2: the k most harmful keep hand-made verdicts, say how many, and undo reverts."""
    j = int(reference["bad"][0])
    out = client.predict(j, K, api_name="/trace")
    top = [r["train id"] for r in rows(out[4])][:2]
    for i in top:
        save(client, i, "mislabeled", "3", f"note {i}")
    table, status = client.predict("remove", "", False, api_name="/flag_top")
    assert f"flagged {K - 2} training examples of the {K} most harmful as remove" in status
    assert "kept 2 hand-made verdicts" in status
    kept = {r["train id"]: r for r in rows(table)}
    assert all((kept[i]["verdict"], kept[i]["corrected label"], kept[i]["note"]) ==
               ("mislabeled", "3", f"note {i}") for i in top)
    assert "undone: remove on 3 training examples" in client.predict(api_name="/undo_flags")[-1]
    assert sorted(r["train id"] for r in rows(client.predict(api_name="/flags"))) == sorted(top)
    table, status = client.predict("remove", "", True, api_name="/flag_top")
    assert f"flagged {K} training examples" in status and "kept" not in status
    assert all(r["verdict"] == "remove" for r in rows(table))
    for _ in range(3):
        client.predict(api_name="/undo_flags")
    assert rows(client.predict(api_name="/flags")) == []


def test_ten_concurrent_clients_get_correct_traces(server, reference, tmp_path):
    ids = (reference["bad"].tolist() + list(range(len(reference["y"]))))[:10]
    expected = {}
    for j in ids:
        top = reference["attr"].top_k((reference["X"][j:j + 1], reference["y"][j:j + 1]), k=K)
        expected[j] = top.harmful.indices[0].tolist(), top.helpful.indices[0].tolist()

    def one(j: int):
        client = gradio_client.Client(server.url, verbose=False, download_files=False, analytics_enabled=False)
        out = client.predict(j, K, api_name="/trace")
        return j, [r["train id"] for r in rows(out[4])], [r["train id"] for r in rows(out[6])]

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(one, ids))
    assert len(answers) == 10
    for j, harmful, helpful in answers:
        assert (harmful, helpful) == expected[j], f"eval example {j}"


def test_one_trace_answers_in_under_a_second(server, reference, record_property):
    # the answer itself: gallery images come back as URLs (a browser fetches them in parallel)
    client = gradio_client.Client(server.url, verbose=False, download_files=False, analytics_enabled=False)
    ids = reference["bad"][:5].tolist()
    client.predict(ids[0], 8, api_name="/trace")  # warm up
    times = []
    for j in ids:
        started = time.perf_counter()
        client.predict(j, 8, api_name="/trace")
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    record_property("trace_round_trip_median_s", median)
    print(f"trace round trip through the server: median {median * 1000:.0f} ms over {len(times)}")
    assert median < 1.0
