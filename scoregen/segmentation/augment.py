"""Augmentation of a chest X-ray and its mask: a small random affine applied to both,
a random intensity change (gamma, contrast, brightness) of the X-ray alone, and a chain
of the two.

Every draw comes from a ``numpy.random.Generator`` so that the caller decides
determinism (the datasets seed it with ``(seed, epoch, index)``).

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


@dataclass(frozen=True)
class RandomIntensity:
    """Random gamma, contrast and brightness of the X-ray; the mask is left as it is.

    Scanners differ in exposure and look-up curves (the Montgomery and Shenzhen sets
    against COVID-QU-Ex): with ``u = (x + 1) / 2`` in [0, 1],

        x' = clamp(c (2 u^gamma - 1) + b, -1, 1),
        log gamma ~ U(-max_log_gamma, max_log_gamma), c ~ U(1 - max_contrast, 1 + max_contrast),
        b ~ U(-max_brightness, max_brightness),

    three draws from the caller's ``rng`` in that order. All zeros is the identity.
    """

    max_log_gamma: float = 0.3
    max_contrast: float = 0.15
    max_brightness: float = 0.1

    def __post_init__(self) -> None:
        for name in ("max_log_gamma", "max_contrast", "max_brightness"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"RandomIntensity.{name} must be a finite number >= 0, got {value!r}")
        if self.max_contrast >= 1:
            raise ValueError(f"RandomIntensity.max_contrast must be < 1, got {self.max_contrast}")

    def __call__(
        self, image: Tensor, mask: Tensor, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        """``(image', mask)`` for ``image`` in [-1, 1] (any shape), one draw from ``rng``."""
        gamma = math.exp(rng.uniform(-self.max_log_gamma, self.max_log_gamma))
        contrast = rng.uniform(1.0 - self.max_contrast, 1.0 + self.max_contrast)
        brightness = rng.uniform(-self.max_brightness, self.max_brightness)
        unit = ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        out = (contrast * (2.0 * unit.pow(gamma) - 1.0) + brightness).clamp(-1.0, 1.0)
        return out.to(image.dtype), mask


@dataclass(frozen=True)
class Chain:
    """Augmentations applied in order, each drawing from the same ``rng``."""

    transforms: tuple[RandomAffine | RandomIntensity, ...]

    def __post_init__(self) -> None:
        bad = [type(t).__name__ for t in self.transforms
               if not isinstance(t, (RandomAffine, RandomIntensity))]
        if not self.transforms or bad:
            raise TypeError("Chain takes a non-empty tuple of RandomAffine / RandomIntensity, "
                            f"got {bad or 'nothing'}")

    def __call__(
        self, image: Tensor, mask: Tensor, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        for transform in self.transforms:
            image, mask = transform(image, mask, rng)
        return image, mask


#: what a dataset's ``augment`` may be (besides a bool)
AUGMENTS = (RandomAffine, RandomIntensity, Chain)
Augment = RandomAffine | RandomIntensity | Chain


def training_augment(affine: bool, intensity: bool) -> Augment | None:
    """The examples' augmentation: the default affine, the default intensity change,
    both (affine first) or None."""
    chosen = [t for on, t in ((affine, RandomAffine()), (intensity, RandomIntensity())) if on]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else Chain(tuple(chosen))


def describe_augment(augment: object) -> str:
    """``"none"``, ``"affine"``, ``"intensity"`` or ``"affine+intensity"``."""
    parts = augment.transforms if isinstance(augment, Chain) else (
        () if augment is None else (augment,))
    names = {RandomAffine: "affine", RandomIntensity: "intensity"}
    return "+".join(names[type(t)] for t in parts) or "none"
