"""Binary segmentation metrics from one pixel confusion matrix, as in the seed talk.

Protocol (``shared/reference/seed-notes.md``): the eight metrics of the seed's
results table come from ONE confusion matrix summed over all pixels of all
evaluated images ("micro"); the per-image mean Dice ("macro") is reported beside
them. With TP, FP, TN, FN the pixel counts and N their sum:

============================  =========================================
Dice (F1)                     2 TP / (2 TP + FP + FN)
Jaccard (IoU)                 TP / (TP + FP + FN)          = Dice / (2 - Dice)
Accuracy                      (TP + TN) / N
Sensitivity (recall, TPR)     TP / (TP + FN)
Specificity (TNR)             TN / (TN + FP)
Balanced accuracy             (Sensitivity + Specificity) / 2
Precision (PPV)               TP / (TP + FP)
MCC (Matthews 1975)           (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
============================  =========================================

Degenerate cases (a zero denominator) never give NaN:

* Dice, Jaccard: 1 when truth and prediction are both empty (nothing to find,
  nothing claimed), as for the per-image Dice.
* Sensitivity (no positive pixel in the truth): 1, nothing was missed.
  Specificity (no negative pixel in the truth): 1, no false alarm possible.
  Precision (no positive pixel predicted): 1, no false claim. These "vacuous
  truth" values keep Dice = 2 P R / (P + R) consistent in every case.
* MCC (one of the four sums is 0): 1 when the prediction is perfect
  (FP = FN = 0), otherwise 0, the limiting value used by scikit-learn.
* Accuracy is undefined only for N = 0: :meth:`SegmentationMeter.compute`
  raises instead.

Inputs: predictions are binary tensors (bool or {0, 1}) or probabilities in
[0, 1], foreground where ``pred > threshold`` (default 0.5). Targets are binary in
[0, 1] (foreground where > 0.5). Masks from the datasets are in [-1, 1]: map them
with ``(m + 1) / 2`` first; values below 0 raise a ValueError saying so.
Shapes are (B, ...), one image per leading index; counts are int64, ratios
float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

#: Metric keys of :meth:`ConfusionMatrix.metrics`, in the seed table's row order.
METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "jaccard",
    "accuracy",
    "sensitivity",
    "specificity",
    "balanced_accuracy",
    "precision",
    "mcc",
)

#: Row names of the seed's results table (plus the per-image Dice we report beside it).
ROW_NAMES: dict[str, str] = {
    "dice": "Dice",
    "jaccard": "Jaccard index",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "balanced_accuracy": "Balanced Accuracy",
    "precision": "Precision",
    "mcc": "MCC",
    "dice_per_image": "Dice per image (macro)",
}

#: The seed talk's results (ELTE 2024, COVID-QU-Ex validation, threshold 0.5), as
#: published. Lung / concat "balanced_accuracy" 0.9793 is inconsistent with its own
#: sensitivity and specificity: (0.9502 + 0.9878) / 2 = 0.9690 (see seed-notes.md).
SEED_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "lung": {
        "add": {
            "dice": 0.9529, "jaccard": 0.9101, "accuracy": 0.9792, "sensitivity": 0.9455,
            "specificity": 0.9888, "balanced_accuracy": 0.9672, "precision": 0.9604,
            "mcc": 0.9396,
        },
        "concat": {
            "dice": 0.9541, "jaccard": 0.9123, "accuracy": 0.9793, "sensitivity": 0.9502,
            "specificity": 0.9878, "balanced_accuracy": 0.9793, "precision": 0.9581,
            "mcc": 0.9408,
        },
    },
    "infection": {
        "add": {
            "dice": 0.6755, "jaccard": 0.5105, "accuracy": 0.9183, "sensitivity": 0.6687,
            "specificity": 0.9550, "balanced_accuracy": 0.8119, "precision": 0.6838,
            "mcc": 0.6293,
        },
        "concat": {
            "dice": 0.4708, "jaccard": 0.3087, "accuracy": 0.8967, "sensitivity": 0.3646,
            "specificity": 0.9736, "balanced_accuracy": 0.6691, "precision": 0.6674,
            "mcc": 0.4431,
        },
    },
}


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den > 0 else empty


@dataclass(frozen=True)
class ConfusionMatrix:
    """Pixel counts of a binary segmentation; add two to pool them."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return ConfusionMatrix(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    def metrics(self) -> dict[str, float]:
        """The eight metrics of :data:`METRIC_NAMES` (conventions in the module docstring)."""
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        if self.total == 0:
            raise ValueError("the confusion matrix is empty: no pixel has been evaluated")
        sens = _ratio(tp, tp + fn, 1.0)
        spec = _ratio(tn, tn + fp, 1.0)
        sums = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)  # Python ints: exact
        if sums > 0:
            mcc = (tp * tn - fp * fn) / math.sqrt(sums)
        else:
            mcc = 1.0 if fp == 0 and fn == 0 else 0.0
        return {
            "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
            "jaccard": _ratio(tp, tp + fp + fn, 1.0),
            "accuracy": (tp + tn) / self.total,
            "sensitivity": sens,
            "specificity": spec,
            "balanced_accuracy": (sens + spec) / 2.0,
            "precision": _ratio(tp, tp + fp, 1.0),
            "mcc": mcc,
        }


