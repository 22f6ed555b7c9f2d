"""Fusing K sampled segmentation masks into one, and the ensemble's uncertainty.

A conditional diffusion model gives a different mask for every noise draw. Fusing
K of them (Wolleb et al. 2022; Wu et al., MedSegDiff 2023) is usually better than
any single one:

* ``mean``: average the K samples, then ``> threshold``.
* ``vote``: binarise each sample at ``threshold``, keep pixels where a strict
  majority (more than K / 2) says foreground; ties go to background. For binary
  samples and threshold 0.5 this equals ``mean``.
* ``staple``: real iterative STAPLE (Warfield, Zou, Wells, "Simultaneous Truth and
  Performance Level Estimation", IEEE TMI 23(7):903-921, 2004), binary case: EM
  over the hidden true mask T and each rater j's sensitivity p_j and
  specificity q_j. (MedSegDiff's "staple" is one weighted-mean pass, not this.)

  E-step, pixel i, decisions D_ij in {0, 1}, prior g = P(T_i = 1)::

      a_i = g   * prod_j p_j^D_ij (1 - p_j)^(1 - D_ij)
      b_i = (1-g) * prod_j q_j^(1 - D_ij) (1 - q_j)^D_ij
      W_i = a_i / (a_i + b_i)                          # P(T_i = 1 | D, p, q)

  M-step::

      p_j = sum_i W_i D_ij / sum_i W_i
      q_j = sum_i (1 - W_i)(1 - D_ij) / sum_i (1 - W_i)

  iterated to convergence; the fused mask is ``W > 0.5``. Here each image of the
  batch is its own STAPLE problem (sample j of one image and sample j of another
  are unrelated draws). W_i depends only on pixel i's pattern of K decisions, so
  EM runs exactly on the at most 2^K distinct patterns weighted by their pixel
  counts, not on every pixel.

Scale: ``samples`` are (K, B, ...) in [0, 1], probabilities or binary {0, 1}, like
the metrics' inputs. A model that generates masks in [-1, 1] (as the datasets
store them) should map them with :func:`to_unit_interval` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

FUSION_METHODS: tuple[str, ...] = ("mean", "vote", "staple")
_EPS = 1e-6


def to_unit_interval(x: Tensor) -> Tensor:
    """Map masks from the model's [-1, 1] to [0, 1]: ``clamp((x + 1) / 2, 0, 1)``.

    Clamping absorbs a sampler's small overshoot beyond [-1, 1].
    """
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _check_samples(samples: Tensor) -> None:
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples must be a torch.Tensor of shape (K, B, ...), got {type(samples)}")
    if samples.ndim < 2 or samples.shape[0] < 1 or samples.shape[1] < 1:
        raise ValueError(
            f"samples must have shape (K, B, ...) with K >= 1 samples of B images, "
            f"got {tuple(samples.shape)}"
        )
    if samples.dtype == torch.bool:
        return
    if samples.is_complex():
        raise TypeError(f"samples must be real, got dtype {samples.dtype}")
    lo, hi = samples.min().item(), samples.max().item()
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("samples contain NaN")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"samples must be probabilities or binary masks in [0, 1], got values in "
            f"[{lo:g}, {hi:g}]; map [-1, 1] samples with to_unit_interval(x)"
        )


def _check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}")


@dataclass(frozen=True)
class StapleResult:
    """Output of :func:`staple` for K raters of B images.

    Attributes:
        probability: (B, ...) float64, W = P(T = 1 | decisions) per pixel.
        mask: (B, ...) float {0, 1}, ``probability > 0.5``.
        sensitivity: (K, B) estimated p_j of each rater on each image.
        specificity: (K, B) estimated q_j.
        prior: (B,) the prior P(T = 1) used.
        iterations: EM iterations run.
        converged: whether the largest change of p, q fell below ``tol``.
    """

    probability: Tensor
    mask: Tensor
    sensitivity: Tensor
    specificity: Tensor
    prior: Tensor
    iterations: int
    converged: bool


def _posterior_logit(d: Tensor, p: Tensor, q: Tensor, log_prior_ratio: Tensor) -> Tensor:
    """log(a_i / b_i) of the E-step: (B, M) from decisions d (K, B, M), p, q (K, B).

    sum_j [D_ij log(p_j / (1 - q_j)) + (1 - D_ij) log((1 - p_j) / q_j)]
    = sum_j D_ij alpha_j + sum_j beta_j, one contraction over raters.
    """
    beta = (-p).log1p() - q.log()  # (K, B)
    alpha = p.log() - (-q).log1p() - beta
    return torch.einsum("kbm,kb->bm", d, alpha) + (beta.sum(0) + log_prior_ratio)[:, None]


def _logit(x: Tensor) -> Tensor:
    return x.log() - (-x).log1p()


def _decision_patterns(d: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Group pixels by their pattern of K decisions (exact: W_i depends on nothing else).

    Args:
        d: (K, B, N) bool decisions.
    Returns:
        units (K, B, M) float64 decisions of each unit, counts (B, M) float64 pixels
        per unit, and codes (B, N) giving each pixel's unit, or None when the units
        are the pixels themselves (M = N; used when 2^K >= N).
    """
    k, b, n = d.shape
    if k > 20 or 2**k >= n:
        return d.double(), torch.ones(b, n, dtype=torch.float64, device=d.device), None
    m = 2**k
    powers = 2 ** torch.arange(k, device=d.device)  # (K,)
    codes = (d.long() * powers[:, None, None]).sum(0)  # (B, N) pattern index in [0, 2^K)
    counts = torch.zeros(b, m, dtype=torch.float64, device=d.device)
    counts.scatter_add_(1, codes, torch.ones_like(codes, dtype=torch.float64))
    bits = (torch.arange(m, device=d.device)[None, :] // powers[:, None]) % 2  # (K, M)
    return bits[:, None, :].expand(k, b, m).double(), counts, codes


@torch.no_grad()
def staple(
    samples: Tensor,
    threshold: float = 0.5,
    prior: str | float = "em",
    max_iter: int = 500,
    tol: float = 1e-6,
    init_sensitivity: float = 0.99,
    init_specificity: float = 0.99,
) -> StapleResult:
    """Binary STAPLE (Warfield et al. 2004) on K raters, per image.

    Args:
        samples: (K, B, ...) in [0, 1]; rater decisions are ``samples > threshold``.
        threshold: binarisation threshold of the raters.
        prior: P(T = 1). ``"em"`` (default) re-estimates it in every M-step as the
            mean of W, the maximum-likelihood treatment of the same model (Dawid &
            Skene 1979, of which binary STAPLE is an instance). ``"fixed"``:
            Warfield's global prior, the mean of all decisions, held fixed; it is
            biased when raters' false positive and false negative rates differ and
            the bias leaks into p_j, q_j. A float in (0, 1) fixes it to that value.
        max_iter: EM iteration limit.
        tol: stop when no p_j, q_j changes by more than this.
        init_sensitivity, init_specificity: starting p_j, q_j (in (0.5, 1): raters
            are assumed better than chance to start with).
    """
    _check_samples(samples)
    _check_threshold(threshold)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    inits = {"init_sensitivity": init_sensitivity, "init_specificity": init_specificity}
    for name, value in inits.items():
        if not 0.5 < value < 1.0:
            raise ValueError(f"{name} must be in (0.5, 1), got {value!r}")
    k, b = samples.shape[:2]
    spatial = samples.shape[2:]
    decisions = samples > threshold if samples.dtype != torch.bool else samples
    d, counts, codes = _decision_patterns(decisions.reshape(k, b, -1))  # d: (K, B, M)
    n = counts.sum(-1)  # (B,) pixels per image
    d_sum = torch.einsum("kbm,bm->kb", d, counts)  # sum_i D_ij
    if prior in ("em", "fixed"):
        g = d_sum.sum(0) / (k * n)  # mean of all decisions
    elif isinstance(prior, (int, float)) and 0.0 < prior < 1.0:
        g = torch.full((b,), float(prior), dtype=torch.float64, device=d.device)
    else:
        raise ValueError(f"prior must be 'em', 'fixed' or a float in (0, 1), got {prior!r}")
    g = g.clamp(_EPS, 1 - _EPS)
    p = torch.full((k, b), init_sensitivity, dtype=torch.float64, device=d.device)
    q = torch.full((k, b), init_specificity, dtype=torch.float64, device=d.device)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported after the loop)
        w = torch.sigmoid(_posterior_logit(d, p, q, _logit(g)))  # E-step: (B, M)
        # M-step over pixel counts; keep the old value where a class has no weight at all.
        cw = counts * w
        w_sum = cw.sum(-1)  # (B,) sum_i W_i
        v_sum = n - w_sum  # sum_i (1 - W_i)
        dw = torch.einsum("kbm,bm->kb", d, cw)  # sum_i W_i D_ij
        p_new = torch.where(w_sum > 0, dw / w_sum.clamp(min=_EPS), p)
        q_new = torch.where(v_sum > 0, (v_sum - (d_sum - dw)) / v_sum.clamp(min=_EPS), q)
        p_new, q_new = p_new.clamp(_EPS, 1 - _EPS), q_new.clamp(_EPS, 1 - _EPS)
        change = torch.maximum((p_new - p).abs().max(), (q_new - q).abs().max()).item()
        p, q = p_new, q_new
        if prior == "em":
            g = (w_sum / n).clamp(_EPS, 1 - _EPS)
        if change < tol:
            converged = True
            break
    w = torch.sigmoid(_posterior_logit(d, p, q, _logit(g)))
    w = (w if codes is None else w.gather(1, codes)).reshape(b, *spatial)
    out_dtype = samples.dtype if samples.is_floating_point() else torch.float32
    return StapleResult(
        probability=w,
        mask=(w > 0.5).to(out_dtype),
        sensitivity=p,
        specificity=q,
        prior=g,
        iterations=iterations,
        converged=converged,
    )


