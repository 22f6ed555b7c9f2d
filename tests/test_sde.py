"""SDEs: marginals against simulation and the discrete product; (f, g) against (alpha, sigma)."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen as sg
from scoregen.sde import SDE

SDES = {
    "ddpm": lambda: sg.VPSDE.ddpm(num_steps=1000, beta_start=1e-4, beta_end=0.02),
    "vp": lambda: sg.VPSDE(),
    "subvp": lambda: sg.SubVPSDE(),
    "ve": lambda: sg.VESDE(sigma_min=0.01, sigma_max=50.0),
}


@pytest.fixture(params=list(SDES), ids=list(SDES))
def sde(request) -> SDE:
    return SDES[request.param]()


def test_ddpm_schedule_equals_the_discrete_product_exactly():
    sde = sg.VPSDE.ddpm(num_steps=1000, beta_start=1e-4, beta_end=0.02)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    i = torch.arange(1, 1001, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(i / 1000)
    torch.testing.assert_close(alpha**2, alphas_cumprod, rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma**2, 1 - alphas_cumprod, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(sde.alphas_cumprod, alphas_cumprod, rtol=1e-12, atol=0)
    a0, s0 = sde.marginal_coeffs(torch.zeros(1, dtype=torch.float64))
    assert a0.item() == 1.0 and s0.item() == 0.0


def test_ddpm_continuous_limit_matches_vp_defaults():
    """beta_i * N -> beta(t) = 0.1 + 19.9 t: the DDPM schedule is close to VPSDE()."""
    t = torch.linspace(0.05, 1, 20, dtype=torch.float64)
    a_d, _ = sg.VPSDE.ddpm().marginal_coeffs(t)
    a_c, _ = sg.VPSDE().marginal_coeffs(t)
    torch.testing.assert_close(a_d, a_c, rtol=2e-2, atol=1e-4)
    assert not torch.allclose(a_d, a_c, rtol=1e-6, atol=0)  # close, not identical


def test_subvp_sigma_is_one_minus_alpha_squared_not_its_root():
    sde = sg.SubVPSDE()
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(t)
    torch.testing.assert_close(sigma, 1 - alpha**2, rtol=1e-12, atol=1e-14)
    assert (sigma < (1 - alpha**2).sqrt()).all()  # the std is below VP's at every t


def test_variance_preserving_identity():
    alpha, sigma = sg.VPSDE().marginal_coeffs(torch.linspace(0, 1, 11, dtype=torch.float64))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(11, dtype=torch.float64))


def test_ve_marginal_is_the_exact_variance_from_clean_data():
    sde = sg.VESDE(sigma_min=0.01, sigma_max=50.0)
    alpha, sigma = sde.marginal_coeffs(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert alpha.tolist() == [1.0, 1.0]
    assert sigma[0].item() == 0.0
    assert sigma[1].item() == pytest.approx(50.0, rel=1e-6)
    assert sde.prior_std == 50.0


def test_drift_and_diffusion_are_consistent_with_the_marginals(sde):
    """f = d log(alpha)/dt and g^2 = d(sigma^2)/dt - 2 f sigma^2 (central differences)."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    if sde.num_steps:  # piecewise-constant beta: stay inside one step of the grid
        t = (torch.arange(50, 950, 50, dtype=torch.float64) + 0.5) / 1000
    h = 1e-6
    a_p, s_p = sde.marginal_coeffs(t + h)
    a_m, s_m = sde.marginal_coeffs(t - h)
    alpha, sigma = sde.marginal_coeffs(t)
    f, g = sde.drift_diffusion(t)
    torch.testing.assert_close(f, (a_p.log() - a_m.log()) / (2 * h), rtol=1e-5, atol=1e-7)
    g2_fd = (s_p**2 - s_m**2) / (2 * h) - 2 * f * sigma**2
    torch.testing.assert_close(g**2, g2_fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t_end", [0.1, 0.5, 1.0])
def test_marginals_match_monte_carlo_simulation_of_the_forward_sde(sde, t_end):
    """Simulate dx = f x dt + g dw from x_0 = 1.5 with fine Euler–Maruyama steps."""
    gen = torch.Generator().manual_seed(0)
    n, steps = 20000, 2000
    x0 = 1.5
    x = torch.full((n,), x0, dtype=torch.float64)
    dt = t_end / steps
    for k in range(steps):
        t = torch.full((1,), (k + 0.5) * dt, dtype=torch.float64)
        f, g = sde.drift_diffusion(t)
        x = x + f * x * dt + g * math.sqrt(dt) * torch.randn(n, generator=gen, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(torch.tensor([t_end], dtype=torch.float64))
    se = sigma.item() / math.sqrt(n)
    assert abs(x.mean().item() - alpha.item() * x0) < 5 * se + 1e-3 * abs(alpha.item() * x0)
    assert x.std().item() == pytest.approx(sigma.item(), rel=0.03)


def test_log_snr_is_log_alpha_over_sigma_and_decreasing(sde):
    t = torch.linspace(sde.t_eps, sde.T, 200, dtype=torch.float64)
    alpha, sigma = sde.alpha_sigma(t)
    lam = sde.log_snr(t)
    torch.testing.assert_close(lam, (alpha / sigma).log(), rtol=1e-12, atol=1e-12)
    assert (lam[1:] < lam[:-1]).all()
    assert sde.log_snr(torch.zeros(1, dtype=torch.float64)).item() == math.inf


def test_t_of_log_snr_inverts_log_snr_exactly_across_the_interval(sde):
    """t -> lambda -> t in float64, from t_eps to T (on the DDPM table also off its grid)."""
    t = torch.cat([torch.linspace(sde.t_eps, sde.T, 4001, dtype=torch.float64),
                   torch.logspace(math.log10(sde.t_eps), 0, 500, dtype=torch.float64)])
    back = sde.t_of_log_snr(sde.log_snr(t))
    torch.testing.assert_close(back, t, rtol=1e-12, atol=1e-14)
    assert back.dtype == torch.float64 and back.shape == t.shape


def test_closed_form_inverse_agrees_with_the_generic_bisection(sde):
    lam = sde.log_snr(torch.linspace(sde.t_eps, sde.T, 300, dtype=torch.float64))
    assert type(sde).t_of_log_snr is not SDE.t_of_log_snr  # every SDE here has a closed form
    torch.testing.assert_close(sde.t_of_log_snr(lam), SDE.t_of_log_snr(sde, lam),
                               rtol=1e-12, atol=1e-14)


def test_t_of_log_snr_ends_and_clamping(sde):
    lam = torch.tensor([math.inf, sde.log_snr(torch.tensor([sde.T], dtype=torch.float64)).item()
                        - 5.0], dtype=torch.float64)
    torch.testing.assert_close(sde.t_of_log_snr(lam), torch.tensor([0.0, sde.T],
                                                                  dtype=torch.float64))
    assert sde.t_of_log_snr(lam.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="nan"):
        sde.t_of_log_snr(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        sde.t_of_log_snr(torch.tensor([1]))


def test_f_g2_is_the_square_of_drift_diffusion_and_check_false_skips_only_the_range(sde):
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    f, g2 = sde.f_g2(t)
    f_, g = sde.drift_diffusion(t)
    torch.testing.assert_close(f, f_)
    torch.testing.assert_close(g2, g**2)
    torch.testing.assert_close(sde.alpha_sigma(t), sde.marginal_coeffs(t))
    torch.testing.assert_close(sde.alpha_sigma(t, check=False), sde.alpha_sigma(t))
    with pytest.raises(ValueError, match="lie in"):
        sde.alpha_sigma(torch.tensor([1.5]))
    with pytest.raises(TypeError, match="floating-point"):
        sde.alpha_sigma(torch.tensor([1]), check=False)


def test_prior_logp_matches_torch_distributions(sde):
    z = sde.prior_sample((5, 3, 2), generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)
    assert z.std().item() == pytest.approx(sde.prior_std, rel=0.5)


def test_to_dict_round_trip(sde):
    rebuilt = SDE.from_dict(sde.to_dict())
    assert type(rebuilt) is type(sde) and rebuilt == sde
    t = torch.rand(7, dtype=torch.float64)
    torch.testing.assert_close(rebuilt.marginal_coeffs(t), sde.marginal_coeffs(t))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([1.5]), r"must lie in \[0, T=1.0\]"),
        (torch.tensor([-0.1]), r"must lie in \[0, T=1.0\]"),
        (torch.tensor([float("nan")]), "finite"),
        (torch.tensor([1]), "floating-point"),
    ],
    ids=["above-T", "negative", "nan", "integer"],
)
def test_times_outside_the_interval_are_rejected(sde, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sde.marginal_coeffs(bad)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="beta_max"):
        sg.VPSDE(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="sigma_max"):
        sg.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="num_steps"):
        sg.VPSDE.ddpm(num_steps=0)
    with pytest.raises(ValueError, match="unknown SDE type"):
        SDE.from_dict({"type": "NoSuchSDE"})
