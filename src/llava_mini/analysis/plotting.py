"""Figures without pyplot: no global backend or figure registry, safe in servers, threads and tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(rows: int = 1, columns: int = 1, figsize: tuple[float, float] = (5, 3.6), squeeze: bool = True):
    """(figure, axes) like `pyplot.subplots`, on a figure that belongs to no backend."""
    from matplotlib.figure import Figure  # imported on use: the CLI starts without matplotlib

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=squeeze)


def save_figure(figure: Figure, path: str | Path, dpi: int = 120, tight: bool = True) -> Path:
    """Write `figure` as an image (format from the suffix), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path
