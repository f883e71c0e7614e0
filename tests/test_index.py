"""The persistent index: reuse, resume after a crash, refusal of mismatches, integrity,
storage precision, queries without training data, and a 2-process torchrun fit."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

import influence as inf
from tests.index_worker import CountingData, fit, problem

WORKER = str(Path(__file__).with_name("index_worker.py"))
ROOT = str(Path(__file__).resolve().parents[1])


# cross_cpu: compares computation paths (run again under another CPU capability in CI).
# The model is untrained on purpose (integrity, not attribution quality).
pytestmark = [pytest.mark.cross_cpu, pytest.mark.filterwarnings("ignore:the model looks untrained")]


def query():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    return X, torch.tensor([0, 1, 2, 0, 1, 2, 0])


def in_memory(method):
    model, X, y = problem()
    return inf.Attributor(model, (X, y), method=method, progress=False).fit()


@pytest.mark.parametrize("method", ["exact", "cg", "identity"])
def test_folder_fit_and_load_equal_in_memory(tmp_path, method):
    expected = in_memory(method).scores(query())
    attr = fit(tmp_path / "idx", method)
    assert torch.allclose(attr.scores(query()), expected, rtol=1e-10, atol=1e-12)
    model, _, _ = problem()
    loaded = inf.Attributor.load(tmp_path / "idx", model)
    assert loaded.method.name == method
    assert torch.allclose(loaded.scores(query()), expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(loaded.self_influence(), in_memory(method).self_influence(), rtol=1e-8)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["format_version"] == 3 and len(manifest["shards"]) == 5
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])


def test_queries_never_touch_training_data(tmp_path):
    model, X, y = problem()
    data = CountingData(X, y)
    attr = inf.Attributor(model, data, method="cg", cache_dir=tmp_path, shard_size=64, progress=False).fit()
    reads = data.reads
    attr.scores(query())
    attr.top_k(query(), k=3)
    attr.self_influence()
    attr.group_scores(query(), [i % 3 for i in range(len(y))])
    assert data.reads == reads
    memory = CountingData(X, y)
    attr = inf.Attributor(model, memory, method="exact", progress=False).fit()
    reads = memory.reads
    attr.top_k(query(), k=3)
    attr.group_scores(query(), [i % 3 for i in range(len(y))])
    assert memory.reads == reads


def test_completed_index_is_reused_without_recomputing(tmp_path):
    fit(tmp_path, "exact")
    model, X, y = problem()
    data = CountingData(X, y)
    attr = inf.Attributor(model, data, method="exact", cache_dir=tmp_path, shard_size=64, storage_dtype="float64",
                          progress=False).fit()
    assert data.reads == len(y)  # one streamed read to check the data is the same; no gradients
    assert torch.allclose(attr.scores(query()), in_memory("exact").scores(query()), rtol=1e-10)


def test_killed_fit_resumes_to_the_same_result(tmp_path):
    folder = tmp_path / "idx"
    proc = subprocess.run([sys.executable, WORKER, str(folder), "exact", "200"], cwd=ROOT, timeout=300)
    assert proc.returncode == 137
    shards = sorted((folder / "shards").glob("*.json"))
    assert 1 <= len(shards) < 5, "the crash should leave a partial index"
    with pytest.raises(inf.IndexFolderError, match="incomplete"):
        inf.Attributor.load(folder, problem()[0])
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.npy")}
    attr = fit(folder, "exact")
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.npy")}
    assert all(after[name] == t for name, t in before.items()), "complete shards must not be rewritten"
    assert len(after) == 5
    torch.testing.assert_close(attr.scores(query()), fit(tmp_path / "fresh", "exact").scores(query()),
                               rtol=1e-12, atol=1e-12)


def test_mismatched_model_or_settings_are_refused(tmp_path):
    fit(tmp_path, "exact")
    model, X, y = problem()
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-3
    with pytest.raises(inf.IndexFolderError, match="model_fingerprint"):
        inf.Attributor.load(tmp_path, model)
    with pytest.raises(inf.IndexFolderError, match="model_fingerprint"):
        inf.Attributor(model, (X, y), method="exact", cache_dir=tmp_path, shard_size=64, storage_dtype="float64",
                       progress=False).fit()
    with pytest.raises(inf.IndexFolderError, match=r"damping: index has None, now 0.5"):
        inf.Attributor(problem()[0], (X, y), method="exact", damping=0.5, cache_dir=tmp_path, shard_size=64,
                       storage_dtype="float64", progress=False).fit()


def test_changed_training_data_is_refused_on_resume(tmp_path):
    subprocess.run([sys.executable, WORKER, str(tmp_path), "exact", "200"], cwd=ROOT, timeout=300)
    model, X, y = problem()
    X = X.clone()
    X[3, 0] += 1.0
    with pytest.raises(inf.IndexFolderError, match=r"training data of rows 0..63 differs"):
        inf.Attributor(model, (X, y), method="exact", cache_dir=tmp_path, shard_size=64, storage_dtype="float64",
                       progress=False).fit()


@pytest.mark.parametrize("change, message", [("labels", "the labels of row 5 \\(and 9 more rows\\)"),
                                             ("input", "the inputs of row 17\\.")])
def test_a_finished_index_is_never_served_for_changed_data(tmp_path, change, message):
    fit(tmp_path, "exact")
    model, X, y = problem()
    X, y = X.clone(), y.clone()
    if change == "labels":
        y[5:15] = (y[5:15] + 1) % 3
    else:
        X[17, 2] += 1e-9
    with pytest.raises(inf.IndexFolderError, match=message):
        inf.Attributor(model, (X, y), method="exact", cache_dir=tmp_path, shard_size=64, storage_dtype="float64",
                       progress=False).fit()
    with pytest.raises(inf.IndexFolderError, match=message):
        inf.Attributor.load(tmp_path, model, train=(X, y))
    inf.Attributor.load(tmp_path, model, train=problem()[1:])  # the same data is accepted


def test_changed_metadata_is_refused_by_load(tmp_path):
    datasets = pytest.importorskip("datasets")
    model, X, y = problem()
    data = datasets.Dataset.from_dict({"input": X.tolist(), "label": y.tolist(),
                                       "source": [f"day-{i % 4}" for i in range(len(y))]})
    inf.Attributor(model, data, method="identity", cache_dir=tmp_path, progress=False).fit()
    relabelled = data.map(lambda row, i: {"source": "day-9" if i == 40 else row["source"]}, with_indices=True)
    with pytest.raises(inf.IndexFolderError, match="the metadata of row 40"):
        inf.Attributor.load(tmp_path, model, train=relabelled)
    assert inf.Attributor.load(tmp_path, model, train=data).group_scores(query(), "source").sum.shape == (7, 4)


def test_a_cache_dir_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    model, X, y = problem()
    with pytest.raises(inf.InvalidArgumentError, match="`cache_dir` .* is not a folder"):
        inf.Attributor(model, (X, y), method="exact", cache_dir=path)


def test_load_without_task_rebuilds_the_stored_one(tmp_path):
    model, X, y = problem()
    task = inf.ClassificationTask(weight_decay=1e-3)
    fitted = inf.Attributor(model, (X, y), task=task, method="exact", cache_dir=tmp_path, progress=False).fit()
    loaded = inf.Attributor.load(tmp_path, model)
    assert loaded.task.weight_decay == 1e-3 and type(loaded.task) is inf.ClassificationTask
    torch.testing.assert_close(loaded.scores(query()), fitted.scores(query()), rtol=1e-12, atol=1e-12)

    class Local(inf.ClassificationTask):  # not importable by name: the error says what to pass
        pass

    inf.Attributor(model, (X, y), task=Local(weight_decay=1e-3), method="exact", cache_dir=tmp_path / "local",
                   progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match=r"Local\(weight_decay=0.001.*pass task= to load\(\)"):
        inf.Attributor.load(tmp_path / "local", model)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupted_shard_is_reported_by_name(tmp_path, damage):
    fit(tmp_path, "identity")
    shard = tmp_path / "shards" / "features-00002.npy"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x01
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    else:
        shard.unlink()
    with pytest.raises(inf.IndexFolderError, match="features-00002.npy"):
        inf.Attributor.load(tmp_path, problem()[0])


def test_low_precision_storage_is_accurate_and_overflow_is_caught(tmp_path):
    model, X, y = problem()
    full = in_memory("identity").scores(query())
    for dtype in ("float16", "bfloat16"):
        attr = inf.Attributor(model, (X, y), method="identity", cache_dir=tmp_path / dtype, storage_dtype=dtype,
                              progress=False).fit()
        assert spearmanr(full.flatten(), attr.scores(query()).flatten())[0] > 0.999
    big = (X * 1e6, y)  # a linear model's weight gradients scale with the inputs
    with pytest.raises(inf.InfluenceError, match="overflow float16"):
        inf.Attributor(torch.nn.Linear(6, 3).double(), big, method="identity", cache_dir=tmp_path / "big", storage_dtype="float16",
                       progress=False).fit()
    assert not (tmp_path / "big" / "method.safetensors").exists()


def test_group_scores_after_load_need_labels_or_train(tmp_path):
    fit(tmp_path, "identity")
    loaded = inf.Attributor.load(tmp_path, problem()[0])
    with pytest.raises(inf.InvalidArgumentError, match="loaded without `train`"):
        loaded.group_scores(query(), "source")
    g = loaded.group_scores(query(), ["a"] * 100 + ["b"] * 200)
    assert torch.allclose(g.sum.sum(dim=1), loaded.scores(query()).sum(dim=1))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_write_one_index(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", WORKER, str(tmp_path / "dist"), "exact"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = inf.Attributor.load(tmp_path / "dist", problem()[0])
    single = fit(tmp_path / "single", "exact")
    assert torch.allclose(loaded.scores(query()), single.scores(query()), rtol=1e-10, atol=1e-12)
