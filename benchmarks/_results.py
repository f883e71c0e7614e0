"""Shared helpers for benchmark scripts: machine description and RESULTS.md rows."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line: CPU or GPU model, thread count, Python, torch (and triton if importable)."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = _cpu_name()
    parts = [device, f"{torch.get_num_threads()} threads", f"Python {platform.python_version()}",
             f"torch {torch.__version__}"]
    try:
        import triton

        parts.append(f"triton {triton.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def append_section(title: str, lines: list[str]) -> None:
    """Append a dated, machine-labelled section (a Markdown table or text lines) to RESULTS.md."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = [f"\n## {title} — {stamp}", f"Machine: {machine()}", "", *lines, ""]
    with RESULTS.open("a") as f:
        f.write("\n".join(block))


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out
