"""Calibration and uncertainty of probabilistic masks, one model at a time (issue 9).

Built on the core metrics of :mod:`scoregen.metrics.calibration`; nothing here knows about
benchmarks. For N images with foreground probabilities ``p`` (N, 1, H, W):

* diffusion: ``p`` = the mean of K sampled masks in [0, 1], the uncertainty ``u`` = their
  pixel-wise variance (:attr:`SegmentationOutput.uncertainty`);
* supervised: ``p = sigmoid(logits)``, ``u`` = the binary entropy ``H(p)``.

:func:`calibration_study` reports ECE (15 equal-width bins), Brier, pixel NLL and the
uncertainty's AUROC / AUPRC / overlap for the errors of the fused mask ``p > 0.5``, on all
pixels and on a region (e.g. within 4 px of the true lungs, :func:`near_region`), with an
optional temperature ``T`` (Guo et al. 2017) applied as ``sigmoid(logit(p) / T)`` with
``p`` clamped to ``[1e-4, 1 - 1e-4]`` (a mean of K samples can be exactly 0 or 1);
:func:`fit_probability_temperature` fits ``T`` on a tuning set (carved from Train, never
Val). :func:`empty_truth_false_positives` is the false-positive rate on images whose true
mask is empty (the Non-COVID / Normal infection masks). The image | truth | prediction |
uncertainty | error rows are :func:`scoregen.segmentation.segmentation_panels` with
``error_threshold``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scoregen.metrics.calibration import calibration_metrics, fit_temperature, near_mask

__all__ = ["LOGIT_EPS", "binary_entropy", "calibration_study", "empty_truth_false_positives",
           "fit_probability_temperature", "logit", "near_region", "temperature_scale"]

#: Probabilities are clamped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` before ``logit``.
LOGIT_EPS = 1e-4


def _unit_truth(truth: Tensor) -> Tensor:
    """Truth masks in {-1, 1} or {0, 1} -> float {0, 1}."""
    if not torch.is_tensor(truth):
        raise TypeError(f"truth must be a tensor, got {type(truth).__name__}")
    t = truth.detach().float()
    if t.numel() and float(t.min()) < 0:
        if float(t.min()) < -1 - 1e-6 or float(t.max()) > 1 + 1e-6:
            raise ValueError("truth masks must lie in {-1, 1} or {0, 1}")
        t = (t + 1) / 2
    elif t.numel() and float(t.max()) > 1 + 1e-6:
        raise ValueError("truth masks must lie in {-1, 1} or {0, 1}")
    return (t > 0.5).float()


def _check_prob(prob: Tensor, truth: Tensor) -> Tensor:
    if not torch.is_tensor(prob) or prob.ndim != 4:
        raise ValueError(f"prob must be (N, C, H, W), got {getattr(prob, 'shape', prob)}")
    if prob.shape != truth.shape:
        raise ValueError(f"prob {tuple(prob.shape)} and truth {tuple(truth.shape)} differ")
    p = prob.detach().float()
    if p.numel() and (float(p.min()) < 0 or float(p.max()) > 1):
        raise ValueError("prob must lie in [0, 1]")
    return p


def logit(prob: Tensor, eps: float = LOGIT_EPS) -> Tensor:
    """``log(p / (1 - p))`` with ``p`` clamped to ``[eps, 1 - eps]``."""
    p = prob.double().clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def temperature_scale(prob: Tensor, temperature: float, eps: float = LOGIT_EPS) -> Tensor:
    """``sigmoid(logit(p) / T)`` as float32; ``T = 1`` only applies the clamp."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return torch.sigmoid(logit(prob, eps) / temperature).float()


def fit_probability_temperature(prob: Tensor, truth: Tensor, *, region: Tensor | None = None
                                ) -> float:
    """The ``T`` minimising the NLL of ``sigmoid(logit(p) / T)`` on these (tuning) pixels."""
    y = _unit_truth(truth)
    p = _check_prob(prob, y)
    return fit_temperature(logit(p), y, region=region)


