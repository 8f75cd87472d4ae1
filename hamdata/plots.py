"""matplotlib without pyplot: the one way this project makes, saves and embeds a figure,
and the training-curve plot that the trainers save and the run report embeds.

A Figure on a bare Agg canvas touches no pyplot global state, needs no close,
and is safe in worker processes and threads.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import BinaryIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100  # matplotlib's default


def new_figure(width: float = 8.0, height: float = 5.0) -> Figure:
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path | BinaryIO, dpi: int = DPI, tight: bool = True) -> Path | BinaryIO:
    """Lay out ``fig`` and write it to ``path`` (a file name or a binary file) as a PNG; returns ``path``.
    ``tight=False``: a figure that set its own margins (fig.subplots_adjust) skips tight_layout, which measures
    every text and is about a third of a small figure's time."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    return path


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """Lay out ``fig`` and return it as PNG bytes."""
    buffer = io.BytesIO()
    save_png(fig, buffer, dpi)
    return buffer.getvalue()


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_history(history: list[dict], title: str = "") -> Figure | None:
    """Training curves of metrics.jsonl lines: losses, validation/test metrics and learning rate
    per epoch, one panel each; None when there is nothing to plot."""
    keys = sorted({k for line in history for k, v in line.items() if _numeric(v)})
    groups = [("loss", [k for k in keys if "loss" in k]),
              ("metrics", [k for k in keys if k.startswith(("val", "test")) and "loss" not in k]),
              ("learning rate", [k for k in keys if k == "lr" or k.startswith("lr_")])]
    groups = [(name, ks) for name, ks in groups if ks]
    if not history or not groups:
        return None
    epochs = [line.get("epoch", i + 1) for i, line in enumerate(history)]
    fig = new_figure(4.6 * len(groups), 3.8)
    for i, (name, ks) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for k in ks:
            ax.plot(epochs, [line.get(k, float("nan")) for line in history], marker="o", markersize=3, label=k)
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name == "metrics" and all(0 <= line[k] <= 1 for line in history for k in ks if _numeric(line.get(k))):
            ax.set_ylim(0, 1)  # scores: the whole range, so that runs compare at a glance
        if len(ks) > 1 or name == "metrics":
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


class Curves:
    """A run's curves.png, drawn from its history (``plot_history``): after an epoch when at least ``every`` seconds
    have passed since the last drawing, and always when ``final``. A drawing costs about 0.4 s of CPU: after every
    epoch of a run whose epochs take a second or two, it would be a good part of the run."""

    def __init__(self, path: Path, title: str, every: float = 30.0):
        self.path, self.title, self.every = Path(path), title, every
        self._drawn_at, self._drawn_epochs = time.monotonic(), -1

    def update(self, history: list[dict], final: bool = False) -> None:
        due = final or time.monotonic() - self._drawn_at >= self.every
        if history and due and len(history) != self._drawn_epochs:
            save_png(plot_history(history, self.title), self.path)
            self._drawn_at, self._drawn_epochs = time.monotonic(), len(history)
