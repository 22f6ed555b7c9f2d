"""Rank metrics of a real-valued score for a binary label: AUROC and average precision.

Both depend only on the *order* of the scores. torchmetrics computes them with correct tie
handling, but its binary functions treat any score outside [0, 1] as a logit and pass it
through a sigmoid first — which, in float32 beyond about |s| = 17 (float64: 37), maps
distinct scores to the same 1.0 and turns them into ties: bits/dim of 4.4 vs 4.8 survive,
55,000 vs 74,000 read AUROC 0.500. Scores here are first replaced by their dense rank
scaled to [0, 1] (order and ties kept exactly), so any finite real score works:

    AUROC = P(s_pos > s_neg) + P(s_pos = s_neg) / 2        (Mann–Whitney U / (n_pos n_neg))
    AP    = sum_k (R_k - R_{k-1}) P_k                      (precision P_k at each threshold)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

__all__ = ["auroc", "average_precision", "order_preserving_unit_scores"]


def _check(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if not torch.is_tensor(scores) or not scores.is_floating_point():
        raise TypeError(f"scores must be a float tensor, got {getattr(scores, 'dtype', scores)!r}")
    if not torch.is_tensor(labels) or labels.shape != scores.shape:
        raise ValueError(f"labels must be a tensor of the scores' shape {tuple(scores.shape)}, "
                         f"got {tuple(getattr(labels, 'shape', ()))}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain non-finite values (NaN or inf)")
    if labels.dtype != torch.bool and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be boolean or 0/1")
    return scores.flatten(), labels.flatten().long()


def order_preserving_unit_scores(scores: Tensor) -> Tensor:
    """Dense ranks of ``scores`` scaled to [0, 1] (float64): same order, same ties."""
    values, inverse = torch.unique(scores.double(), sorted=True, return_inverse=True)
    return inverse.double() / max(len(values) - 1, 1)


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher = positive) for ``labels`` in {0, 1};
    NaN when only one class is present. Any finite real scores (see the module docstring)."""
    s, y = _check(scores, labels)
    if int(y.sum()) in (0, y.numel()):
        return math.nan
    return float(binary_auroc(order_preserving_unit_scores(s), y))


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision of ``scores`` for ``labels`` in {0, 1}; NaN when no positive."""
    s, y = _check(scores, labels)
    if int(y.sum()) == 0:
        return math.nan
    return float(binary_average_precision(order_preserving_unit_scores(s), y))
