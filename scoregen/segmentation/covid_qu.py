"""COVID-QU-Ex chest X-rays with lung / infection masks, read from the real Kaggle layout.

Dataset: Tahir et al., "COVID-19 Infection Localization and Severity Grading from
Chest X-ray Images", Comput. Biol. Med. 139:105002 (2021); Kaggle
``anasmohammedtahir/covidqu``. The extracted archive looks like::

    Infection Segmentation Data/Infection Segmentation Data/     <- split root
        {Train,Val,Test}/{COVID-19,Non-COVID,Normal}/{images,lung masks,infection masks}/NAME.png
    Lung Segmentation Data/Lung Segmentation Data/               <- split root (no infection masks)
        {Train,Val,Test}/{COVID-19,Non-COVID,Normal}/{images,lung masks}/NAME.png

A mask has its image's exact file name in a sibling folder. Images are resized
by area (``Image.BOX``); masks are binarised, resized by area and thresholded at
0.5 (foreground where more than half of the area is foreground). Both are scaled
to [-1, 1] (mask: 0 -> -1, 1 -> +1).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from scoregen.segmentation.augment import Augment
from scoregen.segmentation.dataset import SegmentationDataset

#: Class folders of COVID-QU-Ex, in loading order.
CLASSES: tuple[str, ...] = ("COVID-19", "Non-COVID", "Normal")
#: Split folders of COVID-QU-Ex.
SPLITS: tuple[str, ...] = ("Train", "Val", "Test")
#: Mask folder of each task.
MASK_FOLDERS: dict[str, str] = {"lung": "lung masks", "infection": "infection masks"}
IMAGE_FOLDER = "images"


def _child_dir(parent: Path, name: str) -> Path | None:
    """``parent / name`` if it is a folder, else a folder matching ``name`` case-insensitively."""
    exact = parent / name
    if exact.is_dir():
        return exact
    matches = sorted(p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower())
    return matches[0] if matches else None


def _is_split_root(folder: Path) -> bool:
    names = {p.name.lower() for p in folder.iterdir() if p.is_dir()}
    return any(s.lower() in names for s in SPLITS)


def find_split_root(root: str | Path, max_depth: int = 4) -> Path:
    """Find the folder that directly contains ``Train`` / ``Val`` / ``Test``.

    ``root`` may be that folder, the set folder (e.g. ``covid-qu-ex-64``), the
    extracted archive, or ``Infection Segmentation Data`` at either level; the
    search goes down breadth-first at most ``max_depth`` levels. When one level
    holds several split roots (the archive holds both the Lung and the Infection
    Segmentation Data) the one under ``Infection Segmentation Data`` is taken;
    pass the ``Lung Segmentation Data`` folder to read that one.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no split folder.
        ValueError: several candidate split roots and no rule picks one.
    """
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a str or Path, got {type(root).__name__}")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset root {root} is not a folder")
    level = [root]
    for _depth in range(max_depth + 1):
        found = [folder for folder in level if _is_split_root(folder)]
        if len(found) == 1:
            return found[0]
        if found:
            infection = [f for f in found if "infection segmentation data" in str(f).lower()]
            if len(infection) == 1:
                return infection[0]
            listing = ", ".join(str(f) for f in found)
            raise ValueError(f"several split roots below {root}: {listing}; pass one of them")
        level = [
            child
            for folder in level
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".")
        ]
        if not level:
            break
    hint = " (it looks like a split folder: pass its parent)" if root.name in SPLITS else ""
    raise FileNotFoundError(
        f"no split folder ({'/'.join(SPLITS)}) found within {max_depth} levels below {root}{hint}"
    )


def _read_png(path: Path) -> Image.Image:
    """Open and decode ``path`` fully; a corrupt or non-image file raises ValueError."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image file {path}: {err}") from err


def _gray_unit(im: Image.Image) -> np.ndarray:
    """8- or 16-bit grayscale (or colour, converted) image as float32 in [0, 1]."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def _binary_mask(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Mask as float32 {0, 1} and whether it had to be binarised at 127.

    Values {0, 255} or {0, 1} are taken as they are; anything else is foreground
    where the 8-bit value is > 127.
    """
    raw = np.asarray(im.convert("L"))
    values = np.unique(raw)
    if np.isin(values, (0, 255)).all():
        return (raw == 255).astype(np.float32), False
    if np.isin(values, (0, 1)).all():
        return raw.astype(np.float32), False
    return (raw > 127).astype(np.float32), True


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask
    area = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.BOX))
    return (area > 0.5).astype(np.float32)


