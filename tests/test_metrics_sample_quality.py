"""Sample-quality metrics on feature matrices against values known by hand or in closed form:
the Fréchet distance, KID (unbiased MMD^2, cubic kernel), improved precision / recall and
the nearest-Train memorisation check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scoregen.metrics import (
    frechet_distance,
    gaussian_frechet_distance,
    kernel_distance,
    knn_radii,
    memorisation,
    memorisation_from_distances,
    mmd2_unbiased,
    nearest_distances,
    precision_recall,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(n: int, mu: list[float], std: list[float], seed: int) -> torch.Tensor:
    z = torch.randn(n, len(mu), generator=gen(seed), dtype=torch.float64)
    return torch.tensor(mu, dtype=torch.float64) + z * torch.tensor(std, dtype=torch.float64)


# ------------------------------------------------------------------------- Fréchet distance
def test_frechet_closed_form_diagonal_covariances() -> None:
    """Diagonal S: tr(S1 + S2 - 2 (S1 S2)^{1/2}) = sum (s1_i - s2_i)^2 with s the stds."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 2.0, 1.5])
    want = (1 + 0 + 4) + ((1 - 3) ** 2 + 0 + (0.5 - 1.5) ** 2)   # 5 + 5
    got = gaussian_frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert got == pytest.approx(want, rel=1e-12) and want == 10.0


def test_frechet_full_covariance_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert gaussian_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n", [5_000, 100_000], ids=["n5000", "n100000"])
def test_empirical_frechet_converges_to_the_closed_form(n: int) -> None:
    """N(0, diag(1, 4)) vs N((1, 0), diag(4, 1)): closed form 1 + (1-2)^2 + (2-1)^2 = 3.
    The estimator's spread over seeds is about 5-9 / sqrt(n) (measured at n = 2e3..2e5), so
    30 / sqrt(n) is a 3-6 sigma band that narrows with n (0.42, then 0.095)."""
    x = gaussian(n, [0.0, 0.0], [1.0, 2.0], seed=1)
    y = gaussian(n, [1.0, 0.0], [2.0, 1.0], seed=2)
    assert frechet_distance(x, y) == pytest.approx(3.0, abs=30.0 / math.sqrt(n))


def test_frechet_of_a_set_with_itself_is_zero_and_a_shift_adds_its_square() -> None:
    x = gaussian(500, [0.0] * 8, [1.0] * 8, seed=3)
    shift = torch.arange(8, dtype=torch.float64) / 4
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift.square().sum()),
                                                           rel=1e-9)


def test_frechet_with_fewer_samples_than_dimensions_stays_finite() -> None:
    """Singular covariances (N < D): the eigen route gives a finite, non-negative value."""
    x, y = gaussian(10, [0.0] * 32, [1.0] * 32, 4), gaussian(10, [0.0] * 32, [1.0] * 32, 5)
    value = frechet_distance(x, y)
    assert math.isfinite(value) and value > 0


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.zeros(5, 3), torch.zeros(5, 4), "same feature dimension"),
        (torch.zeros(1, 3), torch.zeros(5, 3), "at least 2 samples"),
        (torch.zeros(5), torch.zeros(5, 1), r"shape \(N, D\)"),
        (torch.full((5, 2), float("nan")), torch.zeros(5, 2), "non-finite"),
        ([[0.0, 1.0]], torch.zeros(5, 2), "torch.Tensor or numpy array"),
    ],
    ids=["dims", "one-sample", "rank", "nan", "list"],
)
def test_frechet_rejects_bad_input(x, y, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        frechet_distance(x, y)


# ----------------------------------------------------------------------------------- KID
def test_kid_three_point_example_by_hand() -> None:
    """D = 1, k(a, b) = (ab + 1)^3, x = (0, 1, 2), y = (-1, 0, 1):
    sum_{i!=j} k(x_i, x_j) = 2 (1 + 1 + 27) = 58; sum_{i!=j} k(y_i, y_j) = 2 (1 + 0 + 1) = 4;
    sum_{i,j} k(x_i, y_j) = 3 + (0 + 1 + 8) + (-1 + 1 + 27) = 39;
    MMD^2_u = 58/6 + 4/6 - 2 * 39/9 = 5/3."""
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[-1.0], [0.0], [1.0]])
    assert mmd2_unbiased(x, y) == pytest.approx(5 / 3, rel=1e-12)
    kid = kernel_distance(x, y, subsets=4, subset_size=3, generator=gen())
    assert kid.mean == pytest.approx(5 / 3, rel=1e-12) and kid.std == pytest.approx(0, abs=1e-12)
    assert kid.subset_size == 3


def _poly_kernel_mean(a: float, b: float) -> float:
    """E (x y + 1)^3 for independent x ~ N(a, 1), y ~ N(b, 1), from the moments
    E x = a, E x^2 = a^2 + 1, E x^3 = a^3 + 3a."""
    m = [(a, a * a + 1, a**3 + 3 * a), (b, b * b + 1, b**3 + 3 * b)]
    return m[0][2] * m[1][2] + 3 * m[0][1] * m[1][1] + 3 * m[0][0] * m[1][0] + 1


@pytest.mark.parametrize(("a", "b", "truth"),
                         [(0.0, 0.0, 0.0), (0.0, 0.5, 3.578125), (0.0, 1.0, 22.0)],
                         ids=["same", "shift0.5", "shift1"])
