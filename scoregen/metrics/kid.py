"""Kernel distance (KID) between two feature sets (Bińkowski et al. 2018).

Bińkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs", ICLR 2018: the squared
maximum mean discrepancy with the cubic polynomial kernel

    k(x, y) = (x . y / D + 1)^3,

estimated without bias (Gretton et al. 2012, eq. 3) from m samples of each set:

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
              - 2/m^2 sum_{i, j} k(x_i, y_j).

Unlike the Fréchet distance it has no bias in m, so it may come out negative when the two
sets are alike. As in the paper (and torch-fidelity), it is averaged over random subsets
of size m drawn without replacement; the mean and the standard deviation over subsets
are reported. Called KID there because the features were Inception-v3's; here the
features are the project's own, so the values are not comparable with published KIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scoregen.metrics.feature_matrix import as_feature_matrix

__all__ = ["KernelDistance", "kernel_distance", "mmd2_unbiased", "polynomial_kernel"]


@dataclass(frozen=True)
class KernelDistance:
    """KID over subsets: ``mean`` and ``std`` of MMD^2_u, with the subsets used."""

    mean: float
    std: float
    subsets: int
    subset_size: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "subsets": self.subsets,
                "subset_size": self.subset_size}


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """``k(x_i, y_j) = (x_i . y_j / D + 1)^3`` for x (N, D), y (M, D): (N, M)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 with :func:`polynomial_kernel` between x (m, D) and y (n, D), m, n >= 2.

    The cross term averages over all ``m n`` pairs (Gretton et al. 2012, eq. 3).
    """
    fx = as_feature_matrix(x, "x", min_rows=2)
    fy = as_feature_matrix(y, "y", min_rows=2)
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension D, got "
                         f"{fx.shape[1]} and {fy.shape[1]}")
    return _mmd2(fx, fy)


def _mmd2(x: Tensor, y: Tensor) -> float:
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kernel_distance(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> KernelDistance:
    """KID between features ``x`` (N, D) and ``y`` (M, D): MMD^2_u over random subsets.

    Args:
        subsets: how many subset pairs to average over.
        subset_size: m, the size of each subset; lowered to ``min(N, M)`` when larger
            (then with ``N == M`` every subset is the whole set and ``std`` is 0).
        generator: the subsets' randomness (CPU generator).
    Returns:
        :class:`KernelDistance` with the mean and the standard deviation (ddof 1; 0 for
        one subset) of MMD^2_u over the subsets.
    """
    fx = as_feature_matrix(x, "x", min_rows=2)
    fy = as_feature_matrix(y, "y", min_rows=2)
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension D, got "
                         f"{fx.shape[1]} and {fy.shape[1]}")
    for name, value, low in (("subsets", subsets, 1), ("subset_size", subset_size, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    m = min(subset_size, fx.shape[0], fy.shape[0])
    values = []
    for _ in range(subsets):
        ix = torch.randperm(fx.shape[0], generator=generator)[:m]
        iy = torch.randperm(fy.shape[0], generator=generator)[:m]
        values.append(_mmd2(fx[ix], fy[iy]))
    v = torch.tensor(values, dtype=torch.float64)
    std = float(v.std()) if subsets > 1 else 0.0
    return KernelDistance(mean=float(v.mean()), std=std, subsets=subsets, subset_size=m)
