"""Sliced Wasserstein-2: closed forms and agreement with the plain (N, P) formula."""

from __future__ import annotations

import math

import pytest
import torch

from scoregen.metrics.distances import _directions, sliced_wasserstein, sliced_wasserstein_floor


def test_matches_the_reference_formula():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 3, generator=gen), torch.randn(500, 3, generator=gen) * 1.5
    got = sliced_wasserstein(x, y, num_projections=64, generator=torch.Generator().manual_seed(1))
    theta = _directions(3, 64, torch.Generator().manual_seed(1))
    px = (x.double() @ theta.T).sort(0).values  # (N, P) sorted per projection
    py = (y.double() @ theta.T).sort(0).values
    assert got == pytest.approx(float(((px - py) ** 2).mean().sqrt()), rel=1e-12)


def test_a_shift_by_c_is_the_rms_of_its_projections():
    """W2 between a cloud and its translate by c is |theta . c| per direction, exactly."""
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=torch.float64)
    got = sliced_wasserstein(x, x + c, num_projections=128,
                             generator=torch.Generator().manual_seed(2))
    theta = _directions(4, 128, torch.Generator().manual_seed(2))
    assert got == pytest.approx(float((theta @ c).pow(2).mean().sqrt()), rel=1e-10)
    assert got == pytest.approx(float(c.norm()) / math.sqrt(4), rel=0.2)  # E (theta.c)^2 = |c|^2/D


def test_identical_clouds_floor_and_errors():
    x = torch.randn(100, 2)
    assert sliced_wasserstein(x, x[torch.randperm(100)]) < 1e-12  # order does not matter
    floor = sliced_wasserstein_floor(lambda n, g: torch.randn(n, 2, generator=g), 400, repeats=2)
    assert 0 < floor < 0.2
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(x, x[:50])
    bad = x.clone()
    bad[0, 0] = float("inf")
    assert sliced_wasserstein(x, bad) == math.inf
