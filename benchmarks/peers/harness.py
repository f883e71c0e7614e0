"""Running adapters under a time limit, sweeping their settings, and tabulating the outcome.

A *config* is one adapter class with one settings dict. `run_config` builds it, times the
work a task asks of it (fit + scores, or fit + self-influence), and returns a `Run`
whether it succeeded, raised, returned non-finite values or ran out of time: failures are
rows in the tables, never dropped.
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adapters.base import Adapter, Problem, Unsupported


@dataclass
class Run:
    """One config's outcome on one task.

    Attributes:
        tool, method: the library and its method.
        settings: the full settings dict (defaults overridden by the sweep entry).
        setting: the text shown in tables ("defaults" or the changed knobs).
        score: the task metric (higher is better), or None when the run failed.
        seconds: wall time of the timed work (fit + queries), None when it failed.
        status: "ok", "failed: <error>", "timed out after N s", "unsupported: ...".
        extra: task-specific values (e.g. the 1-query time of the speed task).
    """

    tool: str
    method: str
    settings: dict
    setting: str
    score: float | None = None
    seconds: float | None = None
    status: str = "ok"
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.score is not None and math.isfinite(self.score)


@dataclass
class Measured:
    """What `work` may return instead of its bare output: the output (checked and evaluated)
    plus extra values for `Run.extra` (e.g. timings of parts of the work)."""

    output: Any
    extra: dict


class Timeout(Exception):
    pass


class NonFinite(Exception):
    """The adapter returned NaN or inf scores."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise `Timeout` in the main thread after `seconds` (checked between Python bytecodes, so
    a single long C call finishes first)."""
    if not seconds:
        yield
        return

    def handler(signum, frame):
        raise Timeout(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def short_error(err: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_config(cls: type[Adapter], problem: Problem, settings: dict, work: Callable[[Adapter], Any],
               evaluate: Callable[[Any], float], limit: float | None, label: str | None = None,
               verbose: bool = True, isolate: bool = True) -> Run:
    """Build `cls(problem, **settings)`, time `work(adapter)` (which calls fit and the queries)
    under `limit` seconds, then `evaluate(output)` (untimed) into the task score.

    With `isolate` the config runs in a forked child process, so every config starts from
    the same memory (peers that leak or fragment memory do not push later configs over the
    address-space limit) and a crash of the child is a failed row, not a dead harness."""
    if not isolate:
        return _run_config_here(cls, problem, settings, work, evaluate, limit, label, verbose)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        send.send(_run_config_here(cls, problem, settings, work, evaluate, limit, label, verbose))

    process = context.Process(target=child, daemon=True)
    process.start()
    send.close()
    full = {**cls.defaults, **settings}
    grace = None if limit is None else limit + 120  # the child's own alarm fires first
    run = receive.recv() if receive.poll(grace) else None
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join()
    if run is None:
        run = Run(cls.tool, cls.method, full, label or cls.describe(full),
                  status=f"failed: the process died (exit status {process.exitcode})" if process.exitcode
                  else f"timed out after {limit:.0f} s")
        if verbose:
            print(f"  {run.tool:18s} {run.method:26s} {run.setting[:48]:48s} {'—':>8s} {'—':>8s}  {run.status}",
                  flush=True)
    return run


def _run_config_here(cls, problem, settings, work, evaluate, limit, label, verbose) -> Run:
    full = {**cls.defaults, **settings}
    run = Run(cls.tool, cls.method, full, label or cls.describe(full))
    adapter = output = None
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with time_limit(limit):
                start = time.perf_counter()
                adapter = cls(problem, **settings)
                output = work(adapter)
                run.seconds = time.perf_counter() - start
        if isinstance(output, Measured):
            run.extra.update(output.extra)
            output = output.output
        _check_output(output)
        run.score = float(evaluate(output))
        if not math.isfinite(run.score):
            raise FloatingPointError(f"the task metric is {run.score}")
    except (Timeout, NonFinite) as err:
        run.status, run.seconds = str(err), None
    except (Unsupported, NotImplementedError) as err:
        run.status, run.seconds = f"unsupported: {short_error(err, 80) if str(err) else type(err).__name__}", None
    except MemoryError:
        run.status, run.seconds = "failed: out of memory (over the process's address-space limit)", None
    except Exception as err:  # a peer's failure is a result
        oom = "can't allocate memory" in str(err) or "not enough memory" in str(err)
        run.status = "failed: out of memory (over the process's address-space limit)" if oom else \
            f"failed: {short_error(err)}"
        run.seconds = None
        if verbose:
            traceback.print_exc(limit=-2)
    finally:
        if adapter is not None:
            adapter.close()
        adapter = output = None
        gc.collect()
    if verbose:
        shown = "—" if run.score is None else f"{run.score:.4f}"
        took = "—" if run.seconds is None else f"{run.seconds:.1f}s"
        print(f"  {run.tool:18s} {run.method:26s} {run.setting[:48]:48s} {shown:>8s} {took:>8s}  "
              f"{'' if run.status == 'ok' else run.status}", flush=True)
    return run


def _check_output(output: Any) -> None:
    tensors = output if isinstance(output, (tuple, list)) else [output]
    for t in tensors:
        if isinstance(t, torch.Tensor) and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise NonFinite(f"returned NaN/inf ({bad:,} of {t.numel():,} values)")


def sweep(cls: type[Adapter], problem: Problem, work, evaluate, limit: float | None, tuned: bool = True,
          verbose: bool = True) -> tuple[Run, Run | None, list[Run]]:
    """Run the defaults, then (when `tuned`) each entry of `cls.sweep`; returns
    (defaults run, best successful run or None, every run). Stops after two timeouts."""
    default = run_config(cls, problem, {}, work, evaluate, limit, verbose=verbose)
    runs = [default]
    if tuned:
        timeouts = int(default.status.startswith("timed out"))
        for settings in cls.sweep:
            full = {**cls.defaults, **settings}
            if full == cls.defaults or timeouts >= 2:
                continue
            run = run_config(cls, problem, settings, work, evaluate, limit, verbose=verbose)
            runs.append(run)
            timeouts += run.status.startswith("timed out")
    good = [r for r in runs if r.ok]
    best = max(good, key=lambda r: r.score) if good else None
    return default, best, runs


# ---------------------------------------------------------------------------- tables
def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{digits}f}"


def result_rows(default: Run, best: Run | None, ours_best: Run | None, tuned: bool = True) -> list[list[str]]:
    """Table rows for one (tool, method): the defaults and, when swept, the tuned setting."""
    rows = [_row(default, "defaults", ours_best)]
    if tuned:
        if best is None:
            rows.append([default.tool, default.method, "tuned: no setting succeeded", "—", "—", "—", "—",
                         _status(default)])
        elif best is not default:
            rows.append(_row(best, f"tuned: {best.setting}", ours_best))
        else:
            rows[0][2] = "defaults (= best of sweep)"
    return rows


def _row(run: Run, label: str, ours_best: Run | None) -> list[str]:
    base_score = ours_best.score if ours_best is not None else None
    base_time = ours_best.seconds if ours_best is not None else None
    return [run.tool, run.method, label, fmt(run.score), fmt_time(run.seconds), ratio(run.score, base_score),
            ratio(run.seconds, base_time), _status(run)]


def _status(run: Run) -> str:
    return "ok" if run.status == "ok" else run.status.replace("|", "/")


HEADER = ["tool", "method", "setting", "score", "wall time (s)", "score ÷ our best", "time ÷ our best", "status"]
