"""Rank metrics (scoregen.metrics.ranking): AUROC and average precision of any real score.

The pitfall they exist for: torchmetrics' binary AUROC squashes scores outside [0, 1]
through a sigmoid, so bits/dim in the tens of thousands all become 1.0 and read AUROC 0.5.
"""

import math

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from scoregen.metrics import auroc, average_precision, uncertainty_error_auroc
from scoregen.metrics.ranking import order_preserving_unit_scores


def mann_whitney(scores, labels):
    pos, neg = scores[labels.bool()], scores[~labels.bool()]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def test_large_scores_keep_their_order():
    scores = torch.tensor([50_000.0, 60_000.0, 70_000.0, 80_000.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    assert float(binary_auroc(scores, labels)) == 0.5  # the squashing this module avoids
    assert auroc(scores, labels) == 1.0
    assert auroc(-scores, labels) == 0.0


def test_auroc_is_mann_whitney_and_invariant_to_monotone_maps():
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(300, generator=gen) < 0.3
    scores = torch.randn(300, generator=gen) + labels.float()
    scores = (scores * 4).round() / 4  # ties
    expected = mann_whitney(scores, labels)
    assert 0.6 < expected < 0.9
    for mapped in (scores, 20 * scores + 1e5, scores.exp() * 1e3, scores.float() * 50):
        assert auroc(mapped, labels) == pytest.approx(expected, abs=1e-6)  # float32 inside


def test_average_precision_by_hand_and_at_any_scale():
    labels = torch.tensor([1, 0, 1, 0])
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0])
    # thresholds 4, 2 find the positives at precision 1 and 2/3
    for s in (scores, scores * 1e4):
        assert average_precision(s, labels) == pytest.approx((1 + 2 / 3) / 2)


def test_unit_scores_keep_order_and_ties():
    s = torch.tensor([3.0, -1e6, 3.0, 1e9])
    u = order_preserving_unit_scores(s)
    assert u.tolist() == [0.5, 0.0, 0.5, 1.0]


def test_calibration_auroc_accepts_uncertainties_beyond_one():
    u = torch.tensor([20.0, 30.0, 40.0, 50.0])  # float32: sigmoid of all four is 1.0
    errors = torch.tensor([False, False, True, True])
    assert uncertainty_error_auroc(u, errors) == 1.0


def test_one_class_and_bad_input():
    assert math.isnan(auroc(torch.rand(5), torch.zeros(5)))
    assert math.isnan(average_precision(torch.rand(5), torch.zeros(5)))
    with pytest.raises(ValueError, match="non-finite"):
        auroc(torch.tensor([0.1, math.nan]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        auroc(torch.rand(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="0/1"):
        auroc(torch.rand(2), torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="float"):
        auroc(torch.tensor([1, 2]), torch.tensor([0, 1]))
