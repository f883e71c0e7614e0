"""How often a fit reads the training data: examples fetched by a fresh fit in memory and by a
fresh fit into an index folder (`cache_dir`), and by a reuse of the finished folder.

A torch `Dataset` counts its `__getitem__` calls. The in-memory fit is the baseline measured
in the same run: a folder fit should read the data no more often (fingerprints are taken in
the same pass as the gradients). Several methods and models; appends to RESULTS.md.

    OMP_NUM_THREADS=1 python benchmarks/fit_reads.py [--n-train 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402


class CountingDataset(torch.utils.data.Dataset):
    """(x, y) pairs that count how many examples were fetched."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        self.X, self.y, self.reads = X, y, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.X[i], self.y[i]


def models(d: int, classes: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"linear": nn.Linear(d, classes),
            "mlp": nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))}


def reads(model: nn.Module, data: CountingDataset, method: str, cache_dir: str | None) -> int:
    data.reads = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inf.Attributor(model, data, method=method, cache_dir=cache_dir, progress=False,
                       shard_size=64).fit()
    return data.reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    d, classes = 8, 3
    X, y = torch.randn(args.n_train, d), torch.randint(0, classes, (args.n_train,))
    data = CountingDataset(X, y)
    rows = []
    for name, model in models(d, classes).items():
        for method in ("exact", "ekfac", "identity", "cg"):
            memory = reads(model, data, method, None)
            with tempfile.TemporaryDirectory() as tmp:
                fresh = reads(model, data, method, tmp)
                reused = reads(model, data, method, tmp)
            rows.append([name, method, args.n_train, memory, fresh, f"{fresh / memory:.2f}",
                         reused])
    header = ["model", "method", "n_train", "memory fit reads", "fresh folder fit reads",
              "÷ memory", "reuse of the folder reads"]
    table = markdown_table(header, rows)
    print("\n".join(table))
    append_section("Training-data reads per fit (benchmarks/fit_reads.py)", table)


if __name__ == "__main__":
    main()
