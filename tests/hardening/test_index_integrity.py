"""Index integrity: checksums verified on load, damage reported by file name, manifests from
elsewhere cannot point outside the folder, SIGKILL at random points during fit() always
resumes to the same result, and a concurrent reader never takes a half-written index."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import influence as inf
from influence.index_folder import manifest_checksum
from influence.storage import sha256_file
from tests.equality import assert_same_scores
from tests.hardening.kill_worker import SHARD_SIZE
from tests.hardening.kill_worker import fit as worker_fit
from tests.index_worker import fit as fit_index
from tests.index_worker import problem
from tests.test_index import query

WORKER = str(Path(__file__).with_name("kill_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])
FILES = [f"shards/features-0000{i}.npy" for i in range(5)] + ["method.safetensors"]


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory) -> Path:
    """A complete exact index of the worker problem: 5 shards of 64 rows and method.safetensors."""
    folder = tmp_path_factory.mktemp("integrity") / "idx"
    fit_index(folder, "exact")
    return folder


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """Scores of an uninterrupted fit, per method, with the kill worker's settings."""
    root = tmp_path_factory.mktemp("reference")
    return {m: worker_fit(root / m, m).scores(query()) for m in ("exact", "cg")}


# cross_cpu: compares computation paths (run again under another CPU capability in CI).
# The model is untrained on purpose (integrity, not attribution quality).
pytestmark = [pytest.mark.cross_cpu, pytest.mark.filterwarnings("ignore:the model looks untrained")]


def load(folder, **kwargs):
    return inf.Attributor.load(folder, problem()[0], **kwargs)


# ---------------------------------------------------------------------------- damaged files
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(file=st.sampled_from(FILES), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_is_reported_by_file_name(index_folder, file, where, bit):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(index_folder, Path(tmp) / "idx"))
        path = folder / file
        data = bytearray(path.read_bytes())
        data[int(where * len(data))] ^= 1 << bit
        path.write_bytes(bytes(data))
        with pytest.raises(inf.IndexFolderError, match=re.escape(str(path)) + ".*(corrupted|checksum)"):
            load(folder)


@pytest.mark.parametrize("file", FILES)
def test_truncated_files_are_reported_by_name_even_without_verification(index_folder, tmp_path, file):
    folder = Path(shutil.copytree(index_folder, tmp_path / "idx"))
    path = folder / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(inf.IndexFolderError, match=re.escape(str(path))):
        load(folder)
    with pytest.raises(inf.IndexFolderError, match=re.escape(str(path))):  # verify=False: on first use
        load(folder, verify=False).scores(query())


