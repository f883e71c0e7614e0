"""The built wheel installs only import names that are ours alone: no top-level name it
installs is installed by any other distribution in this environment (Hugging Face's
`kernels`, a dependency of transformers, once overwrote ours)."""

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"influence", "influence_kernels", "influence_app"}


def top_level_names(paths) -> set[str]:
    """First path components of installed files that are importable names (packages, modules)."""
    names = set()
    for path in paths:
        first = Path(str(path)).parts[0] if Path(str(path)).parts else ""
        if first.endswith((".dist-info", ".data", ".pth")) or first in ("..", "__pycache__") or not first:
            continue
        names.add(first.removesuffix(".py"))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so that no stale build/ folder can add files."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("influence", "kernels", "app"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    return next(out.glob("influence_debugger-*.whl"))


def test_the_wheel_installs_only_our_own_top_level_names(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = top_level_names(archive.namelist())
        files = archive.namelist()
    assert names == OURS, names
    installed_as = {"influence": "influence", "kernels": "influence_kernels", "app": "influence_app"}
    sources = {f"{name}/{path.relative_to(ROOT / folder).as_posix()}"
               for folder, name in installed_as.items() for path in (ROOT / folder).rglob("*.py")}
    assert sources - set(files) == set(), "source files the wheel leaves out (a package missing " \
                                          "from pyproject's packages list?)"
    assert "influence/report/schema.json" in files
    assert not any(f.startswith(("kernels/", "app/")) for f in files)


def test_no_other_distribution_here_installs_one_of_our_names(wheel):
    clashes = {}
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"] in (None, "influence-debugger"):
            continue
        declared = set((dist.read_text("top_level.txt") or "").split())
        shared = (declared | top_level_names(dist.files or [])) & OURS
        if shared:
            clashes[dist.metadata["Name"]] = sorted(shared)
    assert not clashes, f"distributions that install our import names: {clashes}"
