"""The served app (`python -m app --index ...`), driven through its API with gradio_client.

Every endpoint is compared with the `influence` API called directly on the same model,
index and data (`reference`), never with the app's own earlier output.
"""

from __future__ import annotations

import concurrent.futures
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

from influence.data import as_data  # noqa: E402

K = 5


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
            "setup": setup}


def client_for(server, tmp_path):
    return gradio_client.Client(server.url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)


@pytest.fixture
def client(server, tmp_path):
    return client_for(server, tmp_path)


def rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def test_api_lists_every_endpoint(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predictions", "/trace", "/explain", "/suspects", "/flag", "/flags", "/groups",
            "/group_members"} <= names


def test_predictions_are_filtered_worst_first(client, reference):
    wrong = rows(client.predict("all", "all", "wrong", 0, api_name="/predictions"))
    assert [r["eval id"] for r in wrong] == reference["bad"].tolist()
    assert all(r["correct"] == "no" for r in wrong)
    every = rows(client.predict("all", "all", "all", 0, api_name="/predictions"))
    assert len(every) == len(reference["y"])
    losses = [r["loss"] for r in every]
    assert losses == sorted(losses, reverse=True)
    threes = rows(client.predict("3", "all", "all", 0.5, api_name="/predictions"))
    expected = ((reference["y"] == 3) & (reference["loss"] >= 0.5)).sum().item()
    assert len(threes) == expected and all(r["true"] == "3" and r["loss"] >= 0.5 - 1e-4 for r in threes)


def test_trace_matches_the_influence_api(client, reference):
    j = int(reference["bad"][0])
    image, summary, probabilities, harmful_gallery, harmful, helpful_gallery, helpful = client.predict(
        j, K, api_name="/trace")
    top = reference["attr"].top_k((reference["X"][j:j + 1], reference["y"][j:j + 1]), k=K)
    for table, ranking in ((harmful, top.harmful), (helpful, top.helpful)):
        got = rows(table)
        assert [r["train id"] for r in got] == ranking.indices[0].tolist()
        np.testing.assert_allclose([r["score"] for r in got], ranking.scores[0].numpy(), rtol=1e-4)
    assert all(r["score"] < 0 for r in rows(harmful)[:1]) and rows(helpful)[0]["score"] > 0
    assert len(harmful_gallery) == K and len(helpful_gallery) == K
    assert harmful_gallery[0]["caption"].startswith(f"#{int(top.harmful.indices[0, 0])} ")
    assert Path(harmful_gallery[0]["image"]).stat().st_size > 0 and Path(image).exists()
    assert probabilities["label"] == str(int(reference["pred"][j]))
    assert f"true class {int(reference['y'][j])}" in summary


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
    labeled = client.predict(gradio_client.handle_file(str(path)), "3", K, api_name="/explain")
    assert "loss of class 3" in labeled[1]


def test_suspects_rank_by_self_influence(client, reference):
    got = rows(client.predict("self-influence", 10, api_name="/suspects"))
    self_influence = reference["attr"].self_influence()
    assert [r["train id"] for r in got] == self_influence.argsort(descending=True)[:10].tolist()
    np.testing.assert_allclose([r["self-influence"] for r in got],
                               self_influence.sort(descending=True).values[:10].numpy(), rtol=1e-4)
    harmed = rows(client.predict("bad predictions harmed", 10, api_name="/suspects"))
    counts = [r["bad predictions harmed"] for r in harmed]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 1


def test_groups_and_drill_down(client, reference):
    plot, table, dropdown = client.predict("source", api_name="/groups")
    got = {r["group"]: r["harm"] for r in rows(table)}
    bad = reference["bad"][:300]
    scores = reference["attr"].scores((reference["X"][bad], reference["y"][bad])).double()
    sources = np.array(reference["setup"].train["source"])
    for group, harm in got.items():
        expected = -scores[:, torch.from_numpy(sources == group)].sum().item()
        assert harm == pytest.approx(expected, rel=1e-3, abs=1e-3)
    harms = list(got.values())
    assert harms == sorted(harms, reverse=True)
    top_group = rows(table)[0]["group"]
    gallery, members = client.predict("source", top_group, api_name="/group_members")
    members = rows(members)
    assert members and all(r["source"] == top_group for r in members)
    assert [r["total harm"] for r in members] == sorted((r["total harm"] for r in members), reverse=True)
    assert len(gallery) == min(16, len(members))


def test_bad_input_is_reported(client):
    with pytest.raises(Exception, match="eval_id"):
        client.predict(10**6, K, api_name="/trace")
    with pytest.raises(Exception, match="delete-it"):  # not one of the verdicts
        client.predict(3, "delete-it", "", api_name="/flag")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_flags_are_saved_beside_the_index_and_survive_a_restart(server, digits_folder, tmp_path):
    before = (_digest(digits_folder / "train"), _digest(digits_folder / "index"))
    client = client_for(server, tmp_path)
    table, status = client.predict(12, "mislabeled", "looks like a 7", api_name="/flag")
    assert {"train_id": 12, "verdict": "mislabeled"}.items() <= rows(table)[0].items()
    assert status.startswith("saved: training example 12 → mislabeled")
    client.predict(40, "keep", "", api_name="/flag")
    flags_file = digits_folder / "index.flags.json"
    saved = json.loads(flags_file.read_text())
    assert [(f["train_id"], f["verdict"]) for f in saved["flags"]] == [(12, "mislabeled"), (40, "keep")]

    server.restart()
    client = client_for(server, tmp_path)
    flags = rows(client.predict(api_name="/flags"))
    assert [(f["train_id"], f["verdict"], f["note"]) for f in flags] == [(12, "mislabeled", "looks like a 7"),
                                                                          (40, "keep", "")]
    client.predict(12, "clear", "", api_name="/flag")
    assert [f["train_id"] for f in rows(client.predict(40, "clear", "", api_name="/flag")[0])] == []
    assert (_digest(digits_folder / "train"), _digest(digits_folder / "index")) == before  # data untouched


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
