"""Per-image intensity normalisation of chest X-rays, applied once when a set is loaded.

X-rays from another scanner differ first in their grey-level curve (exposure, film or
detector response, post-processing): on the shared data the Montgomery/Shenzhen lungs
are brighter than COVID-QU-Ex's (mean in-lung level +0.02 against -0.13 in [-1, 1]) at
the same framing. A model trained on one curve meets a shifted input on the other.
Histogram equalisation removes the curve: each image is mapped through its own
empirical CDF, so every equalised image has (up to ties) the same, uniform, grey-level
distribution, and only the ordering of the pixels — the anatomy — is left.

``"equalize"``: for pixel value v of an image with N pixels,

    u(v) = (#{pixels < v} + #{pixels == v} / 2) / N,    x = 2 u - 1  in (-1, 1),

the mid-rank ECDF (ties share the mean of their ranks, so the map is deterministic
and a constant image maps to 0). A monotone map, so equalising twice changes nothing.

Measured on the shared data (docs/results.md, 2026-12-07): it lowered the lung model's
Dice in both domains (0.9671 -> 0.9637 in domain, 0.9577 -> 0.9556 on
Montgomery/Shenzhen), so it is off by default.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The normalisations a segmentation set (and a checkpoint's run_info) can name.
IMAGE_NORMS = ("none", "equalize")


def equalize_histogram(images: Tensor) -> Tensor:
    """Histogram-equalise each image of ``images`` (..., H, W) to (-1, 1) by its mid-rank ECDF.

    Works on any leading shape; each trailing (H, W) plane is equalised on its own.
    Returns a new float tensor of the same shape.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"equalize_histogram expects a tensor (..., H, W), got "
                        f"{type(images).__name__}")
    if images.ndim < 2 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"equalize_histogram expects images of shape (..., H, W), got "
                         f"{tuple(images.shape)}")
    flat = images.float().reshape(-1, images.shape[-2] * images.shape[-1])
    n = flat.shape[1]
    order = flat.sort(dim=1).values  # per image, ascending
    # searchsorted on the sorted row: left = #{< v}, right = #{<= v}.
    below = torch.searchsorted(order, flat.contiguous(), right=False)
    upto = torch.searchsorted(order, flat.contiguous(), right=True)
    u = (below + upto).float() / (2.0 * n)
    return (2.0 * u - 1.0).reshape(images.shape)


def normalise_images(images: Tensor, norm: str) -> Tensor:
    """Apply the normalisation named ``norm`` (one of :data:`IMAGE_NORMS`) to ``images``."""
    check_image_norm(norm)
    return images if norm == "none" else equalize_histogram(images)


def check_image_norm(norm: object) -> str:
    """``norm`` if it names a normalisation of :data:`IMAGE_NORMS`, else a ValueError."""
    if not isinstance(norm, str) or norm not in IMAGE_NORMS:
        raise ValueError(f"image_norm must be one of {IMAGE_NORMS}, got {norm!r}")
    return norm
