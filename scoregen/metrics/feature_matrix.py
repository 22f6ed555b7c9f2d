"""Feature matrices at the boundary of the sample-quality metrics.

Every sample-quality metric (:mod:`~scoregen.metrics.frechet`, :mod:`~scoregen.metrics.kid`,
:mod:`~scoregen.metrics.precision_recall`, :mod:`~scoregen.metrics.memorisation`) takes
two sets of feature vectors ``(N, D)`` (or images ``(N, *D)``, flattened) and computes in
float64 on the CPU. :func:`as_feature_matrix` validates and converts one set, once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_feature_matrix", "pairwise_distances"]


def as_feature_matrix(x: Tensor | np.ndarray, name: str, *, min_rows: int = 1,
                      flatten: bool = False) -> Tensor:
    """``x`` as a finite float64 CPU tensor of shape (N, D).

    Args:
        x: (N, D) features; with ``flatten=True`` any (N, *D) (e.g. images), flattened.
        name: what ``x`` is, for the error messages.
        min_rows: the fewest samples N the caller can work with.

    Raises:
        TypeError: ``x`` is neither a tensor nor an array.
        ValueError: wrong rank, too few rows, D = 0, or non-finite values.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array (N, D), "
                        f"got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
    if flatten and x.ndim >= 2:
        x = x.flatten(1)
    if x.ndim != 2:
        want = "(N, *D)" if flatten else "(N, D)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples (rows), got {x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has feature dimension D = 0: {tuple(x.shape)}")
    out = x.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return out


def pairwise_distances(x: Tensor, y: Tensor, *, chunk: int = 1024) -> Tensor:
    """Euclidean distances ``|x_i - y_j|`` (N, M) of float64 ``x`` (N, D), ``y`` (M, D).

    Computed in row chunks from the exact differences' norms by ``torch.cdist``'s direct
    path (not the ``|x|^2 + |y|^2 - 2 x.y`` expansion, which loses the small distances
    a memorisation check is about).
    """
    rows = [torch.cdist(x[i:i + chunk], y, compute_mode="donot_use_mm_for_euclid_dist")
            for i in range(0, x.shape[0], chunk)]
    return torch.cat(rows) if rows else x.new_zeros(0, y.shape[0])
