"""Fixtures of the app tests: a small digits index built once, and a served app.

The server runs as `python -m influence_app --index ...` in a subprocess bound to a free port on
127.0.0.1, and is always stopped at the end of the session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """A small digits demo folder (hidden 8, 120 epochs): train/, eval/, model.safetensors, index/."""
    pytest.importorskip("datasets")
    pytest.importorskip("sklearn")
    from influence_app.demo import digits
    from tests.app.factory import HIDDEN

    folder = tmp_path_factory.mktemp("app") / "digits"
    digits(folder, hidden=HIDDEN, epochs=120, log=lambda line: None)
    return folder


@pytest.fixture(scope="session")
def digits_setup(digits_folder):
    from influence_app.sources import open_index

    return open_index(digits_folder / "index", "tests.app.factory:small_digits", digits_folder / "train",
                      digits_folder / "eval", weights=digits_folder / "model.safetensors")


class Server:
    """`python -m influence_app` in a subprocess; `start()`, `stop()`, `restart()` on the same port."""

    def __init__(self, args: list[str], folder: Path):
        self.args, self.folder = args, folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None
        self.output = ""

    def start(self, timeout: float = 120.0) -> None:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path, GRADIO_TEMP_DIR=str(self.folder / "gradio"))
        self.log = open(self.folder / f"server-{self.port}-{time.time_ns()}.log", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "influence_app", *self.args, "--port", str(self.port)],
                                        cwd=self.folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the app did not answer within {timeout} s:\n{self.read_log()}")

    def read_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def server(digits_folder):
    """The app served on the small digits index (a subprocess on 127.0.0.1)."""
    pytest.importorskip("gradio")
    f = digits_folder
    app = Server(["--index", str(f / "index"), "--factory", "tests.app.factory:small_digits", "--weights",
                  str(f / "model.safetensors"), "--train", str(f / "train"), "--eval", str(f / "eval")], f)
    app.start()
    yield app
    app.stop()


def run_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m influence.cli ARGS` with this checkout importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "influence.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=dict(os.environ, PYTHONPATH=path))


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory) -> Path:
    """A report folder written by `influence demo --dataset digits --model logreg` (about 15 s):
    report, index, models, data and bundle.json."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("demo") / "report"
    proc = run_cli("demo", "--dataset", "digits", "--model", "logreg", "--worst", "1", "--k", "3", "--out",
                   str(folder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"influence app --report {folder}" in proc.stdout
    (folder.parent / "demo-stdout.txt").write_text(proc.stdout)  # its output, outside the folder
    return folder


@pytest.fixture(scope="session")
def loop_report(demo_report, tmp_path_factory) -> tuple[Path, float]:
    """The report folder of the browser loop test and the seconds `influence demo` took: the digits
    demo's (shared with other tests), or the default Adult demo's with APP_LOOP_DEMO=adult."""
    if os.environ.get("APP_LOOP_DEMO", "digits") != "adult":
        return demo_report, float("nan")
    folder = tmp_path_factory.mktemp("adult-demo") / "report"
    started = time.perf_counter()
    proc = run_cli("demo", "--out", str(folder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, time.perf_counter() - started


@pytest.fixture(scope="session")
def report_server(demo_report):
    """`influence app --report DIR` on the demo report (a subprocess on 127.0.0.1)."""
    pytest.importorskip("gradio")
    app = Server(["--report", str(demo_report)], demo_report.parent)
    app.start()
    yield app
    app.stop()


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    """A tiny text setup whose texts and group values contain HTML (see tests/app/tiny.py)."""
    from tests.app.tiny import text_setup

    return text_setup(tmp_path_factory.mktemp("tiny-text"))


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory):
    from tests.app.tiny import table_setup

    return table_setup(tmp_path_factory.mktemp("tiny-table"))


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium through Playwright (skipped when either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("APP_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder

