"""Helpers shared by the figure modules: image conversion, figures and atomic PNG saving.

Figures are made as `matplotlib.figure.Figure` objects, never through ``pyplot``: importing
siamnet or drawing a figure never changes the plotting backend of a notebook, and a figure is
returned to be shown or changed, and saved when a path is given."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from siamnet.fileio import atomic_path

CORRECT_COLOUR = "tab:green"
WRONG_COLOUR = "tab:red"


def to_display(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """One image ``[C, H, W]`` (uint8 or float in [0, 1]) as an array for ``imshow``.

    Returns ``([H, W], "gray")`` for one channel and ``([H, W, 3], None)`` for three.
    """
    img = image.detach().cpu()
    if img.dtype != torch.uint8:
        img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if img.ndim == 2:
        return img.numpy(), "gray"
    if img.shape[0] == 1:
        return img[0].numpy(), "gray"
    return img[:3].permute(1, 2, 0).numpy(), None


def show_image(ax: Axes, image: torch.Tensor) -> None:
    """Draw one image ``[C, H, W]`` on `ax` without ticks."""
    arr, cmap = to_display(image)
    ax.imshow(arr, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def frame(ax: Axes, colour: str, width: float = 3.0) -> None:
    """Colour the four spines of `ax` (a frame around an image)."""
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def subplots(
    nrows: int, ncols: int, figsize: tuple[float, float], squeeze: bool = True
) -> tuple[Figure, Any]:
    """A new figure (constrained layout, outside ``pyplot``) and its grid of axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def save_figure(fig: Figure, path: str | os.PathLike[str] | None, dpi: int = 100) -> Figure:
    """Write `fig` to `path` as a PNG atomically (when a path is given); returns `fig`."""
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    return fig
