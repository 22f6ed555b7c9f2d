"""A synthetic chest X-ray phantom with lung and infection masks, generated on the fly.

The embedded default data of the segmentation example (no download needed). Each
case is a PA chest radiograph drawn from a few random anatomical parameters:

* body outline (a superellipse, brighter where thicker), neck, spine /
  mediastinum band, clavicles;
* two lung fields (darker): a half-ellipse-like shape per side with a rounded
  apex, a sloping diaphragm (the costophrenic angle is lowest) and, on the
  image's right (the patient's left), the cardiac notch cut by the heart;
* ribs as curved bright bands, a heart shadow, vessel-like texture, hila;
* for the "COVID-19" cases, 1-3 irregular ground-glass opacities inside the
  lungs (infection mask = opacity above threshold AND lung); the other cases
  ("Normal") have empty infection masks, like the real data;
* random global rotation, scale and shift, contrast (gamma) and pixel noise.

Shapes are rendered at 2x the resolution and area-averaged, so masks are
"area > 0.5" exactly like the real loader's resize; images are quantised to 8 bit
so a phantom written to PNG reads back identically. Case ``i`` depends only on
``(seed, i)``: the first ``m`` cases of a set of ``n > m`` equal a set of ``m``.

Scaling as in :class:`~scoregen.segmentation.covid_qu.CovidQUDataset`: images in
[-1, 1], masks in {-1, +1}.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scoregen.segmentation.augment import Augment
from scoregen.segmentation.dataset import SegmentationDataset

_SUPERSAMPLE = 2
_CHUNK = 64
_MAX_BLOBS = 3


def _is_covid(i: int, fraction: float) -> bool:
    """Case i is COVID-19 iff floor((i+1) f) > floor(i f): floor(n f) of n, evenly spread."""
    return math.floor((i + 1) * fraction) > math.floor(i * fraction)


def _case_parameters(rng: np.random.Generator, covid: bool) -> dict[str, Any]:
    """Anatomy of one case, in normalised coordinates (x right, y down, both in [-1, 1])."""
    u = rng.uniform
    p: dict[str, Any] = {
        "rotation": math.radians(u(-7.0, 7.0)),
        "scale": u(0.88, 1.06),
        "shift": u(-0.06, 0.06, size=2),
        "body_width": u(0.92, 1.08),
        "body_level": u(0.35, 0.5),
        "lung_medial": u(0.05, 0.10, size=2),  # [image-left lung, image-right lung]
        "lung_width": u(0.58, 0.72) * np.array([1.0, u(0.9, 1.02)]),  # patient's left smaller
        "lung_top": u(-0.80, -0.62, size=2),
        "lung_bottom": u(0.35, 0.58, size=2),
        "apex": u(0.25, 0.4, size=2),  # lateral position of the apex, in lung widths
        "dome": u(0.12, 0.28, size=2),
        "heart_center": np.array([u(0.07, 0.15), u(0.28, 0.42)]),
        "heart_radii": np.array([u(0.30, 0.38), u(0.26, 0.34)]),
        "lung_darkness": u(0.30, 0.40),
        "rib_period": u(0.16, 0.21),
        "rib_phase": u(0.0, 1.0),
        "rib_curve": u(0.5, 0.9),
        "gamma": u(0.8, 1.25),
        "noise": u(0.008, 0.025),
        "texture": rng.standard_normal((3, 10, 10)),
    }
    blobs = np.zeros((_MAX_BLOBS, 6))  # active, side, a, b, radius, elongation
    blobs[:, 4:] = 1.0  # inactive blobs keep a finite shape (their amplitude is 0)
    if covid:
        for k in range(int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))):
            side = int(rng.integers(0, 2))
            a_low = 0.65 if side == 1 else 0.35  # stay lateral of the heart on the image's right
            blobs[k] = (1.0, side, u(a_low, 0.9), u(0.35, 0.85), u(0.2, 0.42), u(0.7, 1.4))
    p["blobs"] = blobs
    p["opacity"] = u(0.16, 0.30)
    return p


@functools.lru_cache(maxsize=8)
def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) cubic-convolution upsampling matrix (Keys 1981, a = -0.5), edges clamped."""
    out = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for j in range(base - 1, base + 3):
            t = abs(src - j)
            w = 1.5 * t**3 - 2.5 * t**2 + 1 if t <= 1 else -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
            out[i, min(max(j, 0), n_in - 1)] += w
    return out


