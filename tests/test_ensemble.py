"""Fusing sampled masks: mean, majority vote, iterative STAPLE; the uncertainty map."""

from __future__ import annotations

import pytest
import torch

from scoregen.segmentation import ensemble
from scoregen.segmentation.ensemble import fuse, staple, to_unit_interval, uncertainty
from scoregen.segmentation.metrics import confusion_matrix

# K = 3 samples of one image with 4 pixels (K, B, N).
SAMPLES = torch.tensor(
    [
        [[1.0, 0.0, 0.6, 0.2]],
        [[1.0, 1.0, 0.6, 0.2]],
        [[0.0, 0.0, 0.2, 0.9]],
    ]
)


def test_mean_hand_example():
    # Means: 2/3, 1/3, 0.4667, 0.4333 -> only the first exceeds 0.5.
    assert fuse(SAMPLES, "mean").tolist() == [[1.0, 0.0, 0.0, 0.0]]
    # Threshold 0.4: 2/3, 0.4667 and 0.4333 pass.
    assert fuse(SAMPLES, "mean", threshold=0.4).tolist() == [[1.0, 0.0, 1.0, 1.0]]


def test_vote_hand_example_differs_from_mean():
    # Binarised at 0.5: [1 0 1 0], [1 1 1 0], [0 0 0 1] -> votes 2 1 2 1 of 3.
    assert fuse(SAMPLES, "vote").tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_vote_tie_goes_to_background_and_matches_mean_on_binary():
    tie = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 1.0, 0.0]]])  # K = 2: votes 1, 2, 0
    assert fuse(tie, "vote").tolist() == [[0.0, 1.0, 0.0]]
    assert fuse(tie, "mean").tolist() == [[0.0, 1.0, 0.0]]  # mean 0.5 is not > 0.5
    g = torch.Generator().manual_seed(0)
    binary = (torch.rand(5, 3, 8, 8, generator=g) < 0.5).float()
    assert torch.equal(fuse(binary, "vote"), fuse(binary, "mean"))


def test_output_shape_dtype_and_bool_input():
    x = torch.rand(4, 2, 1, 8, 8, dtype=torch.float64)
    for method in ("mean", "vote", "staple"):
        out = fuse(x, method)
        assert out.shape == (2, 1, 8, 8) and out.dtype == torch.float64
        assert set(out.unique().tolist()) <= {0.0, 1.0}
    out = fuse(x > 0.5, "vote")
    assert out.dtype == torch.float32


