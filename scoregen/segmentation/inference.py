"""Segmentation as conditional generation (Amit et al. 2021, SegDiff; Wolleb et al. 2022).

A conditional model generates the mask ``x_0`` (in [-1, 1]) given the image ``cond``.
:func:`segment` draws ``K`` masks per image with any sampler (``K`` noise draws: an
ensemble), maps them to [0, 1] and fuses them (:mod:`scoregen.segmentation.ensemble`);
:func:`evaluate_segmentation` scores the fused masks with the seed's protocol: ONE pixel
confusion matrix over all evaluated images ("micro"), threshold 0.5, plus per-image
mean Dice (:mod:`scoregen.segmentation.metrics`), optionally per subgroup of images
(e.g. COVID-19 only for infection masks, see ``shared/reference/seed-notes.md``).

Reproducibility: member ``k`` of image ``i`` (its index in ``images``) is drawn with its
own generator seeded from ``(seed, i, k)`` (one generator per sample, as EDM does), so a
mask does not change with ``batch_size``, with ``ensemble`` (the first K members of a
larger ensemble are the K members of a smaller one) or with the other images.
The condition is encoded once per batch (:meth:`scoregen.nn.UNet.encode_condition`), not
at every network call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.model import ScoreModel
from scoregen.samplers import SAMPLERS, sample
from scoregen.segmentation.ensemble import FUSION_METHODS, fuse, to_unit_interval, uncertainty
from scoregen.segmentation.metrics import segmentation_metrics

__all__ = ["SegmentationOutput", "segment", "evaluate_segmentation", "predict_masks",
           "random_subset", "class_groups"]


@dataclass
class SegmentationOutput:
    """Masks for N images: ``fused`` (N, C, H, W) in {0, 1}; ``samples`` (K, N, C, H, W) in
    [0, 1]; ``uncertainty`` (N, C, H, W), the pixel-wise variance over the K samples;
    ``seconds_per_image`` of wall time for sampling and fusing (all K samples)."""

    fused: Tensor
    samples: Tensor
    uncertainty: Tensor
    seconds_per_image: float


@torch.no_grad()
def segment(
    model: ScoreModel,
    images: Tensor,
    *,
    mask_channels: int = 1,
    sampler: str = "ddim",
    steps: int | None = 50,
    ensemble: int = 1,
    fuse_method: str = "mean",
    threshold: float = 0.5,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str | None = None,
    seed: int | None = None,
    encode_condition: bool = True,
    **sampler_options: Any,
) -> SegmentationOutput:
    """Generate ``ensemble`` masks per image and fuse them.

    Args:
        model: a conditional ScoreModel whose net takes ``cond = images``.
        images: (N, C_img, H, W) conditioning images, as the model was trained on.
        mask_channels: channels of the generated mask.
        sampler, steps, **sampler_options: passed to :func:`scoregen.sample`.
        ensemble: K, the number of masks drawn per image.
        fuse_method: ``"mean"``, ``"vote"`` or ``"staple"``.
        batch_size: images per sampler call (each call samples ``K * batch`` masks).
        generator: makes the noise, hence the masks, reproducible: without ``seed``, one
            seed is drawn from it (advancing it once) and used as ``seed``.
        progress: a tqdm bar in images that moves with every sampler step (a batch of
            ``b`` images over ``S`` steps advances it by ``b / S`` per step).
        desc: the bar's label (default ``segment[sampler]``).
        seed: member ``k`` of image ``i`` uses a generator seeded from ``(seed, i, k)``
            alone (module docstring). ``None``: drawn from ``generator``, else from
            torch's global generator.
        encode_condition: encode the images once per batch when the net has
            ``encode_condition`` (the U-Net; SegDiff's G in ``cond_mode`` "add" and "both") and no
            classifier-free guidance is set; ``False`` passes the images as they are.
    """
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = getattr(images, "shape", images)
        raise ValueError(f"images must have shape (N, C, H, W), got {shape}")
    if not isinstance(ensemble, int) or ensemble < 1:
        raise ValueError(f"ensemble must be an integer >= 1, got {ensemble!r}")
    if fuse_method not in FUSION_METHODS:
        raise ValueError(f"fuse_method must be one of {FUSION_METHODS}, got {fuse_method!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid names: {', '.join(SAMPLERS)}")
    if seed is None:
        where = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=where))
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    device = model.device
    encoder = getattr(model.net, "encode_condition", None) if encode_condition else None
    if model.guidance_scale not in (None, 1):
        encoder = None  # guidance needs the raw image for its unconditional branch
    n, _, h, w = images.shape
    chunks = []
    t0 = time.perf_counter()
    label = desc or f"segment[{sampler}]"
    bar = tqdm(total=n, desc=label + (f" (K={ensemble})" if ensemble > 1 else ""),
               disable=not progress, leave=False, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} images "
                          "[{elapsed}<{remaining}]")
    for start in range(0, n, batch_size):
        cond = images[start:start + batch_size].to(device)
        b = cond.shape[0]
        if callable(encoder):
            cond = encoder(cond)  # G(I) once per batch; (b, C_0, H, W) wrapped ("add", "both")
        # (K*b, ...): sample k of image j at row k*b+j, drawn with generator (seed, start+j, k)
        cond_k = cond.repeat(ensemble, 1, 1, 1) if torch.is_tensor(cond) else (
            cond.repeat(ensemble))
        gens = [_member_generator(seed, start + j, k, device)
                for k in range(ensemble) for j in range(b)]
        options = dict(sampler_options)
        if steps is not None:
            options["steps"] = steps
        moved = _StepProgress(bar, b, steps, options) if progress else None
        x = sample(model, (ensemble * b, mask_channels, h, w), sampler, cond=cond_k,
                   generator=gens, **options)
        chunks.append(to_unit_interval(x.float()).reshape(ensemble, b, mask_channels, h, w).cpu())
        bar.update(b - (moved.done if moved is not None else 0.0))  # the batch, exactly
    bar.close()
    samples = torch.cat(chunks, dim=1)
    fused = fuse(samples, fuse_method, threshold) if ensemble > 1 else (
        samples[0] > threshold).float()
    seconds = (time.perf_counter() - t0) / max(n, 1)
    return SegmentationOutput(fused, samples, uncertainty(samples), seconds)


def _member_generator(seed: int, image: int, member: int,
                     device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of ensemble member ``member`` of image ``image``: seeded with a hash
    of ``(seed, image, member)`` (BLAKE2b, 63 bits), so distinct triples get unrelated
    streams and no triple depends on the batch it is sampled in."""
    digest = hashlib.blake2b(f"{seed}:{image}:{member}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest, "big") >> 1)


class _StepProgress:
    """Moves ``bar`` by ``b / steps`` images per sampler step of one batch (the batch's
    share is never exceeded), so a long batch does not sit at 0 until it ends. Installed
    as the sampler's ``callback`` (chaining one the caller passed); without a step count
    (an adaptive ``ode``) the bar moves once per batch."""

    def __init__(self, bar: Any, b: int, steps: int | None, options: dict[str, Any]) -> None:
        self.bar, self.b, self.done = bar, b, 0.0
        self.inc = b / steps if steps else 0.0
        self.user = options.get("callback")
        options["callback"] = self

    def __call__(self, info: dict[str, Any]) -> None:
        if self.user is not None:
            self.user(info)
        step = min(self.inc, self.b - self.done)
        if step > 0:
            self.done += step
            self.bar.update(step)


def evaluate_segmentation(
    predict: Callable[[Tensor], Tensor] | SegmentationOutput,
    images: Tensor,
    masks: Tensor,
    *,
    groups: Mapping[str, Tensor] | None = None,
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """Seed-protocol metrics of predicted masks against ``masks`` (N, C, H, W) in [-1, 1].

    Args:
        predict: a :class:`SegmentationOutput` for these images, or a function
            ``images -> masks in [0, 1]`` (e.g. a supervised segmenter).
        groups: name → (N,) bool selector; metrics are reported for ``"all"`` and for
            every group (e.g. ``{"COVID-19": dataset.class_mask("COVID-19")}``).
    Returns:
        ``{"all": metrics, group: metrics, ...}`` with the 8 micro metrics,
        ``dice_per_image`` and ``n_images``.
    """
    pred = predict.fused if isinstance(predict, SegmentationOutput) else predict(images)
    if pred.shape != masks.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and masks {tuple(masks.shape)} differ")
    truth = to_unit_interval(masks.float())
    selections = {"all": torch.ones(len(masks), dtype=torch.bool)}
    for name, sel in (groups or {}).items():
        if sel.shape != (len(masks),) or sel.dtype != torch.bool:
            raise ValueError(f"group {name!r} must be a ({len(masks)},) bool tensor")
        selections[name] = sel
    out: dict[str, dict[str, float]] = {}
    for name, sel in selections.items():
        if not bool(sel.any()):
            continue
        metrics = segmentation_metrics(pred[sel].float().cpu(), truth[sel], threshold)
        out[name] = {**metrics, "n_images": int(sel.sum())}
    return out


@torch.no_grad()
def predict_masks(
    net: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Probabilities in [0, 1] from a supervised segmenter that returns logits, batched."""
    outs = [torch.sigmoid(net(images[i:i + batch_size].to(device)).float()).cpu()
            for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


def random_subset(n_total: int, n: int, seed: int) -> Tensor:
    """``min(n, n_total)`` sorted random indices fixed by ``seed`` (the talk's "512 random
    data samples" of the validation split)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=gen)[:min(n, n_total)].sort().values


def class_groups(task: str, dataset: Any, indices: Tensor) -> dict[str, Tensor]:
    """Subgroups to report besides "all": infection metrics also on COVID-19 images only
    (Non-COVID and Normal infection masks are empty; see ``shared/reference/seed-notes.md``).
    ``dataset`` has ``class_mask(*classes)``; empty for lung, or when all or none are COVID."""
    if task != "infection":
        return {}
    covid = dataset.class_mask("COVID-19")[indices]
    return {"COVID-19": covid} if bool(covid.any()) and not bool(covid.all()) else {}
