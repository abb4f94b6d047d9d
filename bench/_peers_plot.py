"""The plot of ``bench/vs_llamacpp.py``: decode tok/s per weight format, each engine a bar."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(path: Path, title: str, rows: list[tuple[str, dict[str, float]]]) -> Path:
    """Grouped bars: ``rows`` is (format label, {engine: tok/s}) in order; engines share colours."""
    engines = list(dict.fromkeys(engine for _, values in rows for engine in values))
    width = 0.8 / max(len(engines), 1)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for i, engine in enumerate(engines):
        xs = [n + (i - (len(engines) - 1) / 2) * width for n in range(len(rows))]
        heights = [values.get(engine, 0.0) for _, values in rows]
        bars = axes.bar(xs, heights, width, label=engine)
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    axes.set_xticks(range(len(rows)), [label for label, _ in rows])
    axes.set_ylabel("decode tokens/s (one sequence)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
