"""Random affine augmentation applied jointly to a chest X-ray and its mask.

A small rotation, translation and isotropic scaling, drawn from a
``numpy.random.Generator`` so that the caller decides determinism (the datasets
seed it with ``(seed, epoch, index)``).

There are deliberately **no flips**. Chest anatomy is not left-right symmetric:
the heart sits on the patient's left (the image's right in a PA view), the left
lung is smaller with a cardiac notch, the aortic arch and the gastric bubble are
on the left. A mirrored X-ray is an anatomically implausible image (situs
inversus is rare), so flipping teaches a segmentation model shapes it never sees
and blurs the asymmetry it should learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class RandomAffine:
    """Small random affine transform, the same for an image and its mask.

    The output pixel at normalised position ``x`` samples the input at
    ``A x + b`` with ``A = R(theta) / s``: rotation ``theta ~ U(-max_rotation,
    max_rotation)`` degrees, scale ``s ~ U(1 - max_scale, 1 + max_scale)`` and a
    shift of up to ``max_translation`` of the side length along each axis.

    The image is resampled bilinearly with border padding (the X-ray's edge
    continues), the mask bilinearly in {0, 1} with zero padding and re-thresholded
    at 0.5, so it stays binary.
    """

    max_rotation: float = 5.0
    max_translation: float = 0.04
    max_scale: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_rotation", "max_translation", "max_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RandomAffine.{name} must be a finite number >= 0, got {value!r}")
        if self.max_scale >= 1:
            raise ValueError(f"RandomAffine.max_scale must be < 1, got {self.max_scale}")

    def sample_matrix(self, rng: np.random.Generator) -> Tensor:
        """Draw the (2, 3) matrix ``[A | b]`` used by ``torch.nn.functional.affine_grid``."""
        theta = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        scale = rng.uniform(1.0 - self.max_scale, 1.0 + self.max_scale)
        # Normalised coordinates span 2 per side, so a fraction f of the side is 2 f.
        tx, ty = 2.0 * rng.uniform(-self.max_translation, self.max_translation, size=2)
        cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
        return torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=torch.float32)

    def __call__(
        self, image: Tensor, mask: Tensor, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        """Transform ``image`` and ``mask``, both (C, H, W) in [-1, 1], with one draw from ``rng``.

        Returns the transformed image (same range, bilinear) and mask (values exactly
        -1 or +1).
        """
        if image.ndim != 3 or mask.ndim != 3 or image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                "RandomAffine expects image and mask of shape (C, H, W) with the same H, W; "
                f"got {tuple(image.shape)} and {tuple(mask.shape)}"
            )
        matrix = self.sample_matrix(rng).to(image.device)[None]  # (1, 2, 3)
        grid = F.affine_grid(matrix, [1, *image.shape], align_corners=False)  # (1, H, W, 2)
        image_out = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )[0]
        unit_mask = (mask[None].float() + 1.0) / 2.0  # {-1, 1} -> {0, 1}, so padding is background
        mask_out = F.grid_sample(
            unit_mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        mask_out = torch.where(mask_out > 0.5, 1.0, -1.0)
        return image_out.to(image.dtype), mask_out.to(mask.dtype)