def _truth(b: int = 4, size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = [
        ((xx - 20 - 5 * i) ** 2 + (yy - 30) ** 2 < (10 + 3 * i) ** 2)
        | ((xx - 45) ** 2 / 4 + (yy - 30 - i) ** 2 < 100)
        for i in range(b)
    ]
    return torch.stack(masks).float()  # (B, H, W), ~26% foreground


def _raters(truth: torch.Tensor, params: list[tuple[float, float]], seed: int = 0) -> torch.Tensor:
    """(K, B, H, W) decisions with P(D=1 | T=1) = sens and P(D=0 | T=0) = spec per rater."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for sens, spec in params:
        u = torch.rand(truth.shape, generator=g)
        out.append(torch.where(truth > 0, u < sens, u > spec).float())
    return torch.stack(out)


def test_staple_recovers_known_sensitivity_and_specificity():
    truth = _truth()
    params = [(0.98, 0.98), (0.8, 0.85), (0.75, 0.8), (0.7, 0.8), (0.6, 0.7)]
    result = staple(_raters(truth, params))
    assert result.converged
    assert result.sensitivity.shape == (5, 4) and result.specificity.shape == (5, 4)
    sens, spec = result.sensitivity.mean(1), result.specificity.mean(1)
    assert sens.tolist() == pytest.approx([p for p, _ in params], abs=0.03)
    assert spec.tolist() == pytest.approx([q for _, q in params], abs=0.03)
    assert result.prior.tolist() == pytest.approx(truth.flatten(1).mean(1).tolist(), abs=0.03)
    # The posterior is a probability map and the mask its > 0.5 region.
    assert result.probability.shape == truth.shape
    assert torch.equal(result.mask, (result.probability > 0.5).float())


@pytest.mark.parametrize("prior", ["em", "fixed"])
def test_staple_beats_majority_vote_with_one_bad_rater(prior):
    truth = _truth()
    samples = _raters(truth, [(0.9, 0.95), (0.85, 0.97), (0.2, 0.6)])  # third rater is bad
    dice = {
        method: confusion_matrix(fuse(samples, method, **opts), truth).metrics()["dice"]
        for method, opts in (("vote", {}), ("staple", {"prior": prior}))
    }
    assert dice["staple"] > dice["vote"] + 0.02, dice
    result = staple(samples, prior=prior)
    # It learns that rater 3 is worse than chance (sensitivity < 1 - specificity).
    assert (result.sensitivity[2] < 1 - result.specificity[2]).all()


def test_staple_is_not_a_single_weighted_mean():
    """With 4 raters of which one is adversarial, iterating matters: one pass from the
    initial (equal) rates is the plain vote-like answer; converged STAPLE is better."""
    truth = _truth()
    samples = _raters(truth, [(0.9, 0.9), (0.9, 0.9), (0.9, 0.9), (0.3, 0.95)], seed=3)
    one_pass = staple(samples, max_iter=1)
    full = staple(samples)
    assert full.iterations > 5 and full.converged
    d1 = confusion_matrix(one_pass.mask, truth).metrics()["dice"]
    d2 = confusion_matrix(full.mask, truth).metrics()["dice"]
    assert d2 > d1 + 0.02


@pytest.mark.parametrize("prior", ["em", "fixed", 0.3])
def test_staple_pattern_grouping_is_exact(monkeypatch, prior):
    """EM on the distinct decision patterns (weighted by counts) equals EM on every pixel."""
    samples = _raters(_truth(b=1), [(0.9, 0.95), (0.85, 0.97), (0.2, 0.6)], seed=5)
    grouped = staple(samples, prior=prior)

    def per_pixel(d):
        return d.double(), torch.ones(d.shape[1:], dtype=torch.float64), None

    monkeypatch.setattr(ensemble, "_decision_patterns", per_pixel)
    pixels = staple(samples, prior=prior)
    assert grouped.iterations == pixels.iterations
    torch.testing.assert_close(grouped.probability, pixels.probability, atol=1e-10, rtol=0)
    torch.testing.assert_close(grouped.sensitivity, pixels.sensitivity, atol=1e-10, rtol=0)
    torch.testing.assert_close(grouped.specificity, pixels.specificity, atol=1e-10, rtol=0)


def test_staple_many_raters_on_few_pixels():
    """2^K >= N pixels: EM runs on the pixels themselves; same answer as a majority here."""
    truth = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]])  # (B=1, 2, 4)
    samples = truth[None].repeat(5, 1, 1, 1)
    samples[0, 0, 0, 0] = 0.0  # one dissenting vote
    result = staple(samples)
    assert torch.equal(result.mask, truth)
    assert result.probability.shape == (1, 2, 4)


def test_staple_degenerate_inputs():
    same = _truth(b=2)[None].repeat(3, 1, 1, 1)  # three identical raters
    result = staple(same)
    assert torch.equal(result.mask, same[0])
    empty = torch.zeros(3, 2, 8, 8)
    result = staple(empty)
    assert result.mask.sum() == 0
    assert torch.isfinite(result.probability).all()
    assert torch.isfinite(result.sensitivity).all() and torch.isfinite(result.specificity).all()
    single = _truth(b=1)[None]  # K = 1
    assert torch.equal(fuse(single, "staple"), single[0])


def test_uncertainty_is_population_variance():
    x = torch.tensor([[[1.0, 1.0, 0.2]], [[1.0, 0.0, 0.4]], [[1.0, 0.0, 0.6]], [[1.0, 1.0, 0.8]]])
    # Pixel 0: all agree -> 0; pixel 1: half -> 0.25; pixel 2: var of .2 .4 .6 .8 = 0.05.
    assert uncertainty(x)[0].tolist() == pytest.approx([0.0, 0.25, 0.05])
    assert uncertainty(x[:1]).abs().sum() == 0  # one sample: no spread
    assert uncertainty(x > 0.5).dtype == torch.float32


def test_to_unit_interval():
    x = torch.tensor([-1.0, 0.0, 1.0, 1.2, -1.3])
    assert to_unit_interval(x).tolist() == [0.0, 0.5, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: fuse(SAMPLES, "median"), ValueError, "unknown fusion method 'median'"),
        (lambda: fuse(SAMPLES * 2 - 1, "mean"), ValueError, "to_unit_interval"),
        (lambda: fuse(torch.zeros(4), "mean"), ValueError, r"shape \(K, B, \.\.\.\)"),
        (lambda: fuse(SAMPLES.numpy(), "vote"), TypeError, "torch.Tensor"),
        (lambda: fuse(SAMPLES, "vote", threshold=1.0), ValueError, r"threshold .* \[0, 1\)"),
        (lambda: fuse(SAMPLES, "mean", prior="em"), TypeError, "only apply to method='staple'"),
        (lambda: staple(SAMPLES, prior="global"), ValueError, "prior must be 'em', 'fixed'"),
        (lambda: staple(SAMPLES, init_sensitivity=0.4), ValueError, r"init_sensitivity .*0\.5"),
        (lambda: uncertainty(torch.full((2, 1, 3), float("nan"))), ValueError, "NaN"),
    ],
    ids=["method", "scale", "ndim", "numpy", "threshold", "option", "prior", "init", "nan"],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
