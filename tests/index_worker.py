"""A deterministic fit into an index folder, run as a separate process by tests/test_index.py.

    python tests/index_worker.py FOLDER METHOD [CRASH_AFTER_READS]
    torchrun --nproc_per_node=2 tests/index_worker.py FOLDER METHOD

With CRASH_AFTER_READS, the process dies abruptly (os._exit, like kill -9) on that read of
the training data, leaving a partial index behind.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import influence as inf  # noqa: E402


def problem():
    """The same small MLP and data in every process."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(300, 6, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    return model, X, y


class CountingData(torch.utils.data.Dataset):
    """(input, label) pairs that count reads and can die after a number of them."""

    def __init__(self, X, y, crash_after=None):
        self.X, self.y, self.crash_after, self.reads = X, y, crash_after, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        if self.crash_after is not None and self.reads >= self.crash_after:
            os._exit(137)
        return self.X[i], self.y[i]


def fit(folder, method, crash_after=None):
    model, X, y = problem()
    data = CountingData(X, y, crash_after)
    return inf.Attributor(model, data, method=method, cache_dir=folder, shard_size=64, storage_dtype="float64",
                          progress=False).fit()


if __name__ == "__main__":
    crash = int(sys.argv[3]) if len(sys.argv) > 3 else None
    fit(sys.argv[1], sys.argv[2], crash)
