"""Charts for report.html, returned as PNG bytes (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

import io

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    _plt().close(fig)
    return buffer.getvalue()


def group_harm_chart(labels: list[str], harms: list[float]) -> bytes:
    """Horizontal bars of each group's harm (red: harmful, green: helpful), most harmful on top."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, harms, color=["firebrick" if h > 0 else "seagreen" for h in harms])
    ax.set_yticks(y, [label if len(label) < 40 else label[:37] + "…" for label in labels], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("harm: estimated drop of the regressions' summed loss\n"
                  "without the group (> 0 = caused them)")
    return _png(fig)


def column_comparison_chart(title: str, panels: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """One panel per column: the group's values against the rest's (histograms for numbers,
    category rates for everything else). `panels`: (column, group values, rest values)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.8), squeeze=False)
    for ax, (column, group, rest) in zip(axes[0], panels):
        if group.dtype.kind in "iuf" and rest.dtype.kind in "iuf" and len(group) and len(rest):
            both = np.concatenate([group, rest]).astype(float)
            bins = np.histogram_bin_edges(np.clip(both, *np.percentile(both, [0.5, 99.5])), bins=30)
            ax.hist(rest, bins=bins, density=True, alpha=0.5, label="rest", color="gray")
            ax.hist(group, bins=bins, density=True, alpha=0.6, label="group", color="firebrick")
        else:
            keys, rates = _rates(group, rest)
            x = np.arange(len(keys))
            ax.bar(x - 0.2, rates[1], 0.4, label="rest", color="gray")
            ax.bar(x + 0.2, rates[0], 0.4, label="group", color="firebrick")
            ax.set_xticks(x, [k[:14] for k in keys], rotation=45, ha="right", fontsize=7)
        ax.set_title(column, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def _rates(group: np.ndarray, rest: np.ndarray, top: int = 10) -> tuple[list[str], np.ndarray]:
    """The `top` categories with the largest rate difference, and their rates [2, top]."""
    def freq(values):
        keys, counts = np.unique(np.asarray([str(v) for v in values]), return_counts=True)
        return dict(zip(keys.tolist(), (counts / max(counts.sum(), 1)).tolist()))

    fg, fr = freq(group), freq(rest)
    keys = sorted(set(fg) | set(fr), key=lambda k: -abs(fg.get(k, 0) - fr.get(k, 0)))[:top]
    return keys, np.array([[fg.get(k, 0.0) for k in keys], [fr.get(k, 0.0) for k in keys]])
