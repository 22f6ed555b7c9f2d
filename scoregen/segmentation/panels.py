"""Figures of the X-ray application: rows of X-ray | truth | prediction | uncertainty
(| error of the thresholded prediction).

Built on the Agg-only pieces of :mod:`scoregen.plotting` (no pyplot state); the PNG has
``100 (SEG_PANEL * C + 0.6)`` x ``100 (SEG_PANEL * N + 0.3)`` pixels for C = 4 columns (5
with the error column; 0.3 inch more with a title), ``SEG_PANEL = 2.4`` inches,
``DPI = 100``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap, Normalize, PowerNorm

from scoregen.plotting import ArrayLike, PathLike, image_array, new_figure, png_path, save_png

__all__ = ["segmentation_panels", "uncertainty_scale", "SEG_PANEL"]

#: Side of one image panel of :func:`segmentation_panels`, in inches.
SEG_PANEL = 2.4


def uncertainty_scale(uncertainty: ArrayLike) -> float:
    """Top of the uncertainty colour scale: the largest variance shown, or 0.25 (the
    largest a Bernoulli variance can be) when every pixel is certain. A fixed 0.25 made
    the typical ensemble disagreement (variance ~0.01-0.05 at the mask's edge) look blank."""
    top = float(image_array(uncertainty, "uncertainty").max())
    return top if top > 0 else 0.25


def segmentation_panels(
    images: ArrayLike,
    truths: ArrayLike,
    predictions: ArrayLike,
    uncertainty: ArrayLike,
    path: PathLike,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    *,
    uncertainty_label: str | None = None,
    error_threshold: float | None = None,
) -> Path:
    """Rows of [X-ray | ground truth | prediction | pixel-wise uncertainty + colorbar],
    and [error] with ``error_threshold``.

    Args:
        images: X-rays ``(N, 1, H, W)`` in [-1, 1] (the model's data space).
        truths: ground-truth masks ``(N, 1, H, W)`` in [-1, 1] (-1 background, 1 lesion).
        predictions: ``(N, 1, H, W)`` in [0, 1]: a probability (e.g. the mean of the
            ensemble's thresholded samples) or a hard {0, 1} mask. Samples in [-1, 1] must
            be mapped first, ``(x + 1) / 2``.
        uncertainty: ``(N, 1, H, W)`` in [0, 0.25]: the pixel-wise variance ``p (1 - p)``
            of Bernoulli samples (see :func:`scoregen.segmentation.ensemble.uncertainty`);
            drawn with the ``magma`` colormap on a square-root scale from 0 to ``max``,
            the largest value of the figure (shared by its rows so they compare; 0.25,
            the largest possible, when all are 0), so a small disagreement is visible;
            the colour bar (in variance units) and the column head state the scale.
        path: the PNG, ``100 (SEG_PANEL * C + 0.6)`` x ``100 (SEG_PANEL * N + 0.3)`` pixels.
        titles: optional per-row labels (e.g. an image id and its Dice).
        title: optional figure title (e.g. "synthetic phantom" when the data is one).
        uncertainty_label: another uncertainty than the Bernoulli variance (e.g. "binary
            entropy" of a sigmoid): any map >= 0, drawn the same way, named in the head.
        error_threshold: add a fifth column, the error of ``predictions > threshold``
            against the truth: false positives red, false negatives blue.
    """
    arrays = {"images": images, "truths": truths, "predictions": predictions,
              "uncertainty": uncertainty}
    arrs = {k: image_array(v, k) for k, v in arrays.items()}
    shape = arrs["images"].shape
    if shape[0] == 0 or shape[1] != 1:
        raise ValueError(f"images must have shape (N >= 1, 1, H, W), got {shape}")
    for k, a in arrs.items():
        if a.shape != shape:
            raise ValueError(f"{k} must have the shape of images {shape}, got {a.shape}")
    tol = 1e-6
    ranges = {"images": (-1, 1), "truths": (-1, 1), "predictions": (0, 1),
              "uncertainty": (0, 0.25 if uncertainty_label is None else np.inf)}
    hints = {"predictions": "; map samples in [-1, 1] with (x + 1) / 2",
             "uncertainty": "; pass the variance p (1 - p) of Bernoulli samples"}
    for k, (lo, hi) in ranges.items():
        a = arrs[k]
        if a.min() < lo - tol or a.max() > hi + tol:
            raise ValueError(f"{k} must lie in [{lo}, {hi}], got values in "
                             f"[{a.min():.4g}, {a.max():.4g}]{hints.get(k, '')}")
    n = shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    path = png_path(path)
    u_max = uncertainty_scale(arrs["uncertainty"])
    heads = ["X-ray", "ground truth", "prediction",
             f"uncertainty: {uncertainty_label or 'variance'}, sqrt scale (max {u_max:.2g})"]
    specs = [("images", "gray", -1, 1), ("truths", "gray", -1, 1),
             ("predictions", "gray", 0, 1), ("uncertainty", "magma", 0, u_max)]
    if error_threshold is not None:  # 0 right, 1 false positive, 2 false negative
        truth, pred = arrs["truths"] > 0, arrs["predictions"] > error_threshold
        arrs["error"] = np.where(pred & ~truth, 1.0, np.where(~pred & truth, 2.0, 0.0))
        heads.append("error: FP red, FN blue")
        specs.append(("error", ListedColormap(["black", "tab:red", "tab:blue"]), 0, 2))
    fig = new_figure(SEG_PANEL * len(specs) + 0.6,
                     SEG_PANEL * n + 0.3 + (0.3 if title else 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    axes = fig.subplots(n, len(specs), squeeze=False)
    for r in range(n):
        for q, (key, cmap, vmin, vmax) in enumerate(specs):
            ax = axes[r, q]
            # uncertainty on a square-root scale: the typical disagreement (a thin edge of
            # small variances) stays visible beside one hot spot; the colour bar is in
            # variance units
            norm = (PowerNorm(0.5, vmin=vmin, vmax=vmax) if key == "uncertainty"
                    else Normalize(vmin=vmin, vmax=vmax))
            im = ax.imshow(arrs[key][r, 0], cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[q], fontsize=9)
            if q == 3:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        if titles is not None:
            axes[r, 0].set_ylabel(str(titles[r]), fontsize=8)
    return save_png(fig, path)
