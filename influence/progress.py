"""Progress bars that say, before the time is spent, when a phase will take long.

`phase(...)` is a tqdm bar (with its ETA) that, once a few seconds of work have shown the
pace, logs one line when the rest is estimated above `LONG_PHASE_SECONDS` — with the faster
options, when the caller knows some. The line goes to the `influence` logger and, when
bars are shown, above them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

LONG_PHASE_SECONDS = 60.0
logger = logging.getLogger("influence")


class _Phase:
    def __init__(self, bar: tqdm, desc: str, total: int, hint: str, shown: bool):
        self.bar, self.desc, self.total, self.hint, self.shown = bar, desc, total, hint, shown
        self.start, self.done, self.announced = time.perf_counter(), 0, False

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        elapsed = time.perf_counter() - self.start
        if self.announced or elapsed < 2.0 or not self.done or self.done >= self.total:
            return
        self.announced = True
        remaining = elapsed / self.done * (self.total - self.done)
        if remaining > LONG_PHASE_SECONDS:
            message = f"{self.desc}: about {format_seconds(remaining)} more (estimated from the first " \
                      f"{self.done:,} of {self.total:,}).{' ' + self.hint if self.hint else ''}"
            logger.warning(message)
            if self.shown:
                tqdm.write(message)


@contextmanager
def phase(desc: str, total: int, unit: str = "ex", enabled: bool = True, hint: str = "") -> Iterator[_Phase]:
    """A progress bar over `total` units (shown when `enabled`) that announces a long phase."""
    with tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, delay=1.0) as bar:
        yield _Phase(bar, desc, total, hint, enabled)


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
