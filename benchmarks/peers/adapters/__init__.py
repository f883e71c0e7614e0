"""One module per peer library; each exposes `ADAPTERS`, a list of `Adapter` subclasses.

Modules end in `_` so that they do not shadow the libraries they wrap (`trak`, `dattri`...).
"""

from __future__ import annotations

import importlib

from adapters.base import Adapter, Problem, Unsupported

PEER_MODULES = ("kronfluence_", "trak_", "captum_", "dattri_")


def peer_adapters() -> tuple[list[type[Adapter]], dict[str, str]]:
    """Every peer adapter class, and {module: import error} for peers that failed to import."""
    found, failed = [], {}
    for name in PEER_MODULES:
        try:
            found += importlib.import_module(f"adapters.{name}").ADAPTERS
        except Exception as err:  # a missing or broken peer is reported, not fatal
            failed[name.rstrip("_")] = f"{type(err).__name__}: {err}"
    return found, failed


__all__ = ["Adapter", "Problem", "Unsupported", "peer_adapters"]
