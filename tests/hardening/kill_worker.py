"""A fit into an index folder, run as a subprocess and killed with SIGKILL by
tests/hardening/test_index_integrity.py.

    python tests/hardening/kill_worker.py FOLDER METHOD

Prints "ready" once imports are done (so that the kill lands in the fit, not in Python's
start-up), then fits and prints "done SECONDS".
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import influence as inf  # noqa: E402
from tests.index_worker import problem  # noqa: E402

SHARD_SIZE = 16  # 19 shards of the 300 training rows: many points to die at


def fit(folder, method):
    model, X, y = problem()
    return inf.Attributor(model, (X, y), method=method, cache_dir=folder, shard_size=SHARD_SIZE,
                          storage_dtype="float64", progress=False).fit()


if __name__ == "__main__":
    problem()
    print("ready", flush=True)
    started = time.perf_counter()
    fit(sys.argv[1], sys.argv[2])
    print(f"done {time.perf_counter() - started:.3f}", flush=True)
