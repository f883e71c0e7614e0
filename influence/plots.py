"""Pictures of attribution results (matplotlib, imported lazily)."""

from __future__ import annotations

import numpy as np

from influence.results import TopK


def save_trace_grid(path: str, test, train, top: TopK, predicted: list[int], image_shape: tuple[int, int],
                    input_column: str = "input", label_column: str = "label") -> None:
    """One row per test image: the image, then its most harmful and most helpful training images.

    Args:
        test, train: `datasets.Dataset`s whose `input_column` holds flattened images.
        top: `Attributor.top_k(test, k)` for these test rows.
        predicted: the model's predicted class per test row.

    Each training image is captioned with score / n_train, the estimated change of the test
    loss if it were removed (< 0 harmful), the unit the CLI, the report and the app print.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = top.helpful.indices.shape[1]
    rows, n_train = len(test), len(train)
    fig, axes = plt.subplots(rows, 2 * k + 1, figsize=(1.3 * (2 * k + 1), 1.5 * rows), squeeze=False)

    def show(ax, flat, title, color):
        ax.imshow(np.asarray(flat, dtype=np.float32).reshape(image_shape), cmap="gray_r")
        ax.set_title(title, fontsize=7, color=color)
        ax.set_xticks([])
        ax.set_yticks([])

    for r in range(rows):
        show(axes[r, 0], test[r][input_column], f"test: y={test[r][label_column]} ŷ={predicted[r]}", "black")
        for c in range(k):
            for kind, ranking, offset, color in (("harm", top.harmful, 1, "firebrick"),
                                                 ("help", top.helpful, 1 + k, "seagreen")):
                i, change = int(ranking.indices[r, c]), float(ranking.scores[r, c]) / n_train
                show(axes[r, offset + c], train[i][input_column],
                     f"{kind} #{i} y={train[i][label_column]}\n{change:+.3g}", color)
    fig.suptitle("Most harmful (red) and most helpful (green) training images per test image; "
                 "under each: the estimated loss change if removed (score / n_train)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
