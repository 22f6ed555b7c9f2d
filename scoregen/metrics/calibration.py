"""Pixel-wise calibration of probabilistic binary masks, and how well an uncertainty map
points at the errors.

A segmenter that outputs a foreground probability ``p`` per pixel (the mean of K diffusion
samples, or a supervised net's sigmoid) is *calibrated* when, among the pixels given
probability ``p``, a fraction ``p`` is foreground. With ``y`` the true labels in {0, 1} and
the N evaluated pixels:

=================================  =============================================================
ECE (Naeini et al. 2015;            ``sum_b (n_b / N) |mean_{i in b} y_i - mean_{i in b} p_i|``
Guo et al. 2017)                    over ``n_bins`` equal-width bins of ``p`` in [0, 1] (15 by
                                    default) — the reliability of the *foreground* probability
                                    (as torchmetrics' ``binary_calibration_error``, norm "l1")
Brier score (Brier 1950)            ``mean_i (p_i - y_i)^2``
pixel NLL                           ``-mean_i [y_i log p_i + (1 - y_i) log(1 - p_i)]``, with
                                    ``p`` clamped to ``[eps, 1 - eps]`` (``eps = 1e-6``): a mean
                                    of K samples can be exactly 0 or 1
uncertainty AUROC / AUPRC           how well the uncertainty ``u_i`` ranks the error pixels
                                    ``e_i = [p_i > 0.5] != y_i`` first (area under the ROC
                                    curve; average precision)
uncertainty-error overlap           Dice of the ``k`` most uncertain pixels with the ``k``
                                    error pixels (``k = sum_i e_i``), i.e. the fraction of the
                                    errors that the top-k uncertain pixels find
=================================  =============================================================

Background far from the lungs (black borders, the corners of the image) is almost always
predicted 0 with probability 0, which dilutes every pixel-averaged number towards perfect.
``region`` (a boolean mask of the pixels to count) restricts every metric;
:func:`near_mask` builds the usual one — pixels within ``radius`` pixels of a reference
mask (the true lungs), via a square dilation.

AUROC and AUPRC come from torchmetrics (a well-kept library whose tie handling is right and
tested; written again here it would be the same code, less tested), through
:mod:`scoregen.metrics.ranking`, which first maps the uncertainties to order-preserving
scores in [0, 1] (torchmetrics would squash larger values through a sigmoid into ties). ECE
is computed here from the same bins that the reliability diagram draws
(:func:`reliability_curve`), so the number and the picture cannot disagree; it is tested
against torchmetrics' ``binary_calibration_error`` and against values worked out by hand, as
are Brier, NLL and the overlap.
Inputs are tensors of one shape ``(B, ...)``; probabilities and labels
in [0, 1] (labels are thresholded at 0.5), uncertainties any finite real numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from scoregen.metrics.ranking import auroc, average_precision

__all__ = [
    "CALIBRATION_METRICS",
    "ReliabilityCurve",
    "brier_score",
    "calibration_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "near_mask",
    "pixel_nll",
    "reliability_curve",
    "uncertainty_error_auprc",
    "uncertainty_error_auroc",
    "uncertainty_error_overlap",
]

#: Keys of :func:`calibration_metrics`, in table order.
CALIBRATION_METRICS: tuple[str, ...] = (
    "ece", "brier", "nll", "uncertainty_auroc", "uncertainty_auprc", "uncertainty_overlap",
)

_NLL_EPS = 1e-6


# ---------------------------------------------------------------------- input checks
def _check_pair(prob: Tensor, target: Tensor, region: Tensor | None) -> tuple[Tensor, Tensor]:
    """Flatten ``prob`` and binary ``target`` to the pixels of ``region`` (float64, long)."""
    for name, x in (("prob", prob), ("target", target)):
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if prob.shape != target.shape:
        raise ValueError(
            f"prob and target must have one shape; got {tuple(prob.shape)} and "
            f"{tuple(target.shape)}"
        )
    p = prob.detach().to(torch.float64)
    if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError(
            "prob must be probabilities in [0, 1]; got values in "
            f"[{p.min().item():.4g}, {p.max().item():.4g}] (map masks in [-1, 1] by (m + 1) / 2)"
        )
    y = target.detach().to(torch.float64)
    if y.numel() and not bool(((y >= 0) & (y <= 1)).all()):
        raise ValueError(
            "target must be labels in [0, 1]; got values in "
            f"[{y.min().item():.4g}, {y.max().item():.4g}] (map masks in [-1, 1] by (m + 1) / 2)"
        )
    y = (y > 0.5).long()
    if region is not None:
        keep = _check_region(region, prob.shape)
        p, y = p[keep], y[keep]
    p, y = p.flatten(), y.flatten()
    if p.numel() == 0:
        raise ValueError("no pixels to evaluate (empty input, or region selects none)")
    return p, y


def _check_region(region: Tensor, shape: torch.Size) -> Tensor:
    if not torch.is_tensor(region) or region.dtype != torch.bool:
        raise TypeError(f"region must be a bool tensor, got {getattr(region, 'dtype', region)!r}")
    if region.shape != shape:
        raise ValueError(f"region must have the shape {tuple(shape)}, got {tuple(region.shape)}")
    return region


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return n_bins


# ---------------------------------------------------------------------- calibration
def expected_calibration_error(
    prob: Tensor, target: Tensor, *, n_bins: int = 15, region: Tensor | None = None
) -> float:
    """ECE of the foreground probability over ``n_bins`` equal-width bins (see module doc)."""
    return reliability_curve(prob, target, n_bins=n_bins, region=region).ece


def brier_score(prob: Tensor, target: Tensor, *, region: Tensor | None = None) -> float:
    """``mean (p - y)^2`` over the pixels (0 = perfect; 0.25 for p = 0.5 everywhere)."""
    p, y = _check_pair(prob, target, region)
    return float((p - y).pow(2).mean())


def pixel_nll(
    prob: Tensor, target: Tensor, *, region: Tensor | None = None, eps: float = _NLL_EPS
) -> float:
    """Mean binary cross-entropy in nats, ``p`` clamped to ``[eps, 1 - eps]``."""
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    p, y = _check_pair(prob, target, region)
    return float(F.binary_cross_entropy(p.clamp(eps, 1 - eps), y.to(p.dtype)))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin numbers of a reliability diagram (bins with no pixel are NaN / 0).

    ``edges``: (n_bins + 1,); ``confidence``: mean ``p`` per bin; ``frequency``: fraction of
    foreground per bin; ``count``: pixels per bin. ``ece`` is their weighted gap.
    """

    edges: Tensor
    confidence: Tensor
    frequency: Tensor
    count: Tensor

    @property
    def ece(self) -> float:
        n = self.count.sum()
        gap = (self.frequency - self.confidence).abs().nan_to_num(0.0)
        return float((gap * self.count).sum() / n)