def binary_entropy(prob: Tensor) -> Tensor:
    """``-p log p - (1 - p) log(1 - p)`` in nats (0 at p in {0, 1}, ln 2 at 1/2)."""
    p = prob.double().clamp(1e-12, 1 - 1e-12)
    return (-(p * p.log() + (1 - p) * (1 - p).log())).float()


def near_region(truth: Tensor, radius: int = 4) -> Tensor:
    """Pixels within ``radius`` px of the true foreground (bool, the truth's shape)."""
    return near_mask(_unit_truth(truth), radius)


def calibration_study(
    prob: Tensor,
    truth: Tensor,
    uncertainty: Tensor | None = None,
    *,
    region: Tensor | None = None,
    region_name: str = "near",
    temperature: float | None = None,
    threshold: float = 0.5,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Calibration and uncertainty metrics of one model's probabilities.

    Args:
        prob: (N, 1, H, W) foreground probabilities in [0, 1].
        truth: (N, 1, H, W) true masks in {-1, 1} or {0, 1}.
        uncertainty: (N, 1, H, W) map ranking the errors (diffusion: the variance over K
            samples); None: the binary entropy of the (temperature-scaled) probabilities.
        region: optional bool mask of the pixels of a second report (e.g.
            :func:`near_region`), reported under ``region_name``.
        temperature: ``T`` applied as ``sigmoid(logit(p) / T)`` before every metric;
            None leaves ``p`` as given.
    Returns:
        ``{"temperature": T or None, "all": {ece, brier, nll, uncertainty_auroc,
        uncertainty_auprc, uncertainty_overlap, n_pixels}, region_name: {...}}``
        (the region entry only with ``region``).
    """
    y = _unit_truth(truth)
    p = _check_prob(prob, y)
    if temperature is not None:
        p = temperature_scale(p, temperature)
    if uncertainty is None:
        uncertainty = binary_entropy(p)
    elif not torch.is_tensor(uncertainty) or uncertainty.shape != p.shape:
        raise ValueError(f"uncertainty must have the shape {tuple(p.shape)} of prob, "
                         f"got {tuple(getattr(uncertainty, 'shape', ()))}")
    out: dict[str, Any] = {"temperature": temperature}
    out["all"] = {**calibration_metrics(p, y, uncertainty, threshold=threshold, n_bins=n_bins),
                  "n_pixels": int(p.numel())}
    if region is not None:
        if not torch.is_tensor(region) or region.shape != p.shape or region.dtype != torch.bool:
            raise ValueError(f"region must be a bool tensor of shape {tuple(p.shape)}")
        out[region_name] = {**calibration_metrics(p, y, uncertainty, threshold=threshold,
                                                  n_bins=n_bins, region=region),
                            "n_pixels": int(region.sum())}
    return out


def empty_truth_false_positives(pred: Tensor, truth: Tensor, threshold: float = 0.5
                                ) -> dict[str, float | int]:
    """False positives on the images whose true mask is empty.

    Args:
        pred: (N, C, H, W) masks or probabilities in [0, 1] (foreground: ``> threshold``).
        truth: (N, C, H, W) in {-1, 1} or {0, 1}.
    Returns:
        ``{"n_empty": images with an empty truth, "image_fpr": the fraction of them with
        any predicted foreground pixel, "pixel_fpr": the fraction of their pixels
        predicted foreground}`` (rates NaN when no truth is empty).
    """
    y = _unit_truth(truth)
    if not torch.is_tensor(pred) or pred.shape != y.shape or pred.ndim < 2:
        raise ValueError(f"pred must be a tensor of the truth's shape {tuple(y.shape)}, "
                         f"got {tuple(getattr(pred, 'shape', ()))}")
    empty = y.flatten(1).sum(1) == 0
    n = int(empty.sum())
    if n == 0:
        return {"n_empty": 0, "image_fpr": float("nan"), "pixel_fpr": float("nan")}
    fg = (pred.detach()[empty] > threshold).flatten(1)
    return {"n_empty": n, "image_fpr": float(fg.any(1).float().mean()),
            "pixel_fpr": float(fg.float().mean())}