@torch.no_grad()
def fuse(samples: Tensor, method: str = "mean", threshold: float = 0.5, **staple_options) -> Tensor:
    """Fuse K sampled masks of B images into one binary mask per image.

    Args:
        samples: (K, B, ...) in [0, 1] (probabilities or binary).
        method: ``"mean"``, ``"vote"`` or ``"staple"`` (see the module docstring).
        threshold: for ``mean`` the threshold of the average; for ``vote`` and
            ``staple`` the threshold that binarises each sample.
        **staple_options: passed to :func:`staple` (``prior``, ``max_iter``, ...);
            rejected for the other methods.

    Returns:
        (B, ...) float {0, 1} mask (the input's dtype if floating, else float32).
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {FUSION_METHODS}")
    if staple_options and method != "staple":
        raise TypeError(f"options {sorted(staple_options)} only apply to method='staple'")
    _check_samples(samples)
    _check_threshold(threshold)
    out_dtype = samples.dtype if samples.is_floating_point() else torch.float32
    if method == "mean":
        return (samples.to(out_dtype).mean(0) > threshold).to(out_dtype)
    if method == "vote":
        votes = (samples > threshold if samples.dtype != torch.bool else samples).sum(0)
        return (2 * votes > samples.shape[0]).to(out_dtype)
    return staple(samples, threshold=threshold, **staple_options).mask


@torch.no_grad()
def uncertainty(samples: Tensor) -> Tensor:
    """(B, ...) pixel-wise variance over the K samples (population variance, divisor K).

    For binary samples it is f (1 - f), f the foreground fraction: 0 where all
    agree, at most 0.25. Samples must be in [0, 1] like for :func:`fuse`.
    """
    _check_samples(samples)
    x = samples.float() if not samples.is_floating_point() else samples
    return x.var(dim=0, correction=0)