def test_kid_is_unbiased_for_the_population_mmd(a: float, b: float, truth: float) -> None:
    """Population MMD^2 of N(a, 1) vs N(b, 1) under the cubic kernel (D = 1), in closed form
    (e.g. b = 1: E k(x, x') = 4, E k(y, y') = 32, E k(x, y) = 7, so 4 + 32 - 14 = 22); the
    mean of 400 independent MMD^2_u of 50 + 50 samples matches it within 4 standard errors
    (no bias), and that error is a few per cent of the value."""
    assert _poly_kernel_mean(a, a) + _poly_kernel_mean(b, b) - 2 * _poly_kernel_mean(a, b) \
        == pytest.approx(truth, abs=1e-12)
    g = gen(7)
    values = torch.tensor([
        mmd2_unbiased(torch.randn(50, 1, generator=g, dtype=torch.float64) + a,
                      torch.randn(50, 1, generator=g, dtype=torch.float64) + b)
        for _ in range(400)])
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - truth) < 4 * se
    assert se < 0.1 + 0.05 * truth


def test_kid_of_one_distribution_is_near_zero_and_of_a_shift_is_not() -> None:
    x, y = gaussian(1000, [0.0] * 16, [1.0] * 16, 10), gaussian(1000, [0.0] * 16, [1.0] * 16, 11)
    same = kernel_distance(x, y, subsets=20, subset_size=500, generator=gen())
    shifted = kernel_distance(x, y + 0.5, subsets=20, subset_size=500, generator=gen())
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * (abs(same.mean) + same.std)


@pytest.mark.parametrize(("kwargs", "match"),
                         [({"subsets": 0}, "subsets"), ({"subset_size": 1}, "subset_size")],
                         ids=["subsets", "subset-size"])
def test_kid_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kernel_distance(torch.zeros(4, 2), torch.zeros(4, 2), **kwargs)


# -------------------------------------------------------------------- precision / recall
def line(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


def test_knn_radii_by_hand() -> None:
    """Points 0..4 on a line, k = 3: radii 3, 2, 2, 2, 3 (the point itself excluded)."""
    assert knn_radii(line(0, 1, 2, 3, 4), 3).tolist() == [3, 2, 2, 2, 3]


@pytest.mark.parametrize(
    ("generated", "precision", "recall"),
    [
        # real manifold [-3, 7]; fakes 5, 6 inside, 10, 20 outside; the fakes' balls
        # (radii 15, 14, 10, 15) cover every real point
        ((5, 6, 10, 20), 0.5, 1.0),
        # a collapsed model: all fakes near 0 (radii 0.3, 0.2, 0.2, 0.3, manifold
        # [-0.3, 0.6]): precise, but only the real 0 is covered
        ((0, 0.1, 0.2, 0.3), 1.0, 0.2),
        ((0, 1, 2, 3, 4), 1.0, 1.0),
    ],
    ids=["spread", "collapsed", "identical"],
)
def test_precision_recall_on_a_line(generated: tuple, precision: float, recall: float) -> None:
    pr = precision_recall(line(0, 1, 2, 3, 4), line(*generated), k=3)
    assert (pr.precision, pr.recall, pr.k) == (pytest.approx(precision), pytest.approx(recall), 3)


def test_precision_recall_needs_more_than_k_samples() -> None:
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(line(0, 1, 2), line(0, 1, 2, 3), k=3)


# --------------------------------------------------------------------------- memorisation
def test_an_exact_copy_of_train_has_distance_zero() -> None:
    train = torch.randn(20, 1, 8, 8, generator=gen(1))
    val = torch.randn(30, 1, 8, 8, generator=gen(2))
    generated = torch.cat([train[:5], torch.randn(45, 1, 8, 8, generator=gen(3))])
    d = nearest_distances(generated, train)
    assert d[:5].tolist() == [0.0] * 5 and bool((d[5:] > 0).all())
    m = memorisation(generated, train, val)
    assert m.generated_min == 0.0 and m.generated_p5 == pytest.approx(0.0, abs=1e-12)
    assert m.copy_fraction >= 5 / 50 and m.n_generated == 50 and m.n_val == 30


def test_memorisation_by_hand_on_a_line() -> None:
    """Train {0, 10}; Val {1, 2, 3, 4} -> distances 1..4; generated {0, 5, 10.5} -> 0, 5, 0.5.
    Val 1st percentile (linear interpolation) 1.03: generated 0 and 0.5 are below it."""
    m = memorisation(line(0, 5, 10.5), line(0, 10), line(1, 2, 3, 4))
    assert m.val_median == pytest.approx(2.5) and m.val_p1 == pytest.approx(1.03)
    assert m.generated_median == pytest.approx(0.5) and m.copy_fraction == pytest.approx(2 / 3)


def test_memorisation_of_fresh_samples_is_near_one_percent() -> None:
    """Generated drawn like Val (no copying): about 1 % fall below the Val 1st percentile."""
    train = gaussian(500, [0.0] * 4, [1.0] * 4, 20)
    val, generated = gaussian(2000, [0.0] * 4, [1.0] * 4, 21), gaussian(2000, [0.0] * 4,
                                                                         [1.0] * 4, 22)
    m = memorisation(generated, train, val)
    assert 0.002 < m.copy_fraction < 0.025
    assert m.generated_median == pytest.approx(m.val_median, rel=0.05)


def test_nearest_distances_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="same dimension"):
        nearest_distances(torch.zeros(3, 4), torch.zeros(3, 5))


def test_memorisation_from_distances_equals_the_direct_route_and_checks_input() -> None:
    train, val, gen_ = line(0, 10), line(1, 2, 3, 4), line(0, 5, 10.5)
    direct = memorisation(gen_, train, val)
    split = memorisation_from_distances(nearest_distances(gen_, train),
                                        nearest_distances(val, train))
    assert split == direct
    with pytest.raises(ValueError, match=">= 0"):
        memorisation_from_distances(torch.tensor([-1.0]), torch.tensor([1.0]))
