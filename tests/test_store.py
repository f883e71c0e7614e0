"""influence.store: one interface over memory and index folders, one fit sequence, and the
training data read once per fit (fingerprints taken in the same read as the gradients)."""

import shutil

import numpy as np
import pytest
import torch

import influence as inf
from influence.fingerprint import fingerprints
from influence.store import FolderStore, MemoryStore, Store
from tests.index_worker import CountingData, problem
from tests.test_index import query

pytestmark = pytest.mark.filterwarnings("ignore:the model looks untrained")


def fitted(data, method, cache_dir=None, **kwargs):
    model = problem()[0]
    return inf.Attributor(model, data, method=method, cache_dir=cache_dir, shard_size=64,
                          progress=False, **kwargs).fit()


def test_the_attributor_holds_a_store_and_inherits_nothing():
    assert inf.Attributor.__mro__ == (inf.Attributor, object)
    assert issubclass(MemoryStore, Store) and issubclass(FolderStore, Store)


@pytest.mark.parametrize("method", ["identity", "exact", "ekfac", "cg"])
def test_a_fresh_folder_fit_reads_the_training_data_as_often_as_one_in_memory(tmp_path, method):
    _, X, y = problem()
    memory, folder = CountingData(X, y), CountingData(X, y)
    fitted(memory, method)
    fitted(folder, method, tmp_path / "idx")
    assert folder.reads == memory.reads
    if method == "identity":  # no curvature: the gradient pass and the 64-example sanity check
        assert folder.reads == len(y) + 64


def test_both_stores_serve_the_same_features_in_order(tmp_path):
    _, X, y = problem()
    memory = fitted((X, y), "exact").index
    folder = fitted((X, y), "exact", tmp_path / "idx", storage_dtype="float64").index
    assert isinstance(memory, MemoryStore) and isinstance(folder, FolderStore)
    p = sum(w.numel() for w in problem()[0].parameters())
    assert (memory.n, memory.dim) == (folder.n, folder.dim) == (len(y), p)
    for rows in (7, 64, 1000):
        starts = [lo for lo, _ in folder.blocks(rows)]
        assert starts == sorted(starts) and starts[0] == 0
        stacked = torch.cat([b for _, b in folder.blocks(rows)])
        expected = torch.cat([b for _, b in memory.blocks(rows)])
        torch.testing.assert_close(stacked, expected, rtol=1e-12, atol=0)


def test_the_shard_pass_stores_the_fingerprints_of_the_data(tmp_path):
    _, X, y = problem()
    fitted((X, y), "identity", tmp_path / "idx")
    stored = np.load(tmp_path / "idx" / "fingerprints.npy")
    np.testing.assert_array_equal(stored, fingerprints(inf.Attributor(problem()[0], (X, y)).train))


def test_a_resume_with_a_lost_fingerprint_file_rewrites_it(tmp_path):
    _, X, y = problem()
    attr = fitted((X, y), "identity", tmp_path / "idx")
    expected = attr.scores(query())
    manifest = tmp_path / "idx" / "manifest.json"
    shutil.move(manifest, tmp_path / "manifest.json")  # an interrupted fit: shards but no manifest
    (tmp_path / "idx" / "shards" / "features-00002.fingerprints").unlink()
    data = CountingData(X, y)
    resumed = fitted(data, "identity", tmp_path / "idx")
    assert data.reads == len(y) + 64  # each shard read once, no gradients for complete ones
    torch.testing.assert_close(resumed.scores(query()), expected, rtol=1e-10, atol=1e-12)
    assert (tmp_path / "idx" / "shards" / "features-00002.fingerprints").exists()


def test_a_query_reads_the_test_set_once():
    model, X, y = problem()
    attr = fitted((X, y), "cg")
    Xq, yq = query()
    test = CountingData(Xq, yq)
    attr.scores(test)
    assert test.reads == len(yq)
    first = attr.diagnostics["last_solve"]
    attr.top_k(test, k=3)  # same test set: gradients again (one read), the solve reused
    assert test.reads == 2 * len(yq) and attr.diagnostics["last_solve"] == first
