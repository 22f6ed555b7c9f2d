"""The in-memory segmentation set shared by the real loader and the phantom.

Both :class:`~scoregen.segmentation.covid_qu.CovidQUDataset` and
:class:`~scoregen.segmentation.phantom.PhantomDataset` preload every pair as float32
tensors and expose the same item interface and attributes, so training and
evaluation code never cares where the pairs came from.

Scaling: images and masks are in [-1, 1]; a mask is exactly -1 (background) or
+1 (lung / infection), the range a diffusion model generates in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from scoregen.segmentation.augment import AUGMENTS, Augment, RandomAffine
from scoregen.segmentation.image_norm import check_image_norm, normalise_images


class SegmentationDataset(Dataset):
    """Preloaded (image, mask) pairs with names and classes.

    Args:
        images: (N, 1, S, S) float tensor in [-1, 1].
        masks: (N, 1, S, S) float tensor with values in {-1, +1}.
        names: N file names (unique per class).
        classes_of: N class names, e.g. ``"COVID-19"``.
        augment: ``False``, ``True`` (a default :class:`RandomAffine`), a
            :class:`RandomAffine`, a :class:`RandomIntensity` or a :class:`Chain` of
            them (:mod:`scoregen.segmentation.augment`). Augmented items are deterministic given
            ``(seed, epoch, index)``; call :meth:`set_epoch` once per epoch.
        seed: seed of the augmentation.
        image_norm: ``"none"`` or ``"equalize"`` (per-image histogram equalisation,
            :mod:`scoregen.segmentation.image_norm`), applied once here, before any
            augmentation; the name is kept in ``image_norm``.

    Attributes ``images``, ``masks``, ``names`` and ``classes_of`` hold the whole
    set, un-augmented, for fast whole-set evaluation. ``dataset[i]`` returns
    ``{"image": (1, S, S), "mask": (1, S, S), "name": str, "class": str}``.
    """

    def __init__(
        self,
        images: Tensor,
        masks: Tensor,
        names: Sequence[str],
        classes_of: Sequence[str],
        augment: bool | Augment = False,
        seed: int = 0,
        image_norm: str = "none",
    ) -> None:
        if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
            raise TypeError("images and masks must be torch tensors of shape (N, 1, S, S)")
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must have shape (N, 1, S, S), got {tuple(images.shape)}")
        if masks.shape != images.shape:
            raise ValueError(
                f"masks must have the images' shape {tuple(images.shape)}, got {tuple(masks.shape)}"
            )
        if len(names) != len(images) or len(classes_of) != len(images):
            raise ValueError(
                f"need one name and one class per image: {len(images)} images, "
                f"{len(names)} names, {len(classes_of)} classes"
            )
        if isinstance(augment, bool):
            augment = RandomAffine() if augment else None
        elif not isinstance(augment, AUGMENTS):
            kind = type(augment).__name__
            raise TypeError("augment must be a bool, a RandomAffine, a RandomIntensity or a "
                            f"Chain of them, got {kind}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.image_norm = check_image_norm(image_norm)
        self.images = normalise_images(images.float(), image_norm).contiguous()
        self.masks = masks.float().contiguous()
        self.names = list(names)
        self.classes_of = list(classes_of)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    @property
    def size(self) -> int:
        """Side length S of the square images."""
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (with DataLoader workers, call it
        before creating each epoch's iterator and do not use ``persistent_workers``)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index = index % len(self)
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, mask = self.augment(image, mask, rng)
        return {
            "image": image,
            "mask": mask,
            "name": self.names[index],
            "class": self.classes_of[index],
        }

    def subset(self, indices: Tensor | Sequence[int], *, augment: bool | None = None
               ) -> SegmentationDataset:
        """The items ``indices`` as a new set (same seed; ``augment=None`` keeps this set's
        augmentation, ``False`` drops it)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.ndim != 1 or (len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self))):
            raise ValueError(f"indices must be a 1-D list of items in [0, {len(self)}), "
                             f"got shape {tuple(idx.shape)}")
        keep = self.augment if augment is None else (self.augment if augment else False)
        part = SegmentationDataset(self.images[idx], self.masks[idx],
                                   [self.names[i] for i in idx.tolist()],
                                   [self.classes_of[i] for i in idx.tolist()],
                                   augment=keep if keep is not None else False, seed=self.seed)
        part.image_norm = self.image_norm  # the images are already normalised
        return part

    def hold_out(self, n: int, seed: int) -> tuple[SegmentationDataset, SegmentationDataset]:
        """``(rest, held)``: ``n`` random items (fixed by ``seed``) set aside, e.g. a
        tuning subset carved from Train for thresholds, temperatures and model selection
        that the model never trains on. ``rest`` keeps the augmentation, ``held`` has none.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < len(self):
            raise ValueError(f"hold_out needs 0 < n < {len(self)} items, got n={n!r}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held, rest = order[:n].sort().values, order[n:].sort().values
        return self.subset(rest), self.subset(held, augment=False)

    def class_mask(self, *classes: str) -> Tensor:
        """(N,) bool tensor, True where the sample's class is one of ``classes``.

        E.g. ``ds.masks[ds.class_mask("COVID-19")]`` for COVID-19-only metrics.
        """
        wanted = set(classes)
        return torch.tensor([c in wanted for c in self.classes_of], dtype=torch.bool)

    def __repr__(self) -> str:
        counts = {c: self.classes_of.count(c) for c in dict.fromkeys(self.classes_of)}
        return f"{type(self).__name__}(n={len(self)}, size={self.size}, classes={counts})"
