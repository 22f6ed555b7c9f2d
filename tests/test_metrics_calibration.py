"""Calibration and uncertainty metrics against values worked out by hand (and torchmetrics)."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error

from scoregen.metrics.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    near_mask,
    pixel_nll,
    reliability_curve,
    uncertainty_error_auprc,
    uncertainty_error_auroc,
    uncertainty_error_overlap,
)

F64 = torch.float64
# Six pixels in three occupied bins of 15: 0.05 -> bin 0, 0.55 -> bin 8, 0.95 -> bin 14.
PROB = torch.tensor([0.05, 0.05, 0.55, 0.55, 0.95, 0.95], dtype=F64)
TRUTH = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=F64)


def test_ece_by_hand():
    # bins: |0.5 - 0.05| = 0.45, |0.5 - 0.55| = 0.05, |1 - 0.95| = 0.05, each 2/6 of pixels
    assert expected_calibration_error(PROB, TRUTH) == pytest.approx((0.45 + 0.05 + 0.05) / 3)


def test_ece_bins_are_used():
    """With one bin the gaps cancel: |mean y - mean p| = |4/6 - 3.1/6|."""
    assert expected_calibration_error(PROB, TRUTH, n_bins=1) == pytest.approx(abs(4 - 3.1) / 6)


def test_ece_matches_torchmetrics_on_continuous_probabilities():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(20_000, generator=gen, dtype=F64)
    y = (torch.rand(20_000, generator=gen, dtype=F64) < p**1.5).long()
    want = float(binary_calibration_error(p, y, n_bins=15, norm="l1"))
    assert expected_calibration_error(p, y) == pytest.approx(want, rel=1e-9)


def test_perfectly_calibrated_probabilities_have_small_ece():
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(200_000, generator=gen, dtype=F64)
    y = (torch.rand(200_000, generator=gen, dtype=F64) < p).to(F64)
    assert expected_calibration_error(p, y) < 0.005
    # and a miscalibrated copy (p^2 reported as p) is far worse
    assert expected_calibration_error(p.sqrt(), y) > 0.1


def test_reliability_curve_puts_one_in_the_last_bin_and_counts_every_pixel():
    prob = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    truth = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    curve = reliability_curve(prob, truth, n_bins=4)
    assert curve.count.tolist() == [1, 1, 1, 3]  # [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert curve.confidence[3].item() == pytest.approx((0.75 + 1 + 1) / 3)
    assert curve.frequency[3].item() == pytest.approx(2 / 3)
    # gaps: 0, .25, .5, |2/3 - 2.75/3| = 0.25 (3 pixels)
    assert curve.ece == pytest.approx((0 + 0.25 + 0.5 + 3 * 0.25) / 6)
    empty = reliability_curve(torch.tensor([0.1, 0.1]), torch.tensor([0.0, 1.0]), n_bins=4)
    assert math.isnan(empty.confidence[2].item()) and empty.count[2].item() == 0


def test_brier_and_nll_by_hand():
    want_brier = (0.05**2 + 0.95**2 + 0.55**2 + 0.45**2 + 2 * 0.05**2) / 6
    assert brier_score(PROB, TRUTH) == pytest.approx(want_brier)
    want_nll = -(math.log(0.95) + math.log(0.05) + math.log(0.45) + math.log(0.55)
                 + 2 * math.log(0.95)) / 6
    assert pixel_nll(PROB, TRUTH) == pytest.approx(want_nll)


def test_nll_of_a_confident_mistake_is_finite():
    """A mean of K samples is often exactly 0 or 1: clamped to [1e-6, 1 - 1e-6]."""
    got = pixel_nll(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    assert got == pytest.approx(-math.log(1e-6) / 2, rel=1e-6)


def test_region_restricts_every_metric():
    region = torch.tensor([True, True, False, False, False, False])
    assert expected_calibration_error(PROB, TRUTH, region=region) == pytest.approx(0.45)
    assert brier_score(PROB, TRUTH, region=region) == pytest.approx((0.05**2 + 0.95**2) / 2)


def test_uncertainty_auroc_and_auprc_by_hand():
    u = torch.tensor([0.9, 0.8, 0.7, 0.1])
    errors = torch.tensor([True, False, True, False])
    # positive/negative pairs ranked right: (0.9 > 0.8), (0.9 > 0.1), (0.7 > 0.1); wrong: 0.7 < 0.8
    assert uncertainty_error_auroc(u, errors) == pytest.approx(3 / 4)
    # precision at each error: 1/1 and 2/3 -> average precision 5/6
    assert uncertainty_error_auprc(u, errors) == pytest.approx((1 + 2 / 3) / 2)
    assert uncertainty_error_auroc(-u, errors) == pytest.approx(1 / 4)


def test_auroc_with_ties_counts_half():
    u = torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert uncertainty_error_auroc(u, torch.tensor([True, False, True, False])) == 0.5


def test_auroc_is_nan_without_both_classes():
    assert math.isnan(uncertainty_error_auroc(torch.rand(4), torch.zeros(4, dtype=torch.bool)))
    assert math.isnan(uncertainty_error_auprc(torch.rand(4), torch.zeros(4, dtype=torch.bool)))


def test_overlap_is_the_share_of_errors_in_the_top_k():
    u = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.0])
    errors = torch.tensor([True, False, False, True, False])  # k = 2: top-2 = {0, 1}
    assert uncertainty_error_overlap(u, errors) == pytest.approx(0.5)
    assert uncertainty_error_overlap(u, torch.zeros(5, dtype=torch.bool)) == 1.0
    assert uncertainty_error_overlap(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0


def test_near_mask_dilates_by_the_radius():
    mask = torch.zeros(1, 1, 7, 7)
    mask[0, 0, 3, 3] = 1.0
    near = near_mask(mask, 2)
    assert near.dtype == torch.bool and near.shape == mask.shape
    assert int(near.sum()) == 25 and bool(near[0, 0, 1:6, 1:6].all())
    assert int(near_mask(mask[:, 0], 0).sum()) == 1  # (B, H, W) works too


def test_temperature_recovers_a_known_scaling():
    """Labels drawn from sigmoid(z); logits reported as 3 z are fixed by T = 3."""
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(100_000, generator=gen, dtype=F64) * 2
    y = (torch.rand(100_000, generator=gen, dtype=F64) < torch.sigmoid(z)).to(F64)
    assert fit_temperature(3 * z, y) == pytest.approx(3.0, rel=0.03)


def test_calibration_metrics_uses_the_entropy_by_default():
    got = calibration_metrics(PROB, TRUTH)
    # errors at 0.5: pixels 1 (p .05, y 1) and 2 (p .55, y 0); entropy highest at .55, .55
    assert got["ece"] == pytest.approx(expected_calibration_error(PROB, TRUTH))
    assert got["uncertainty_overlap"] == pytest.approx(0.5)
    assert set(got) == {"ece", "brier", "nll", "uncertainty_auroc", "uncertainty_auprc",
                        "uncertainty_overlap"}


@pytest.mark.parametrize(
    ("prob", "target", "match"),
    [
        (torch.tensor([1.5]), torch.tensor([1.0]), r"prob must be probabilities in \[0, 1\]"),
        (torch.tensor([0.5]), torch.tensor([-1.0]), r"target must be labels in \[0, 1\]"),
        (torch.tensor([0.5, 0.5]), torch.tensor([1.0]), "one shape"),
        (torch.tensor([]), torch.tensor([]), "no pixels"),
    ],
    ids=["prob-out-of-range", "mask-in-minus-one-one", "shape-mismatch", "empty"],
)
def test_bad_input_is_refused_with_a_clear_message(prob, target, match):
    with pytest.raises(ValueError, match=match):
        brier_score(prob, target)


def test_bad_bins_and_regions_are_refused():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(PROB, TRUTH, n_bins=0)
    with pytest.raises(TypeError, match="bool"):
        brier_score(PROB, TRUTH, region=torch.ones(6))
    with pytest.raises(ValueError, match="non-finite"):
        uncertainty_error_auroc(torch.tensor([math.nan, 0.0]), torch.tensor([True, False]))