def _list_pairs(
    split_dir: Path, task: str, classes: Sequence[str]
) -> list[tuple[Path, Path, str]]:
    """(image, mask, class) for every image of the wanted classes, sorted by class then name."""
    mask_folder = MASK_FOLDERS[task]
    pairs = []
    for cls in classes:
        class_dir = _child_dir(split_dir, cls)
        if class_dir is None:
            continue  # a missing class folder is tolerated
        image_dir = _child_dir(class_dir, IMAGE_FOLDER)
        if image_dir is None:
            raise FileNotFoundError(f"class folder {class_dir} has no '{IMAGE_FOLDER}' folder")
        mask_dir = _child_dir(class_dir, mask_folder)
        if mask_dir is None:
            extra = (
                " (only the Infection Segmentation Data has infection masks;"
                " the Lung Segmentation Data has lung masks only)"
                if task == "infection"
                else ""
            )
            raise FileNotFoundError(
                f"task={task!r} needs the '{mask_folder}' folder beside {image_dir}{extra}"
            )
        images = sorted(
            p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"
        )
        for image_path in images:
            mask_path = mask_dir / image_path.name
            if not mask_path.is_file():
                raise FileNotFoundError(f"image {image_path} has no mask: expected {mask_path}")
            pairs.append((image_path, mask_path, cls))
    return pairs


class CovidQUDataset(SegmentationDataset):
    """One split of COVID-QU-Ex (or any set in its layout), preloaded as float32 tensors.

    Args:
        root: the split root or any folder above it (see :func:`find_split_root`).
        split: ``"Train"``, ``"Val"`` or ``"Test"`` (folder name, case-insensitive).
        task: ``"lung"`` (``lung masks``) or ``"infection"`` (``infection masks``).
        size: side length S the images and masks are resized to.
        classes: class folders to read (default all of :data:`CLASSES`); missing
            class folders are skipped.
        augment: ``False``, ``True`` (a default :class:`RandomAffine`), or an
            augmentation of :mod:`scoregen.segmentation.augment` (no flips).
        seed: augmentation seed; items are deterministic given (seed, epoch, index).
        progress: show a tqdm bar; ``None`` shows it for 1,000 pairs or more.
        image_norm: ``"none"`` or ``"equalize"`` (each resized image histogram-equalised,
            :mod:`scoregen.segmentation.image_norm`).

    Items: ``{"image": (1, S, S), "mask": (1, S, S), "name": str, "class": str}``,
    image in [-1, 1], mask in {-1, +1}. Attributes: ``images`` (N, 1, S, S),
    ``masks`` (N, 1, S, S), ``names``, ``classes_of``, ``split_root``.

    A mask that is not binary ({0, 255} or {0, 1}) is binarised at 127 with one
    warning for the whole split that counts the files affected.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "Train",
        task: str = "lung",
        size: int = 64,
        classes: Sequence[str] | None = None,
        augment: bool | Augment = False,
        seed: int = 0,
        progress: bool | None = None,
        image_norm: str = "none",
    ) -> None:
        if task not in MASK_FOLDERS:
            raise ValueError(f"task must be one of {tuple(MASK_FOLDERS)}, got {task!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if not isinstance(split, str):
            raise TypeError(f"split must be a str such as 'Train', got {type(split).__name__}")
        if classes is None:
            classes = CLASSES
        elif isinstance(classes, str):
            raise TypeError(f"classes must be a sequence of names, e.g. ({classes!r},)")
        unknown = [c for c in classes if c not in CLASSES]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; expected a subset of {CLASSES}")

        self.split_root = find_split_root(root)
        split_dir = _child_dir(self.split_root, split)
        if split_dir is None:
            present = sorted(p.name for p in self.split_root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"split folder {self.split_root / split} does not exist (found: {present})"
            )
        pairs = _list_pairs(split_dir, task, classes)
        if not pairs:
            raise FileNotFoundError(
                f"no PNG images found under {split_dir} for classes {tuple(classes)}"
            )
        self.split, self.task = split_dir.name, task

        images = np.empty((len(pairs), 1, size, size), dtype=np.float32)
        masks = np.empty((len(pairs), 1, size, size), dtype=np.float32)
        not_binary: list[Path] = []
        show = len(pairs) >= 1000 if progress is None else progress
        bar = tqdm(pairs, desc=f"loading {split_dir.name} ({task})", disable=not show, unit="pair")
        for i, (image_path, mask_path, _cls) in enumerate(bar):
            image = _gray_unit(_read_png(image_path))
            mask, binarised = _binary_mask(_read_png(mask_path))
            if image.shape != mask.shape:
                raise ValueError(
                    f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                    f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}"
                )
            if binarised:
                not_binary.append(mask_path)
            images[i, 0] = _resize_image(image, size)
            masks[i, 0] = _resize_mask(mask, size)
        if not_binary:
            warnings.warn(
                f"{len(not_binary)} of {len(pairs)} mask files under {split_dir} are not binary "
                f"(values other than 0/255); binarised at 127 (> 127 is foreground), "
                f"e.g. {not_binary[0]}",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(
            images=torch.from_numpy(images).mul_(2.0).sub_(1.0),
            masks=torch.from_numpy(masks).mul_(2.0).sub_(1.0),
            names=[p[0].name for p in pairs],
            classes_of=[p[2] for p in pairs],
            augment=augment,
            seed=seed,
            image_norm=image_norm,
        )
