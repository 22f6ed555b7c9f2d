"""Sample-quality distances between point clouds, for benchmarking samplers.

Sliced Wasserstein-2 (Rabin et al. 2011; Bonneel et al. 2015):

    SW_2(P, Q)^2 = E_{theta ~ U(S^{D-1})} W_2^2(theta^T P, theta^T Q),

where each one-dimensional W_2 between two equal-size empirical measures is the mean
squared difference of their sorted projections. Averaged over ``num_projections``
random directions. Between two finite samples of the *same* distribution it is not zero:
:func:`sliced_wasserstein_floor` measures that noise floor for a sample size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein", "sliced_wasserstein_floor"]


def _directions(dim: int, n: int, generator: torch.Generator | None) -> Tensor:
    theta = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    num_projections: int = 1024,
    generator: torch.Generator | None = None,
) -> float:
    """SW_2 between samples ``x`` (N, *D) and ``y`` (N, *D) of equal size, in float64."""
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape (N, *D); got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples of shape (N, *D), got {tuple(x.shape)}")
    x64 = x.detach().flatten(1).to("cpu", torch.float64)
    y64 = y.detach().flatten(1).to("cpu", torch.float64)
    if not (bool(torch.isfinite(x64).all()) and bool(torch.isfinite(y64).all())):
        return float("inf")
    theta = _directions(x64.shape[1], num_projections, generator)
    # (P, N), sorted along the contiguous last dim: ~5x faster than sorting (N, P) on dim 0
    px = (theta @ x64.T).sort(1).values
    py = (theta @ y64.T).sort(1).values
    return float(((px - py) ** 2).mean().sqrt())


def sliced_wasserstein_floor(
    sample_fn: Callable[[int, torch.Generator], Tensor],
    n: int,
    *,
    repeats: int = 3,
    num_projections: int = 1024,
    seed: int = 0,
) -> float:
    """Mean SW_2 between pairs of independent true samples of size ``n``: the noise floor.

    ``sample_fn(n, generator)`` draws ``n`` exact samples.
    """
    gen = torch.Generator().manual_seed(seed)
    values = [
        sliced_wasserstein(sample_fn(n, gen), sample_fn(n, gen),
                           num_projections=num_projections, generator=gen)
        for _ in range(repeats)
    ]
    return sum(values) / len(values)
