"""Segmentation metrics: hand-computed confusion matrices, conventions, the seed's table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scoregen.segmentation.metrics import (
    METRIC_NAMES,
    ROW_NAMES,
    SEED_RESULTS,
    ConfusionMatrix,
    SegmentationMeter,
    confusion_matrix,
    metrics_table,
    per_image_dice,
    segmentation_metrics,
)

# Image 1 (2 x 4), by hand:      target          pred
#                                1 1 0 0         1 0 1 0
#                                1 0 0 0         1 0 0 0
# TP = 2 (both left pixels), FN = 1 (top, 2nd), FP = 1 (top, 3rd), TN = 4.
TARGET_1 = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
PRED_1 = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.float32)
# Image 2: empty truth, empty prediction: TN = 8.
EMPTY = torch.zeros(2, 4)


def test_hand_computed_single_image():
    cm = confusion_matrix(PRED_1[None], TARGET_1[None])
    assert (cm.tp, cm.fp, cm.tn, cm.fn) == (2, 1, 4, 1)
    m = cm.metrics()
    expected = {
        "dice": 4 / 6,  # 2 TP / (2 TP + FP + FN)
        "jaccard": 2 / 4,  # TP / (TP + FP + FN)
        "accuracy": 6 / 8,
        "sensitivity": 2 / 3,
        "specificity": 4 / 5,
        "balanced_accuracy": (2 / 3 + 4 / 5) / 2,
        "precision": 2 / 3,
        "mcc": (2 * 4 - 1 * 1) / math.sqrt(3 * 3 * 5 * 5),  # = 7 / 15
    }
    assert list(m) == list(METRIC_NAMES)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


def test_hand_computed_two_images_micro_and_macro():
    pred = torch.stack([PRED_1, EMPTY])[:, None]  # (2, 1, 2, 4)
    target = torch.stack([TARGET_1, EMPTY])[:, None]
    m = segmentation_metrics(pred, target)
    # Micro: TP 2, FP 1, TN 12, FN 1.
    assert m["dice"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(14 / 16)
    assert m["specificity"] == pytest.approx(12 / 13)
    assert m["mcc"] == pytest.approx((2 * 12 - 1) / math.sqrt(3 * 3 * 13 * 13))  # 23 / 39
    # Macro: image 1 Dice 2/3, image 2 (empty / empty) counts as 1.
    assert m["dice_per_image"] == pytest.approx((2 / 3 + 1) / 2)
    assert per_image_dice(pred, target).tolist() == pytest.approx([2 / 3, 1.0])


def test_probabilities_are_thresholded_strictly():
    target = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    prob = torch.tensor([[0.2, 0.5, 0.51, 0.9]])
    cm = confusion_matrix(prob, target)  # 0.5 is not > 0.5: pred = 0 0 1 1
    assert (cm.tp, cm.fp, cm.tn, cm.fn) == (2, 0, 1, 1)
    cm = confusion_matrix(prob, target, threshold=0.3)  # pred = 0 1 1 1
    assert (cm.tp, cm.fp, cm.tn, cm.fn) == (3, 0, 1, 0)
    assert confusion_matrix(prob > 0.5, target.bool()) == confusion_matrix(prob, target)


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        # Both empty: perfect, every ratio 1.
        (0.0, 0.0, dict(dice=1, jaccard=1, accuracy=1, sensitivity=1, specificity=1, precision=1,
                        mcc=1)),
        # False alarm on an empty truth: sensitivity vacuously 1, MCC limiting value 0.
        (1.0, 0.0, dict(dice=0, jaccard=0, accuracy=0, sensitivity=1, specificity=0, precision=0,
                        mcc=0)),
        # Everything missed: precision vacuously 1 (nothing claimed), Dice 0.
        (0.0, 1.0, dict(dice=0, jaccard=0, accuracy=0, sensitivity=0, specificity=1, precision=1,
                        mcc=0)),
        # All foreground, found: specificity vacuously 1, MCC 1.
        (1.0, 1.0, dict(dice=1, jaccard=1, accuracy=1, sensitivity=1, specificity=1, precision=1,
                        mcc=1)),
    ],
    ids=["empty-empty", "false-alarm", "all-missed", "full-full"],
)
def test_degenerate_conventions_never_nan(pred, target, expected):
    m = segmentation_metrics(torch.full((2, 3, 3), pred), torch.full((2, 3, 3), target))
    assert all(math.isfinite(v) for v in m.values())
    for key, value in expected.items():
        assert m[key] == value, key
    # Dice = 2 P R / (P + R) holds whenever P + R > 0, also in degenerate cases.
    p, r = m["precision"], m["sensitivity"]
    if p + r > 0:
        assert m["dice"] == pytest.approx(2 * p * r / (p + r))


def test_meter_over_batches_equals_one_shot_and_brute_force():
    g = torch.Generator().manual_seed(1)
    prob = torch.rand(10, 1, 16, 16, generator=g)
    target = (torch.rand(10, 1, 16, 16, generator=g) < 0.3).float()
    meter = SegmentationMeter()
    for lo in range(0, 10, 3):  # uneven batches 3, 3, 3, 1
        meter.update(prob[lo : lo + 3], target[lo : lo + 3])
    assert meter.n_images == 10
    assert meter.compute() == pytest.approx(segmentation_metrics(prob, target))
    # Independent numpy computation of the micro counts and two metrics.
    p, t = prob.numpy() > 0.5, target.numpy() > 0.5
    tp, fp = np.sum(p & t), np.sum(p & ~t)
    tn, fn = np.sum(~p & ~t), np.sum(~p & t)
    assert meter.confusion == ConfusionMatrix(int(tp), int(fp), int(tn), int(fn))
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert meter.compute()["mcc"] == pytest.approx(mcc)
    dice = [2 * np.sum(a & b) / (a.sum() + b.sum()) for a, b in zip(p, t, strict=True)]
    assert meter.compute()["dice_per_image"] == pytest.approx(np.mean(dice))
    meter.reset()
    with pytest.raises(ValueError, match="before any update"):
        meter.compute()


def test_large_counts_do_not_overflow():
    small = ConfusionMatrix(tp=2, fp=1, tn=4, fn=1)
    big = ConfusionMatrix(tp=2 * 2**40, fp=2**40, tn=4 * 2**40, fn=2**40)  # products ~ 2**170
    assert big.metrics() == pytest.approx(small.metrics())
    assert small + small == ConfusionMatrix(4, 2, 8, 2)


def test_any_shape_with_batch_dimension():
    pred = torch.tensor([1.0, 0.0, 1.0])  # (B,) = three one-pixel images
    target = torch.tensor([1.0, 0.0, 0.0])
    assert per_image_dice(pred, target).tolist() == [1.0, 1.0, 0.0]
    vol = torch.zeros(2, 1, 3, 4, 5)
    assert segmentation_metrics(vol, vol)["dice"] == 1.0


@pytest.mark.parametrize(
    ("pred", "target", "error", "match"),
    [
        (torch.zeros(2, 4), torch.zeros(2, 5), ValueError, r"same shape \(B, \.\.\.\)"),
        (torch.full((2, 4), -1.0), torch.zeros(2, 4), ValueError, r"\(m \+ 1\) / 2"),
        (torch.zeros(2, 4), torch.full((2, 4), 255.0), ValueError, r"target must be binary"),
        (torch.tensor([[float("nan")]]), torch.zeros(1, 1), ValueError, "NaN"),
        (np.zeros((2, 4)), torch.zeros(2, 4), TypeError, "pred must be a torch.Tensor"),
        (torch.tensor(1.0), torch.tensor(1.0), ValueError, "batch dimension"),
    ],
    ids=["shape", "minus-one-scale", "uint8-scale", "nan", "numpy", "scalar"],
)
def test_bad_inputs(pred, target, error, match):
    with pytest.raises(error, match=match):
        segmentation_metrics(pred, target)


def test_bad_threshold_and_empty_matrix():
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        SegmentationMeter(threshold=1.5)
    with pytest.raises(ValueError, match="no pixel"):
        ConfusionMatrix().metrics()


# ---------------------------------------------------------------------- the seed's own table


def _seed_columns():
    return [(task, fusion) for task in SEED_RESULTS for fusion in SEED_RESULTS[task]]


@pytest.mark.parametrize(("task", "fusion"), _seed_columns(), ids=lambda x: str(x))
def test_seed_table_is_a_micro_confusion_matrix(task, fusion):
    """Rebuild one confusion matrix from the seed's (accuracy, sensitivity, specificity) and
    check that our formulas give its Dice, Jaccard, precision and MCC: the seed's numbers are
    micro metrics (within their 4-digit rounding)."""
    s = SEED_RESULTS[task][fusion]
    frac = (s["specificity"] - s["accuracy"]) / (s["specificity"] - s["sensitivity"])
    assert frac == pytest.approx(0.22 if task == "lung" else 0.127, abs=0.01)  # seed-notes.md
    n = 10**9
    tp = round(n * frac * s["sensitivity"])
    fn = round(n * frac) - tp
    tn = round(n * (1 - frac) * s["specificity"])
    fp = n - tp - fn - tn
    m = ConfusionMatrix(tp, fp, tn, fn).metrics()
    for key in ("dice", "jaccard", "precision", "mcc"):
        assert m[key] == pytest.approx(s[key], abs=3e-3), key
    # Identities the table must satisfy on its own.
    assert s["jaccard"] == pytest.approx(s["dice"] / (2 - s["dice"]), abs=1e-3)
    p, r = s["precision"], s["sensitivity"]
    assert s["dice"] == pytest.approx(2 * p * r / (p + r), abs=1e-3)


@pytest.mark.parametrize(("task", "fusion"), _seed_columns(), ids=lambda x: str(x))
def test_seed_balanced_accuracy_consistency(task, fusion):
    s = SEED_RESULTS[task][fusion]
    recomputed = (s["sensitivity"] + s["specificity"]) / 2
    if (task, fusion) == ("lung", "concat"):
        # The one inconsistency of the seed's table (seed-notes.md): 0.9793 vs 0.9690.
        assert recomputed == pytest.approx(0.9690, abs=1e-4)
        assert abs(s["balanced_accuracy"] - recomputed) > 0.01
    else:
        assert s["balanced_accuracy"] == pytest.approx(recomputed, abs=1e-4)


def test_metrics_table_rows_and_columns():
    m1 = segmentation_metrics(PRED_1[None], TARGET_1[None])
    m2 = dict(SEED_RESULTS["infection"]["add"])
    text = metrics_table({"add": m1, "concat": m2})
    lines = text.splitlines()
    assert lines[0] == "| Metric | add | concat |"
    assert lines[1] == "| --- | ---: | ---: |"
    names = [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]]
    assert names == [ROW_NAMES[k] for k in METRIC_NAMES] + ["Dice per image (macro)"]
    assert names[:8] == [
        "Dice", "Jaccard index", "Accuracy", "Sensitivity", "Specificity",
        "Balanced Accuracy", "Precision", "MCC",
    ]
    assert lines[2] == "| Dice | 0.6667 | 0.6755 |"
    assert lines[-1] == "| Dice per image (macro) | 0.6667 | – |"  # absent from the seed


def test_metrics_table_single_column_and_errors():
    text = metrics_table(SEED_RESULTS["lung"]["add"], digits=2)
    assert text.splitlines()[0] == "| Metric | value |"
    assert "| MCC | 0.94 |" in text
    assert "per image" not in text
    with pytest.raises(ValueError, match="non-empty"):
        metrics_table({})
    with pytest.raises(TypeError, match="map metric names to numbers"):
        metrics_table({"add": SEED_RESULTS["lung"]["add"], "x": 1.0})