def tamper(folder: Path, change) -> None:
    """Edit the manifest and re-sign it (its manifest_sha256), as a deliberate forger would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("manifest_sha256", None)
    change(manifest)
    signed = {**manifest, "manifest_sha256": manifest_checksum(manifest)}
    (folder / "manifest.json").write_text(json.dumps(signed))


def test_a_manifest_cannot_point_outside_the_folder(index_folder, tmp_path):
    folder = Path(shutil.copytree(index_folder, tmp_path / "idx"))
    outside = tmp_path / "outside.npy"  # a valid shard, with its right checksum, outside shards/
    shutil.copy(folder / "shards" / "features-00001.npy", outside)

    def point_outside(m):
        m["shards"][1].update(file="../../outside.npy", sha256=sha256_file(outside))

    tamper(folder, point_outside)
    for verify in (True, False):
        with pytest.raises(inf.IndexFolderError, match=r"lists a shard '../../outside.npy' that is not a file name "
                                                       r"features-NNNNN.npy; refusing to open it"):
            load(folder, verify=verify)
    for bad in ("/etc/passwd", "features-00001.npy/../../../x.npy", None, 7):
        tamper(folder, lambda m: m["shards"][1].update(file=bad))
        with pytest.raises(inf.IndexFolderError, match="refusing to open it"):
            load(folder, verify=False)
    folder = Path(shutil.copytree(index_folder, tmp_path / "idx2"))
    tamper(folder, lambda m: m["method_state"].update(file="../outside.safetensors"))
    with pytest.raises(inf.IndexFolderError, match="method_state"):
        load(folder)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["shards"].pop(2), "the shards cover|expected to start at"),
    (lambda m: m["shards"][2].update(start=100), "expected to start at 128"),
    (lambda m: m.pop("shards"), r"field\(s\) \['shards'\]"),
    (lambda m: m.update(storage_dtype="int8"), "damaged"),
    (lambda m: m["key"].pop("method"), r"its key lacks \['method'\]"),
    (lambda m: m.update(n_train=301), "not n_train=301"),
])
def test_damaged_manifests_are_refused(index_folder, tmp_path, change, message):
    folder = Path(shutil.copytree(index_folder, tmp_path / "idx"))
    tamper(folder, change)
    with pytest.raises(inf.IndexFolderError, match=message):
        load(folder)


@pytest.mark.parametrize("text", ["{", "[]", "null", '{"key": {}}', "\udcff"])
def test_unreadable_manifests_are_refused(index_folder, tmp_path, text):
    folder = Path(shutil.copytree(index_folder, tmp_path / "idx"))
    (folder / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(inf.IndexFolderError, match="manifest.json is not"):
        load(folder)


def test_a_damaged_shard_sidecar_is_recomputed_on_resume(index_folder, tmp_path, references):
    folder = tmp_path / "idx"
    worker_fit(folder, "exact")
    manifest = json.loads((folder / "manifest.json").read_text())
    tamper(folder, lambda m: m.update(complete=False))
    (folder / "shards" / "features-00003.json").write_text('{"file": "../../elsewhere.npy"')
    resumed = worker_fit(folder, "exact")
    assert json.loads((folder / "manifest.json").read_text())["shards"] == manifest["shards"]
    assert_same_scores(resumed.scores(query()), references["exact"])


# ---------------------------------------------------------------------------- SIGKILL and readers
def start(folder: Path, method: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, WORKER, str(folder), method], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready", "the worker failed to start"
    return proc


def timeline(folder: Path, method: str) -> tuple[float, float]:
    """One uninterrupted worker fit: (seconds per shard, seconds from the last shard to the
    complete manifest: curvature, factorisation, method.safetensors), from file times."""
    proc = start(folder, method)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    sidecars = sorted(p.stat().st_mtime for p in (folder / "shards").glob("*.json"))
    per_shard = (sidecars[-1] - sidecars[0]) / (len(sidecars) - 1)
    return max(per_shard, 1e-3), max((folder / "manifest.json").stat().st_mtime - sidecars[-1], 1e-3)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def sidecars(folder: Path) -> int:
    return len(list((folder / "shards").glob("*.json"))) if (folder / "shards").exists() else 0


def test_sigkill_at_random_points_always_resumes_to_the_same_result(tmp_path, references):
    """10 trials: a worker fitting 19 shards is killed with SIGKILL at a random point (after a
    random number of complete shards, plus a random part of the next step: a shard, or the
    curvature and state after the last one); readers refuse the partial folder, and the next
    fit() resumes it to the same scores (to float rounding, same rankings: tests/equality.py), leaving no temporary file behind."""
    rng = random.Random(9)
    steps = {m: timeline(tmp_path / f"timing-{m}", m) for m in ("exact", "cg")}
    n_shards = -(-300 // SHARD_SIZE)
    stages = []
    for trial in range(10):
        method = ("exact", "cg")[trial % 2]
        folder = tmp_path / f"trial-{trial}"
        target = rng.randint(0, n_shards)
        per_shard, tail = steps[method]
        proc = start(folder, method)
        try:
            while sidecars(folder) < target and proc.poll() is None:
                time.sleep(0.002)
            delay = rng.uniform(0, per_shard if target < n_shards else tail)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        finally:
            proc.communicate(timeout=60)
        manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
        stages.append((proc.returncode, sidecars(folder), manifest.get("complete")))
        if not manifest.get("complete"):
            with pytest.raises(inf.IndexFolderError, match="no index|incomplete"):
                load(folder)
        resumed = worker_fit(folder, method)
        assert_same_scores(resumed.scores(query()), references[method])
        assert_same_scores(load(folder).scores(query()), references[method])
        assert leftovers(folder) == [], f"trial {trial} left {leftovers(folder)}"
    print(f"(returncode, complete shards of {n_shards}, manifest complete) at each kill:", stages)
    killed = [s for s in stages if s[0] == -signal.SIGKILL]
    assert len(killed) >= 7, f"most trials should die mid-fit: {stages}"
    assert len({s[1] for s in killed}) >= 4, f"the kills should land at different points: {stages}"


def test_a_reader_never_sees_a_half_written_index(tmp_path, references):
    """While a worker fits, another process's Attributor.load() is either refused (no index
    yet, or incomplete) or sees the complete index with the final scores; nothing between."""
    folder = tmp_path / "idx"
    model = problem()[0]
    proc = start(folder, "exact")
    outcomes = {"refused": 0, "complete": 0}
    while True:
        finished = proc.poll() is not None
        try:
            attr = inf.Attributor.load(folder, model)
        except inf.IndexFolderError as error:
            assert re.search(r"no index at|is incomplete", str(error)), str(error)
            outcomes["refused"] += 1
        else:
            assert_same_scores(attr.scores(query()), references["exact"])
            outcomes["complete"] += 1
        if finished:
            break
    proc.communicate(timeout=60)
    assert proc.returncode == 0 and outcomes["refused"] >= 1 and outcomes["complete"] >= 1, outcomes
    assert np.isfinite(references["exact"].numpy()).all() and SHARD_SIZE == 16
