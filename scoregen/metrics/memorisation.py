"""Memorisation check: how close are generated samples to the training set?

A model that copies its training images would score well on every distance between
distributions. The check (in the spirit of the nearest-neighbour tests of Carlini et al.,
"Extracting Training Data from Diffusion Models", USENIX Security 2023, and Somepalli et
al., CVPR 2023) compares two distributions of nearest-neighbour distances:

    d_gen(g) = min_{t in Train} |g - t|      for each generated sample g,
    d_val(v) = min_{t in Train} |v - t|      for each real held-out (Val) sample v.

Held-out real images are the reference for "how close a new image from the same source
comes to Train by chance". Reported: the median and 5th percentile of both, and the
fraction of generated samples closer to Train than the Val 1st percentile,

    copy_fraction = #{g : d_gen(g) < q_0.01(d_val)} / #generated,

about 0.01 for a model that does not copy (and much more for one that does). Distances are
Euclidean, in pixel space (images flattened) or in a feature space; percentiles by linear
interpolation (``torch.quantile``, as ``numpy.percentile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scoregen.metrics.feature_matrix import as_feature_matrix, pairwise_distances

__all__ = ["Memorisation", "memorisation", "memorisation_from_distances", "nearest_distances"]


def nearest_distances(
    query: Tensor | np.ndarray, reference: Tensor | np.ndarray
) -> Tensor:
    """Euclidean distance of each row of ``query`` (Q, *D) to its nearest row of
    ``reference`` (R, *D), both flattened to vectors: float64 (Q,)."""
    q = as_feature_matrix(query, "query", flatten=True)
    r = as_feature_matrix(reference, "reference", flatten=True)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference must have the same dimension, got "
                         f"{q.shape[1]} and {r.shape[1]}")
    return pairwise_distances(q, r).min(dim=1).values


@dataclass(frozen=True)
class Memorisation:
    """Nearest-Train distances of generated and of real Val samples (see the module)."""

    generated_median: float
    generated_p5: float
    val_median: float
    val_p5: float
    val_p1: float
    copy_fraction: float
    generated_min: float
    n_generated: int
    n_val: int

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def _q(x: Tensor, p: float) -> float:
    return float(torch.quantile(x, p))


def memorisation(
    generated: Tensor | np.ndarray,
    train: Tensor | np.ndarray,
    val: Tensor | np.ndarray,
) -> Memorisation:
    """Nearest-Train distances of ``generated`` (G, *D) against those of ``val`` (V, *D).

    ``train`` (T, *D) is the training set; all three flattened to vectors of one dimension
    (pixels or features). An exact copy of a training sample has distance 0.
    """
    return memorisation_from_distances(nearest_distances(generated, train),
                                       nearest_distances(val, train))


def memorisation_from_distances(d_gen: Tensor, d_val: Tensor) -> Memorisation:
    """:func:`memorisation` from nearest-Train distances already computed (e.g. ``d_val``
    once for many generated sets): ``d_gen`` (G,), ``d_val`` (V,), both >= 0."""
    for name, d in (("d_gen", d_gen), ("d_val", d_val)):
        if not isinstance(d, Tensor) or d.ndim != 1 or d.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor of distances")
        if not bool(torch.isfinite(d).all()) or bool((d < 0).any()):
            raise ValueError(f"{name} must hold finite distances >= 0")
    d_gen, d_val = d_gen.double(), d_val.double()
    p1 = _q(d_val, 0.01)
    return Memorisation(
        generated_median=_q(d_gen, 0.5), generated_p5=_q(d_gen, 0.05),
        val_median=_q(d_val, 0.5), val_p5=_q(d_val, 0.05), val_p1=p1,
        copy_fraction=float((d_gen < p1).double().mean()),
        generated_min=float(d_gen.min()),
        n_generated=int(d_gen.numel()), n_val=int(d_val.numel()),
    )
