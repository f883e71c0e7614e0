"""Is a training run metasmooth? `Replay.subset_linearity` for several recipes on one model.

For each recipe (full batch, cosine decay, 500 epochs, L2 1e-3; the MLP and data of
`benchmarks/lds.py`): train, replay, and for three random 50% subsets compare the actual
change of the trained parameters (the run re-done on the subset) with the first-order
change `Replay.parameter_change` predicts (cosine, and the norm ratio). Near 1 means
replay's exact derivative also predicts retraining on such subsets (high LDS); the time is
one `subset_linearity` as a multiple of one training run in the same process.

    OMP_NUM_THREADS=1 python benchmarks/replay_linearity.py [--dataset digits|mnist5k]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import append_section, markdown_table  # noqa: E402
from influence.replay import Replay, TrainingRecipe  # noqa: E402
from lds import DATASETS, MarginTask, mlp  # noqa: E402

RECIPES = {
    "Adam lr 1e-2 (the demos')": TrainingRecipe(optimizer="adam", lr=1e-2),
    "Adam lr 2e-3": TrainingRecipe(optimizer="adam", lr=2e-3),
    "SGD momentum 0.9, lr 0.05": TrainingRecipe(optimizer="sgd", lr=0.05, momentum=0.9),
    "SGD lr 0.5": TrainingRecipe(optimizer="sgd", lr=0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", choices=list(DATASETS))
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    load, dtype, _ = DATASETS[args.dataset]
    X, y, _, _ = load()
    X, task = X.to(dtype), MarginTask(weight_decay=1e-3)
    rows = []
    for name, recipe in RECIPES.items():
        initial = mlp(0, X.shape[1], dtype)
        start = time.perf_counter()
        trained = recipe.train(copy.deepcopy(initial), X, y, task)
        train_seconds = time.perf_counter() - start
        replay = Replay(initial, (X, y), recipe, task, trained=trained).fit()
        start = time.perf_counter()
        cosines = [replay.subset_linearity(0.5, seed=s) for s in range(3)]
        seconds = (time.perf_counter() - start) / 3
        shown = " / ".join(f"{c:.2f}" for c in cosines)
        rows.append([name, shown, f"{seconds / train_seconds:.1f}"])
        print(rows[-1], flush=True)
    table = markdown_table(["recipe", "subset_linearity (3 random halves)", "× one run"], rows)
    print("\n".join(table))
    if not args.no_record:
        append_section(f"Replay metasmoothness, {args.dataset} (benchmarks/replay_linearity.py)", [
            f"MLP {X.shape[1]}-32-10 tanh in {str(dtype)[6:]}, full batch, cosine, 500 epochs, "
            "L2 1e-3: cosine between the actual and the first-order (`Replay.parameter_change`) "
            "change of the trained parameters when training on a random 50% subset.", "", *table])


if __name__ == "__main__":
    main()
