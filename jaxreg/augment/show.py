"""A look at an augmentation: a PNG grid of originals (first row) and augmented versions below."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxreg.augment import policy
from jaxreg.augment import spec as spec_lib

__all__ = ["save_grid"]


def save_grid(
    spec: str,
    images: np.ndarray,
    path: str | os.PathLike,
    *,
    seed: int = 0,
    num: int = 8,
    rows: int = 4,
) -> str:
    """Writes a PNG grid: `num` originals in the first row, `rows` augmented versions below.

    Args:
      spec: augmentation spec for `from_spec` (e.g. "digits", "cifar").
      images: (N, H, W, C) floating images in [0, 1], C in {1, 3}; the first `num` are shown.
      path: output PNG path (parent folders are created).
      seed: PRNG seed for the augmented rows.
      num: number of columns (examples), >= 1.
      rows: number of augmented rows, >= 1.

    Returns:
      The path written, as a string.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fn = spec_lib.from_spec(spec)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, H, W, 1 or 3); got {images.shape}.")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be floating in [0, 1]; got {images.dtype}.")
    if num < 1 or rows < 1:
        raise ValueError(f"num and rows must be >= 1; got num={num}, rows={rows}.")
    x = jax.numpy.asarray(images[:num], dtype=jax.numpy.float32)
    n = x.shape[0]
    batched = jax.jit(policy.batch(fn))
    keys = jax.random.split(jax.random.key(seed), rows)
    grid = [np.asarray(x)] + [np.asarray(batched(keys[r], x)) for r in range(rows)]

    fig = Figure(figsize=(1.2 * n, 1.2 * (rows + 1)))
    FigureCanvasAgg(fig)
    for r, row in enumerate(grid):
        for c in range(n):
            ax = fig.add_subplot(rows + 1, n, r * n + c + 1)
            img = np.clip(row[c], 0.0, 1.0)
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel("original" if r == 0 else f"aug {r}", fontsize=8)
    fig.suptitle(f"augment: {spec}", fontsize=9)
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
