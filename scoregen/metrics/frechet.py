"""Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

For N(mu_1, S_1) and N(mu_2, S_2) the squared 2-Wasserstein (Fréchet) distance is
(Dowson & Landau 1982)

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).

Heusel et al. ("GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017) fit these Gaussians to Inception-v3 features of real and
generated images and call the result FID. scoregen computes it in the feature space of
its own networks (e.g. :class:`scoregen.nn.FeatureClassifier`), so it is called the
*Fréchet distance* here: its values are not comparable with published FIDs.

The trace of the matrix square root is computed without forming (S_1 S_2)^{1/2}, which is
not symmetric: S_1 S_2 is similar to the symmetric PSD matrix M = S_1^{1/2} S_2 S_1^{1/2}
(same eigenvalues), so tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i(M)), with S_1^{1/2} and
lambda(M) from symmetric eigen-decompositions (``eigh``) in float64 and round-off
negatives clipped to 0. Stable for singular covariances (fewer samples than D), where
``scipy.linalg.sqrtm`` returns complex parts that have to be dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from scoregen.metrics.feature_matrix import as_feature_matrix

__all__ = ["frechet_distance", "gaussian_frechet_distance"]


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric PSD square root of a symmetric (D, D) matrix (negative round-off clipped)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0.0).sqrt()) @ v.T


def _square_matrix(s: Tensor | np.ndarray, name: str, dim: int) -> Tensor:
    if isinstance(s, np.ndarray):
        s = torch.from_numpy(s)
    if not isinstance(s, Tensor):
        raise TypeError(f"{name} must be a tensor or array (D, D), got {type(s).__name__}")
    s = s.detach().to("cpu", torch.float64)
    if s.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} contains non-finite values")
    if not torch.allclose(s, s.T, rtol=1e-8, atol=1e-10 * float(s.abs().max().clamp_min(1))):
        raise ValueError(f"{name} must be symmetric (a covariance matrix)")
    return 0.5 * (s + s.T)


def gaussian_frechet_distance(
    mu1: Tensor | np.ndarray, sigma1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray, sigma2: Tensor | np.ndarray,
) -> float:
    """Squared Fréchet distance ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})``.

    Args:
        mu1, mu2: means (D,); sigma1, sigma2: covariances (D, D), symmetric PSD.
    Returns:
        the distance (float, >= 0 up to round-off; clipped at 0).
    """
    m1 = as_feature_matrix(torch.as_tensor(mu1)[None], "mu1")[0]
    m2 = as_feature_matrix(torch.as_tensor(mu2)[None], "mu2")[0]
    if m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must have the same shape (D,), got "
                         f"{tuple(m1.shape)} and {tuple(m2.shape)}")
    dim = m1.shape[0]
    s1 = _square_matrix(sigma1, "sigma1", dim)
    s2 = _square_matrix(sigma2, "sigma2", dim)
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0.0).sqrt().sum()
    d2 = (m1 - m2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_sqrt
    return max(float(d2), 0.0)


def frechet_distance(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features ``x`` (N, D) and ``y`` (M, D).

    Means and unbiased covariances (``N - 1`` in the denominator, as ``numpy.cov`` and the
    reference FID code), then :func:`gaussian_frechet_distance`. Float64 throughout.
    It is the *squared* distance (as FID), and biased upwards for finite N: compare values
    only at equal sample sizes, against the distance between two real sets of that size.
    """
    fx = as_feature_matrix(x, "x", min_rows=2)
    fy = as_feature_matrix(y, "y", min_rows=2)
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension D, got "
                         f"{fx.shape[1]} and {fy.shape[1]}")
    return gaussian_frechet_distance(fx.mean(0), torch.cov(fx.T).reshape(fx.shape[1], -1),
                                     fy.mean(0), torch.cov(fy.T).reshape(fy.shape[1], -1))
