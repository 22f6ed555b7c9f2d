"""Exact likelihoods through the probability-flow ODE against analytic densities."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen as sg

SDES = {"ddpm": sg.VPSDE.ddpm, "vp": sg.VPSDE, "subvp": sg.SubVPSDE, "ve": sg.VESDE}


@pytest.mark.parametrize("sde_name", list(SDES))
def test_log_prob_equals_the_analytic_gaussian_density_exact_trace(sde_name):
    # Data near the origin: VE's prior N(0, sigma_max^2) ignores the data mean, an error
    # of about |x_T . mu| / sigma_max^2 nats that is the method's, not the solver's.
    target = sg.GaussianMixture(means=[[0.1, -0.2, 0.05]], stds=[[0.4, 1.2, 0.8]])
    model = target.model(SDES[sde_name]())
    x = target.sample(16, torch.Generator().manual_seed(0))
    # DDPM's beta(t) is piecewise constant (1000 kinks): tight tolerances crawl there.
    tol = 1e-5 if sde_name == "ddpm" else 1e-7
    logp = sg.log_prob(model, x, exact=True, rtol=tol, atol=tol)
    truth = target.log_prob(x)
    rel = ((logp - truth) / truth.abs()).abs()
    assert rel.max() < 0.01, (logp, truth)
    bpd = sg.log_likelihood(model, x, exact=True, rtol=tol, atol=tol)
    torch.testing.assert_close(bpd, -logp / (3 * math.log(2)), rtol=1e-4, atol=1e-4)


def test_log_prob_of_a_mixture_exact_trace():
    target = sg.ring_mixture(4, radius=1.0, std=0.3)
    model = target.model(sg.VPSDE())
    x = target.sample(32, torch.Generator().manual_seed(1))
    logp = sg.log_prob(model, x, rtol=1e-7, atol=1e-7)
    truth = target.log_prob(x)
    assert ((logp - truth) / truth.abs()).abs().max() < 0.01


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased_in_higher_dimension(probe):
    """D = 48 > 32: Hutchinson's estimator; its mean over probes matches the density.

    A two-component mixture, so the Jacobian is not diagonal (for a diagonal Jacobian
    Rademacher probes are exact and the test could not tell an estimate from the trace).
    """
    dim = 48
    means = torch.stack([torch.linspace(-1, 1, dim), torch.linspace(1, -1, dim)]) * 0.3
    target = sg.GaussianMixture(means=means, stds=0.5)
    model = target.model(sg.VPSDE())
    x = target.sample(8, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    estimates = torch.stack(
        [sg.log_prob(model, x, probe=probe, generator=gen) for _ in range(8)]
    )
    truth = target.log_prob(x)
    std_err = estimates.std(0) / math.sqrt(len(estimates))
    assert (std_err > 0).all()  # it is an estimate: the probes differ
    assert ((estimates.mean(0) - truth).abs() < 4 * std_err + 1e-3 * truth.abs()).all()
    exact = sg.log_prob(model, x, exact=True)  # the exact trace, same ODE
    assert (((exact - truth) / truth.abs()).abs() < 0.01).all()


def test_num_bins_adds_the_dequantisation_offset():
    target = sg.GaussianMixture(means=[[0.0, 0.0]], stds=0.5)
    model = target.model(sg.VESDE())
    x = target.sample(4, torch.Generator().manual_seed(0))
    plain = sg.log_likelihood(model, x)
    binned = sg.log_likelihood(model, x, num_bins=256)
    torch.testing.assert_close(binned - plain, torch.full_like(plain, 7.0))


def test_dequantize_maps_8bit_data_uniformly_into_the_bins():
    k = torch.tensor([[0, 255], [128, 7]], dtype=torch.uint8)
    x = sg.dequantize(k, generator=torch.Generator().manual_seed(0))
    lo = 2 * k.float() / 256 - 1
    assert ((x >= lo) & (x < lo + 2 / 256)).all()
    with pytest.raises(ValueError, match="integers"):
        sg.dequantize(torch.tensor([[0.5, 1.0]]))


def test_dequantised_bits_per_dim_of_8bit_data_match_the_discrete_answer():
    """A known answer for the discrete likelihood: under a Gaussian density N(mu, s^2) on
    [-1, 1], the probability of 8-bit values k is a product of normal CDF differences over
    their bins [2k/256 - 1, 2(k+1)/256 - 1). The dequantised estimate
    E_u[-log2 p(x)] / D + 7 is an upper bound on -log2 P(k) / D and, for s much wider than a
    bin, equal to it up to ~Delta^2 / (24 s^2 ln 2) ~ 4e-5 bits."""
    mu, s = torch.tensor([0.1, -0.3]), 0.3
    target = sg.GaussianMixture(means=mu[None], stds=s)
    model = target.model(sg.VPSDE())
    k = torch.tensor([[140, 90], [128, 128], [200, 40]])
    normal = torch.distributions.Normal(mu.double(), s)
    lo = 2 * k.double() / 256 - 1
    p_bins = normal.cdf(lo + 2 / 256) - normal.cdf(lo)  # (3, 2)
    exact = -torch.log2(p_bins).sum(1) / 2  # bits/dim of the integers
    draws = 48
    x = sg.dequantize(k.repeat(draws, 1), generator=torch.Generator().manual_seed(0))
    bpd = sg.log_likelihood(model, x, num_bins=256, exact=True, rtol=1e-7, atol=1e-7,
                            dtype=torch.float64).view(draws, 3)
    estimate, se = bpd.mean(0), bpd.std(0) / math.sqrt(draws)
    assert ((estimate - exact).abs() < 4 * se + 2e-3).all(), (estimate, exact, se)


def test_nfe_is_reported():
    model = sg.GaussianMixture(means=[[0.0, 0.0]]).model(sg.VPSDE())
    nfe = sg.log_prob_with_info(model, torch.zeros(2, 2)).nfe
    assert 10 < nfe < 1000


@pytest.mark.parametrize(
    "kwargs, match",
    [({"probe": "sphere"}, "probe"), ({"method": "rk4"}, "adaptive"), ({"t_eps": 0.0}, "t_eps")],
)
def test_bad_options(kwargs, match):
    model = sg.GaussianMixture(means=[[0.0, 0.0]]).model(sg.VPSDE())
    with pytest.raises(ValueError, match=match):
        sg.log_prob(model, torch.zeros(2, 2), **kwargs)
    with pytest.raises(ValueError, match="non-finite"):
        sg.log_prob(model, torch.tensor([[0.0, float("inf")]]))