def _smooth_noise(noise: np.ndarray, hi: int) -> np.ndarray:
    """(C, 3, n, n) white noise -> (C, 3, hi, hi) smooth fields, separable cubic upsampling."""
    m = _cubic_matrix(noise.shape[-1], hi)
    return np.einsum("ij,cdjk,lk->cdil", m, noise, m, optimize=True)


def _render(params: list[dict], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a chunk of C cases: (C, S, S) image in [0, 1], lung and infection masks in {0, 1}.

    Plain numpy (single-threaded elementwise work; no thread-pool latency on a busy machine).
    """
    c, hi = len(params), size * _SUPERSAMPLE

    def col(key: str, index: int | None = None) -> np.ndarray:
        values = [p[key] if index is None else p[key][index] for p in params]
        return np.asarray(values, dtype=np.float32).reshape(c, 1, 1)

    def soft(signed: np.ndarray, width: float = 0.012) -> np.ndarray:
        """Smooth step of a signed inside-distance (positive inside)."""
        return 0.5 + 0.5 * np.tanh(signed / (2.0 * width))  # = sigmoid(signed / width)

    coords = ((np.arange(hi, dtype=np.float32) + 0.5) / hi * 2.0 - 1.0).astype(np.float32)
    gx, gy = coords[None, None, :], coords[None, :, None]
    # Global pose: anatomy coordinates (u, v) = R(-rotation) (x - shift) / scale.
    rot, scale = col("rotation"), col("scale")
    x, y = gx - col("shift", 0), gy - col("shift", 1)
    uu = (np.cos(rot) * x + np.sin(rot) * y) / scale  # (C, hi, hi)
    vv = (-np.sin(rot) * x + np.cos(rot) * y) / scale
    texture = _smooth_noise(np.stack([p["texture"] for p in params]).astype(np.float32), hi)

    # Body: a superellipse (square-ish shoulders), thicker (brighter) in the middle.
    width = col("body_width")
    r = (np.abs(uu / width) ** 3 + np.abs((vv - col("body_level")) / 1.35) ** 3) ** (1 / 3)
    body = soft(1.0 - r, 0.01)
    thickness = np.sqrt(np.clip(1.0 - (uu / width) ** 2, 0.0, None))
    neck = soft(0.2 - np.abs(uu), 0.01) * (1.0 - body)
    intensity = 0.04 + body * (0.28 + 0.30 * thickness + 0.03 * texture[:, 2]) + 0.42 * neck
    intensity += 0.10 * body * np.exp(-((uu / 0.1) ** 2))  # spine, mediastinum

    # Heart: ellipse right of the midline (patient's left), merging with the diaphragm.
    hc_u, hc_v = col("heart_center", 0), col("heart_center", 1)
    hr_u, hr_v = col("heart_radii", 0), col("heart_radii", 1)
    heart = soft(1.0 - np.sqrt(((uu - hc_u) / hr_u) ** 2 + ((vv - hc_v) / hr_v) ** 2), 0.03)

    # Lungs: lateral fraction a in [0, 1], apex-to-base fraction b in [0, 1]. Both edges
    # leave the apex (at a = apex) and widen; the lateral edge is convex, widest near the
    # base; the diaphragm slopes down to the lateral costophrenic angle.
    lungs, frames = [], []
    for side, sign in ((0, -1.0), (1, 1.0)):
        top, bottom = col("lung_top", side), col("lung_bottom", side)
        a = (sign * uu - col("lung_medial", side)) / col("lung_width", side)
        b = (vv - top) / (bottom - top)
        apex = col("apex", side)
        rise = np.sin(0.5 * np.pi * np.clip(b / 0.85, 0.0, 1.0)) ** 0.8
        inner = apex * (1.0 - np.clip(b / 0.3, 0.0, 1.0)) ** 2
        outer = apex + (1.0 - apex) * rise
        base = 1.0 - col("dome", side) * np.clip(1.0 - a, 0.0, 1.0) ** 1.5
        inside = np.minimum(np.minimum(a - inner, outer - a), np.minimum(base - b, b))
        lungs.append(soft(inside * 0.6))
        frames.append((a, b))
    lung_soft = np.maximum(lungs[0], lungs[1]) * (1.0 - heart)
    lung_hard = (lung_soft > 0.5).astype(np.float32)
    lower = sum(np.clip(fb[1], 0.0, 1.0) * lg for fb, lg in zip(frames, lungs, strict=True))
    hilum = sum(np.exp(-(a**2 / 0.04 + (b - 0.55) ** 2 / 0.05)) for a, b in frames)

    # Ribs: arcs, lateral parts lower, seen mostly over the lungs; clavicles at the top.
    phase = (vv - col("rib_curve") * uu**2) / col("rib_period") + col("rib_phase")
    ribs = np.clip(np.cos(2 * np.pi * phase), 0.0, None) ** 6
    thorax = body * soft(0.5 - vv, 0.05) * soft(0.85 - np.abs(uu), 0.05)
    clavicle = np.exp(-(((vv + 0.64 - 0.15 * np.abs(uu)) / 0.035) ** 2)) * soft(0.6 - np.abs(uu))

    darkness = col("lung_darkness") * (1.0 - 0.25 * lower)  # lower zones overlap soft tissue
    lung_tone = -darkness + 0.035 * texture[:, 0] + 0.08 * hilum
    intensity += lung_soft * lung_tone + 0.02 * heart * body
    intensity += thorax * (0.07 * (0.4 + 0.6 * lung_soft) * ribs + 0.10 * clavicle)

    # Infection: irregular opacities (Gaussian blobs, boundary perturbed), inside the lungs.
    field = np.zeros_like(uu)
    for k in range(_MAX_BLOBS):
        blob = np.stack([p["blobs"][k] for p in params]).astype(np.float32)
        active, a0, b0, radius, elong = (blob[:, j].reshape(c, 1, 1) for j in (0, 2, 3, 4, 5))
        sides = blob[:, 1].astype(int).reshape(c, 1, 1)
        a = np.where(sides == 1, frames[1][0], frames[0][0])
        b = np.where(sides == 1, frames[1][1], frames[0][1])
        # a is in lung widths (~0.6), b in lung heights (~1.2): scale to isotropic units.
        d2 = ((a - a0) * 0.6 / (radius * elong)) ** 2 + ((b - b0) * 1.2 * elong / radius) ** 2
        field = np.maximum(field, active * np.exp(-0.5 * d2))
    field = field * (1.0 + 0.35 * np.clip(texture[:, 1], -1.0, 1.0))
    opacity = np.clip((field - 0.4) * 2.5, 0.0, 1.0)
    intensity += col("opacity") * opacity * lung_soft
    infection_hard = (field > 0.5) * lung_hard

    def pool(x: np.ndarray) -> np.ndarray:
        k = _SUPERSAMPLE
        return x.reshape(c, size, k, size, k).mean(axis=(2, 4))

    image = np.clip(pool(intensity), 0.0, 1.0) ** col("gamma")
    lung = (pool(lung_hard) > 0.5).astype(np.float32)
    infection = (pool(infection_hard) > 0.5).astype(np.float32)
    return image, lung, infection


def make_phantom_set(
    n: int, size: int = 64, seed: int = 0, infection_fraction: float = 0.5
) -> dict[str, Tensor | list[str]]:
    """Generate ``n`` phantom chest X-rays with lung and infection masks.

    Returns a dict with ``images``, ``lung_masks``, ``infection_masks``, each
    (n, 1, size, size) float32 (images in [-1, 1], masks in {-1, +1}),
    ``classes`` (list of ``"COVID-19"`` / ``"Normal"``) and ``names`` (file names
    in the real data's style, ``covid_<i>.png`` / ``Normal (<i>).png``).
    Exactly ``floor(n * infection_fraction)`` cases are COVID-19, evenly spread;
    each has a non-empty infection mask, the others an empty one.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not 0.0 <= infection_fraction <= 1.0:
        raise ValueError(f"infection_fraction must be in [0, 1], got {infection_fraction!r}")
    covid = [_is_covid(i, infection_fraction) for i in range(n)]
    rngs = [np.random.default_rng([seed, i]) for i in range(n)]
    params = [_case_parameters(rng, c) for rng, c in zip(rngs, covid, strict=True)]
    images = np.empty((n, size, size), dtype=np.float32)
    lung = np.empty((n, size, size), dtype=np.float32)
    infection = np.empty((n, size, size), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        todo = list(range(start, min(start + _CHUNK, n)))
        while todo:  # re-draw the (rare) COVID-19 cases whose opacity missed the lungs
            chunk = [params[i] for i in todo]
            img, lm, im = _render(chunk, size)
            pixel = np.stack([rngs[i].standard_normal((size, size)) for i in todo])
            sigma = np.asarray([p["noise"] for p in chunk], dtype=np.float32).reshape(-1, 1, 1)
            img = np.round(np.clip(img + sigma * pixel, 0.0, 1.0) * 255.0) / 255.0
            images[todo], lung[todo], infection[todo] = img, lm, im
            todo = [i for j, i in enumerate(todo) if covid[i] and not im[j].any()]
            for i in todo:
                params[i] = _case_parameters(rngs[i], True)
    names = [f"covid_{i + 1}.png" if c else f"Normal ({i + 1}).png" for i, c in enumerate(covid)]
    def signed(x: np.ndarray) -> Tensor:
        return torch.from_numpy(x * 2.0 - 1.0).float()[:, None]  # (n, 1, S, S) in [-1, 1]

    return {
        "images": signed(images),
        "lung_masks": signed(lung),
        "infection_masks": signed(infection),
        "classes": ["COVID-19" if c else "Normal" for c in covid],
        "names": names,
    }


class PhantomDataset(SegmentationDataset):
    """``n`` phantom cases with the item interface and attributes of ``CovidQUDataset``.

    Args:
        n: number of cases.
        task: ``"lung"`` or ``"infection"``: which mask is ``mask``.
        size: side length S.
        seed: generation seed (and augmentation seed).
        infection_fraction: share of COVID-19 cases (non-empty infection masks).
        augment: ``False``, ``True`` (a default :class:`RandomAffine`), or an augmentation
            of :mod:`scoregen.segmentation.augment`.
        image_norm: ``"none"`` or ``"equalize"`` (:mod:`scoregen.segmentation.image_norm`).
    """

    def __init__(
        self,
        n: int,
        task: str = "lung",
        size: int = 64,
        seed: int = 0,
        infection_fraction: float = 0.5,
        augment: bool | Augment = False,
        image_norm: str = "none",
    ) -> None:
        if task not in ("lung", "infection"):
            raise ValueError(f"task must be 'lung' or 'infection', got {task!r}")
        data = make_phantom_set(n, size=size, seed=seed, infection_fraction=infection_fraction)
        self.task = task
        super().__init__(
            images=data["images"],
            masks=data["lung_masks" if task == "lung" else "infection_masks"],
            names=data["names"],
            classes_of=data["classes"],
            augment=augment,
            seed=seed,
            image_norm=image_norm,
        )


def _to_png(x: Tensor, path: Path) -> None:
    """Save a (1, S, S) tensor in [-1, 1] as an 8-bit grayscale PNG."""
    pixels = ((x[0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


def write_phantom_folder(
    root: str | Path, n_train: int, n_val: int, size: int = 64, seed: int = 0
) -> Path:
    """Write a phantom in the real COVID-QU-Ex layout and return its split root.

    Layout: ``root/Infection Segmentation Data/Infection Segmentation Data/
    {Train,Val}/{COVID-19,Normal}/{images,lung masks,infection masks}/NAME.png``,
    masks 0/255. Train holds cases ``0 .. n_train-1`` and Val the next ``n_val``
    of ``make_phantom_set(n_train + n_val, size, seed)``; a split with no case is
    not created.
    """
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    data = make_phantom_set(n_train + n_val, size=size, seed=seed)
    split_root = Path(root) / "Infection Segmentation Data" / "Infection Segmentation Data"
    for i in range(n_train + n_val):
        split = "Train" if i < n_train else "Val"
        class_dir = split_root / split / data["classes"][i]
        name = data["names"][i]
        for folder, key in (
            ("images", "images"),
            ("lung masks", "lung_masks"),
            ("infection masks", "infection_masks"),
        ):
            (class_dir / folder).mkdir(parents=True, exist_ok=True)
            _to_png(data[key][i], class_dir / folder / name)
    return split_root
