"""Improved precision and recall of generative models (Kynkäänniemi et al. 2019).

Kynkäänniemi, Karras, Laine, Lehtinen, Aila, "Improved Precision and Recall Metric for
Assessing Generative Models", NeurIPS 2019, section 2. Each set of feature vectors
{phi} spans an approximate manifold: the union of balls around its points, the ball of
phi of radius the distance to its k-th nearest neighbour within the set (itself
excluded; k = 3 in the paper),

    f(phi, Phi) = 1  if  |phi - phi'| <= NND_k(phi')  for some phi' in Phi,  else 0.

    precision = mean_{g in generated} f(g, real)      (are samples realistic?)
    recall    = mean_{r in real} f(r, generated)      (is the real variety covered?)

A collapsed model scores high precision and low recall; a model that spreads noise
everywhere the opposite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from scoregen.metrics.feature_matrix import as_feature_matrix, pairwise_distances

__all__ = ["PrecisionRecall", "knn_radii", "manifold_coverage", "precision_recall"]


@dataclass(frozen=True)
class PrecisionRecall:
    """Precision and recall (fractions in [0, 1]) with the k of the k-NN balls."""

    precision: float
    recall: float
    k: int

    def to_dict(self) -> dict[str, float | int]:
        return {"precision": self.precision, "recall": self.recall, "k": self.k}


def _check_k(k: int, n: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if k >= n:
        raise ValueError(f"k = {k} needs more than k samples in {name}, got {n}")


def knn_radii(x: Tensor, k: int = 3) -> Tensor:
    """Distance of each row of float64 ``x`` (N, D) to its k-th nearest other row: (N,)."""
    _check_k(k, x.shape[0], "the set")
    d = pairwise_distances(x, x)
    d.fill_diagonal_(float("inf"))  # a point is not its own neighbour
    return d.kthvalue(k, dim=1).values


def manifold_coverage(query: Tensor, support: Tensor, k: int = 3) -> Tensor:
    """For each row of ``query`` (Q, D): inside the k-NN manifold of ``support`` (S, D)?

    Returns a bool tensor (Q,). Both float64.
    """
    radii = knn_radii(support, k)                              # (S,)
    d = pairwise_distances(query, support)                     # (Q, S)
    return (d <= radii[None, :]).any(dim=1)


def precision_recall(
    real: Tensor | np.ndarray, generated: Tensor | np.ndarray, *, k: int = 3
) -> PrecisionRecall:
    """Improved precision / recall of ``generated`` (M, D) against ``real`` (N, D).

    Args:
        k: the neighbour whose distance is each ball's radius (3 in the paper); both sets
            need more than k samples.
    """
    fr = as_feature_matrix(real, "real", min_rows=2)
    fg = as_feature_matrix(generated, "generated", min_rows=2)
    if fr.shape[1] != fg.shape[1]:
        raise ValueError(f"real and generated must have the same feature dimension D, got "
                         f"{fr.shape[1]} and {fg.shape[1]}")
    _check_k(k, fr.shape[0], "real")
    _check_k(k, fg.shape[0], "generated")
    precision = float(manifold_coverage(fg, fr, k).double().mean())
    recall = float(manifold_coverage(fr, fg, k).double().mean())
    return PrecisionRecall(precision=precision, recall=recall, k=k)
