"""ScoreModel: parametrisation conversions and classifier-free guidance."""

from __future__ import annotations

import pytest
import torch

import scoregen as sg

SDES = {
    "ddpm": sg.VPSDE.ddpm,
    "vp": sg.VPSDE,
    "subvp": sg.SubVPSDE,
    "ve": sg.VESDE,
}


def _oracle_net(sde, prediction, x0, eps):
    """A net that knows (x0, eps) and returns the exact target in its parametrisation."""

    def net(x, t, cond):
        alpha, sigma = sde.marginal_coeffs(t.to(torch.float64))
        alpha, sigma = alpha[:, None].to(x), sigma[:, None].to(x)
        v = (alpha * eps - sigma * x0) / (alpha**2 + sigma**2).sqrt()
        return {"eps": eps, "x0": x0, "score": -eps / sigma, "v": v}[prediction]

    return net


@pytest.mark.parametrize("prediction", sg.PREDICTIONS)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_every_parametrisation_recovers_eps_x0_score_and_v(sde_name, prediction):
    sde = SDES[sde_name]()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t))
    x_t = alpha * x0 + sigma * eps
    model = sg.ScoreModel(_oracle_net(sde, prediction, x0, eps), sde, prediction=prediction)
    eps_hat, x0_hat = model.denoise(x_t, t)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(model.score(x_t, t), -eps / sigma, rtol=1e-7, atol=1e-7)
    v = (alpha * eps - sigma * x0) / (alpha**2 + sigma**2).sqrt()
    torch.testing.assert_close(model.v(x_t, t), v, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(model.target(x0, eps, alpha, sigma), model(x_t, t))


def test_closed_form_mixture_model_gives_the_same_answer_in_every_parametrisation():
    sde = sg.VPSDE()
    gm = sg.ring_mixture(4, std=0.2)
    x = torch.randn(10, 2, dtype=torch.float64)
    t = torch.full((10,), 0.3, dtype=torch.float64)
    reference = gm.score(x, sde, t)
    for prediction in sg.PREDICTIONS:
        torch.testing.assert_close(gm.model(sde, prediction).score(x, t), reference)


def _cond_net(x, t, cond):
    # a toy conditional net: output depends on cond linearly plus a constant offset
    return x * 0 + cond.sum(dim=1, keepdim=True) + 1.0


@pytest.mark.parametrize("scale, expected", [(0.0, 1.0), (1.0, 7.0), (None, 7.0), (2.0, 13.0)])
def test_classifier_free_guidance_mixes_conditional_and_unconditional(scale, expected):
    model = sg.ScoreModel(_cond_net, sg.VPSDE(), prediction="eps", guidance_scale=scale)
    x = torch.zeros(4, 2)
    cond = torch.full((4, 3), 2.0)  # cond.sum = 6 -> conditional 7, unconditional 1
    out = model(x, torch.full((4,), 0.5), cond)
    torch.testing.assert_close(out, torch.full((4, 2), expected))


def test_cond_with_wrong_batch_is_rejected():
    model = sg.ScoreModel(_cond_net, sg.VPSDE())
    with pytest.raises(ValueError, match="batch size of x"):
        model.check_cond(torch.zeros(4, 2), torch.zeros(3, 2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="prediction must be one of"):
        sg.ScoreModel(_cond_net, sg.VPSDE(), prediction="noise")
    with pytest.raises(TypeError, match="callable"):
        sg.ScoreModel(3, sg.VPSDE())
    with pytest.raises(TypeError, match="SDE"):
        sg.ScoreModel(_cond_net, "vp")


def test_module_net_is_registered_and_device_dtype_follow_it():
    net = torch.nn.Linear(2, 2).double()
    model = sg.ScoreModel(lambda x, t, c: net(x), sg.VPSDE())
    assert model.dtype == torch.float32  # a plain function: no parameters
    model = sg.ScoreModel(_Wrapped(net), sg.VPSDE())
    assert model.dtype == torch.float64 and model.device.type == "cpu"
    assert len(list(model.parameters())) == 2


class _Wrapped(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, t, cond=None):
        return self.inner(x)


def test_denoise_calls_the_net_once_in_its_dtype_and_returns_the_state_dtype():
    sde = sg.VPSDE()
    calls = []
    inner = sg.GaussianMixture(means=[[0.5, -1.0]], stds=0.7).net(sde, "v")

    def net(x, t, cond):
        calls.append((x.dtype, t.dtype))
        return inner(x, t, cond)

    model = sg.ScoreModel(net, sde, prediction="v")
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5,), 0.4, dtype=torch.float32)
    eps_hat, x0_hat = model.denoise(x, t, net_dtype=torch.float32)
    assert calls == [(torch.float32, torch.float32)]
    assert eps_hat.dtype == x0_hat.dtype == torch.float64
    alpha, sigma = (c.item() for c in sde.alpha_sigma(torch.tensor([0.4], dtype=torch.float64)))
    torch.testing.assert_close(alpha * x0_hat + sigma * eps_hat, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.denoise(x, 0.4)[1], model.x0(x, t.double()))


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("noise", [0.0, 1.0, 0.5], ids=["pf-ode", "reverse-sde", "between"])
def test_reverse_drift_is_f_x_minus_half_one_plus_noise2_g2_score(sde_name, noise):
    sde = SDES[sde_name]()
    model = sg.GaussianMixture(means=[[1.0, 0.0], [-1.0, 2.0]], stds=0.4).model(sde)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 7, dtype=torch.float64)
    f, g2 = (c[:, None] for c in sde.f_g2(t))
    expected = f * x - 0.5 * (1 + noise**2) * g2 * model.score(x, t)
    drift, x0_hat = model.reverse_drift(x, t, noise=noise)
    torch.testing.assert_close(drift, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0_hat, model.x0(x, t))
    # the samplers pass the schedule precomputed: same numbers
    alpha, sigma = (c[:, None] for c in sde.alpha_sigma(t))
    again, _ = model.reverse_drift(x, t, noise=noise, coeffs=(alpha, sigma, f, g2))
    torch.testing.assert_close(again, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_the_v_target_has_unit_variance_at_every_noise_level(sde_name):
    """For unit-variance data var(v) = (alpha^2 + sigma^2) / n^2 = 1 under every SDE; the
    unnormalised alpha eps - sigma x0 would reach sigma_max^2 = 2500 under VE."""
    sde = SDES[sde_name]()
    model = sg.ScoreModel(lambda x, t, c: x, sde, prediction="v")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    eps = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    for t in (0.01, 0.5, 1.0):
        alpha, sigma = (c.reshape(1, 1) for c in sde.alpha_sigma(torch.tensor([t],
                                                                             dtype=torch.float64)))
        v = model.target(x0, eps, alpha, sigma)
        assert float(v.var()) == pytest.approx(1.0, rel=0.05)


def test_v_on_vp_is_salimans_and_hos_and_on_ve_the_identity_at_small_sigma():
    x = torch.randn(4, 3, dtype=torch.float64)
    vp = sg.ScoreModel(lambda x, t, c: torch.zeros_like(x), sg.VPSDE(), prediction="v")
    t = torch.full((4,), 0.3, dtype=torch.float64)
    alpha, sigma = (c[:, None] for c in vp.sde.alpha_sigma(t))
    eps, x0 = vp.denoise(x, t)
    torch.testing.assert_close(alpha * eps - sigma * x0, torch.zeros_like(x))  # n = 1
    ve = sg.ScoreModel(lambda x, t, c: torch.zeros_like(x), sg.VESDE(), prediction="v")
    # a net that outputs 0 denoises to x / (1 + sigma^2): the identity as sigma -> 0
    _, x0 = ve.denoise(x, torch.full((4,), 1e-5, dtype=torch.float64))
    torch.testing.assert_close(x0, x, rtol=1e-7, atol=0)
    _, x0 = ve.denoise(x, torch.full((4,), 1.0, dtype=torch.float64))
    assert float(x0.abs().max()) < 1e-3 * float(x.abs().max())