def reliability_curve(
    prob: Tensor, target: Tensor, *, n_bins: int = 15, region: Tensor | None = None
) -> ReliabilityCurve:
    """The bins behind :func:`expected_calibration_error`, for plotting.

    Bin ``b`` holds ``edges[b] <= p < edges[b+1]``, and ``p = 1`` falls in the last bin.
    That is torchmetrics' convention except at ``p = 1`` exactly, which torchmetrics keeps
    in a bin of its own; a mean of K samples is often exactly 1, and a 15-bin diagram
    should have 15 bins. ``curve.ece`` is :func:`expected_calibration_error`.
    """
    p, y = _check_pair(prob, target, region)
    n_bins = _check_bins(n_bins)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = (torch.bucketize(p, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    p_sum = torch.bincount(idx, weights=p, minlength=n_bins)
    y_sum = torch.bincount(idx, weights=y.to(torch.float64), minlength=n_bins)
    nan = torch.full_like(count, math.nan)
    conf = torch.where(count > 0, p_sum / count.clamp_min(1), nan)
    freq = torch.where(count > 0, y_sum / count.clamp_min(1), nan)
    return ReliabilityCurve(edges=edges, confidence=conf, frequency=freq, count=count.long())


# ---------------------------------------------------------------------- uncertainty vs errors
def _check_uncertainty(
    uncertainty: Tensor, errors: Tensor, region: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Flatten ``uncertainty`` (finite reals) and binary ``errors`` to ``region``'s pixels."""
    if not torch.is_tensor(uncertainty) or not torch.is_tensor(errors):
        raise TypeError("uncertainty and errors must be tensors")
    if uncertainty.shape != errors.shape:
        raise ValueError(
            f"uncertainty and errors must have one shape; got {tuple(uncertainty.shape)} and "
            f"{tuple(errors.shape)}"
        )
    u = uncertainty.detach().to(torch.float64)
    if u.numel() and not bool(torch.isfinite(u).all()):
        raise ValueError("uncertainty contains non-finite values (nan or inf)")
    e = errors.detach()
    e = e if e.dtype == torch.bool else e.to(torch.float64) > 0.5
    if region is not None:
        keep = _check_region(region, uncertainty.shape)
        u, e = u[keep], e[keep]
    u, e = u.flatten(), e.flatten().long()
    if u.numel() == 0:
        raise ValueError("no pixels to evaluate (empty input, or region selects none)")
    return u, e


def uncertainty_error_auroc(
    uncertainty: Tensor, errors: Tensor, *, region: Tensor | None = None
) -> float:
    """AUROC of ``uncertainty`` as a score for the error pixels (0.5 = chance).

    NaN when every pixel, or none, is an error (the ROC curve is undefined).
    """
    u, e = _check_uncertainty(uncertainty, errors, region)
    if int(e.sum()) in (0, e.numel()):
        return math.nan
    return auroc(u, e)


def uncertainty_error_auprc(
    uncertainty: Tensor, errors: Tensor, *, region: Tensor | None = None
) -> float:
    """Average precision of ``uncertainty`` for the error pixels (chance = error rate).

    NaN when no pixel is an error.
    """
    u, e = _check_uncertainty(uncertainty, errors, region)
    if int(e.sum()) == 0:
        return math.nan
    return average_precision(u, e)


def uncertainty_error_overlap(
    uncertainty: Tensor, errors: Tensor, *, region: Tensor | None = None
) -> float:
    """Dice of the ``k`` most uncertain pixels with the ``k = #errors`` error pixels.

    Both sets have ``k`` pixels, so the Dice is ``|top_k ∩ errors| / k``. Ties in the
    uncertainty are broken by pixel order (stable sort). 1 when there is no error.
    """
    u, e = _check_uncertainty(uncertainty, errors, region)
    k = int(e.sum())
    if k == 0:
        return 1.0
    top = torch.sort(u, descending=True, stable=True).indices[:k]
    return float(e[top].sum()) / k


# ---------------------------------------------------------------------- regions, temperature
def near_mask(mask: Tensor, radius: int) -> Tensor:
    """Pixels within ``radius`` pixels (Chebyshev distance) of a foreground pixel of ``mask``.

    ``mask``: (B, C, H, W) or (B, H, W), values in [0, 1] (foreground > 0.5); returns a bool
    tensor of the same shape — a square dilation by ``2 radius + 1``.
    """
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be an integer >= 0, got {radius!r}")
    if not torch.is_tensor(mask) or mask.ndim not in (3, 4):
        raise ValueError(
            f"mask must be (B, C, H, W) or (B, H, W), got {getattr(mask, 'shape', mask)}"
        )
    m = (mask.detach().to(torch.float32) > 0.5).to(torch.float32)
    m4 = m if m.ndim == 4 else m[:, None]
    if radius:
        m4 = F.max_pool2d(m4, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return (m4 if m.ndim == 4 else m4[:, 0]) > 0.5


def fit_temperature(
    logits: Tensor, target: Tensor, *, region: Tensor | None = None, max_iter: int = 100
) -> float:
    """Temperature ``T > 0`` minimising the NLL of ``sigmoid(logits / T)`` (Guo et al. 2017).

    Fit on held-out pixels (a validation subset carved from Train), then apply as
    ``sigmoid(logits / T)``. Optimised over ``log T`` with L-BFGS in float64.
    """
    if not torch.is_tensor(logits) or logits.shape != getattr(target, "shape", None):
        raise ValueError(
            f"logits and target must be tensors of one shape; got "
            f"{tuple(getattr(logits, 'shape', ()))} and {tuple(getattr(target, 'shape', ()))}"
        )
    z = logits.detach().to(torch.float64)
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits contain non-finite values")
    _check_pair(torch.sigmoid(z), target, region)  # shapes, label range, region
    y = target.detach().to(torch.float64) > 0.5
    if region is not None:
        z, y = z[region], y[region]
    z, y = z.flatten(), y.flatten().to(torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


# ---------------------------------------------------------------------- all at once
def calibration_metrics(
    prob: Tensor,
    target: Tensor,
    uncertainty: Tensor | None = None,
    *,
    threshold: float = 0.5,
    n_bins: int = 15,
    region: Tensor | None = None,
) -> dict[str, float]:
    """Every metric of :data:`CALIBRATION_METRICS` for one set of predictions.

    The errors are the pixels where ``prob > threshold`` disagrees with the target. Without
    an ``uncertainty`` map the binary entropy of ``prob`` is used (what a supervised net's
    sigmoid offers; for an ensemble pass its pixel-wise variance or entropy).
    """
    if uncertainty is None:
        p = prob.detach().to(torch.float64).clamp(1e-12, 1 - 1e-12)
        uncertainty = -(p * p.log() + (1 - p) * (1 - p).log())
    errors = (prob > threshold) != (target > 0.5)
    return {
        "ece": expected_calibration_error(prob, target, n_bins=n_bins, region=region),
        "brier": brier_score(prob, target, region=region),
        "nll": pixel_nll(prob, target, region=region),
        "uncertainty_auroc": uncertainty_error_auroc(uncertainty, errors, region=region),
        "uncertainty_auprc": uncertainty_error_auprc(uncertainty, errors, region=region),
        "uncertainty_overlap": uncertainty_error_overlap(uncertainty, errors, region=region),
    }