def _check_unit(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.numel() == 0:
        return
    if x.is_complex():
        raise TypeError(f"{what} must be real, got dtype {x.dtype}")
    lo, hi = x.min().item(), x.max().item()
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{what} contains NaN")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{what} must be binary or probabilities in [0, 1], got values in [{lo:g}, {hi:g}]; "
            "map masks in [-1, 1] with (m + 1) / 2"
        )


def binarize(x: Tensor, threshold: float = 0.5) -> Tensor:
    """Bool tensor ``x > threshold`` (a bool input is returned as it is)."""
    if x.dtype == torch.bool:
        return x
    return x > threshold


def _per_image_counts(pred: Tensor, target: Tensor, threshold: float) -> Tensor:
    """(B, 4) int64 counts [TP, FP, TN, FN] per image, after validating the inputs."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    _check_unit(pred, "pred")
    _check_unit(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape (B, ...), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.ndim < 1:
        raise ValueError("pred and target need a batch dimension: shape (B, ...)")
    p = binarize(pred, threshold).reshape(pred.shape[0], -1)  # (B, pixels)
    t = binarize(target, 0.5).reshape(target.shape[0], -1)
    tp = (p & t).sum(1, dtype=torch.int64)
    fp = (p & ~t).sum(1, dtype=torch.int64)
    fn = (~p & t).sum(1, dtype=torch.int64)
    tn = p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, tn, fn], dim=1).cpu()


def confusion_matrix(pred: Tensor, target: Tensor, threshold: float = 0.5) -> ConfusionMatrix:
    """Pixel confusion matrix summed over all images ("micro"). pred, target: (B, ...)."""
    tp, fp, tn, fn = _per_image_counts(pred, target, threshold).sum(0).tolist()
    return ConfusionMatrix(tp, fp, tn, fn)


def _dice_from_counts(counts: Tensor) -> Tensor:
    tp, fp, fn = (counts[:, j].double() for j in (0, 1, 3))
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp(min=1), torch.ones_like(den))


def per_image_dice(pred: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) float64 Dice of each image; 1 where truth and prediction are both empty."""
    return _dice_from_counts(_per_image_counts(pred, target, threshold))


class SegmentationMeter:
    """Accumulates pixel counts over batches; :meth:`compute` gives the metrics.

    >>> meter = SegmentationMeter()
    >>> for pred, target in batches:  # (B, ...) each, in [0, 1]
    ...     meter.update(pred, target)
    >>> meter.compute()  # {"dice": ..., ..., "mcc": ..., "dice_per_image": ...}
    """

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self.confusion = ConfusionMatrix()
        self.n_images = 0
        self._dice_sum = 0.0

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: pred, target (B, ...), see the module docstring for the values."""
        counts = _per_image_counts(pred, target, self.threshold)
        tp, fp, tn, fn = counts.sum(0).tolist()
        self.confusion = self.confusion + ConfusionMatrix(tp, fp, tn, fn)
        self.n_images += counts.shape[0]
        self._dice_sum += _dice_from_counts(counts).sum().item()

    def compute(self) -> dict[str, float]:
        """Micro metrics (:data:`METRIC_NAMES`) and ``dice_per_image`` (macro mean Dice)."""
        if self.n_images == 0:
            raise ValueError("SegmentationMeter.compute() before any update(): no images")
        result = self.confusion.metrics()
        result["dice_per_image"] = self._dice_sum / self.n_images
        return result


def segmentation_metrics(pred: Tensor, target: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Micro metrics and per-image mean Dice of one batch (B, ...) in one call."""
    meter = SegmentationMeter(threshold)
    meter.update(pred, target)
    return meter.compute()


def metrics_table(
    columns: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    digits: int = 4,
    header: str = "Metric",
) -> str:
    """Markdown table with the seed's row names and order, one column per metrics dict.

    ``columns`` is one metrics dict (one column, "value") or a mapping of column
    name to metrics dict, e.g. ``{"add": m1, "concat": m2}``. The per-image Dice
    row is added when any column has it; a missing value prints as "–".
    """
    if not isinstance(columns, Mapping) or not columns:
        raise ValueError("columns must be a non-empty metrics dict or a dict of metrics dicts")
    values = list(columns.values())
    if all(isinstance(v, Mapping) for v in values):
        table = dict(columns)
    elif all(isinstance(v, (int, float)) for v in values):
        table = {"value": columns}
    else:
        raise TypeError("columns must map metric names to numbers, or column names to such dicts")
    keys = [k for k in ROW_NAMES if k in METRIC_NAMES or any(k in c for c in table.values())]
    lines = [
        "| " + " | ".join([header, *table]) + " |",
        "| --- |" + " ---: |" * len(table),
    ]
    for key in keys:
        cells = [f"{c[key]:.{digits}f}" if key in c else "–" for c in table.values()]
        lines.append("| " + " | ".join([ROW_NAMES[key], *cells]) + " |")
    return "\n".join(lines)
