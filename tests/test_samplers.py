"""Every sampler x every SDE, driven by exact scores of Gaussian and mixture data.

The score of Gaussian-mixture data is known in closed form at every t
(:mod:`scoregen.analytic`), so each sampler must reproduce the data distribution up to
its discretisation error and the sampling noise of N samples.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoregen as sg
from scoregen.samplers import SAMPLERS, _parameters, ddim, ode

SDES = {
    "ddpm": sg.VPSDE.ddpm,
    "vp": sg.VPSDE,
    "subvp": sg.SubVPSDE,
    "ve": sg.VESDE,
}

#: sampler cases at a budget where the discretisation error is below the test tolerance.
CASES = {
    "ancestral": ("ancestral", {"steps": 500}),
    "ancestral-large": ("ancestral", {"steps": 500, "variance": "large"}),
    "ddim": ("ddim", {"steps": 100}),
    "ddim-eta1": ("ddim", {"steps": 250, "eta": 1.0}),
    "langevin": ("langevin", {"steps": 300, "n_steps_each": 5, "step_size": 0.3}),
    "euler_maruyama": ("euler_maruyama", {"steps": 500}),
    "torchsde": ("torchsde", {"steps": 300}),
    "ode": ("ode", {}),
    "ode-rk4": ("ode", {"method": "rk4", "steps": 40, "spacing": "quadratic"}),
    "pc": ("pc", {"steps": 300}),
    "pc-ddim": ("pc", {"steps": 100, "predictor": "ddim", "snr": 0.05}),
    "dpmpp_2m": ("dpmpp_2m", {"steps": 40}),
    "dpmpp_3m": ("dpmpp_3m", {"steps": 40}),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {"steps": 50}),
    "unipc": ("unipc", {"steps": 40}),
    "unipc-3": ("unipc", {"steps": 40, "order": 3}),
    "heun": ("heun", {"steps": 40}),
    "heun-churn": ("heun", {"steps": 40, "s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    "ipndm": ("ipndm", {"steps": 40}),
}

N = 4000
GAUSSIAN = sg.GaussianMixture(means=[[1.0, -0.5]], stds=[[0.5, 1.5]])
MIXTURE = sg.GaussianMixture(
    means=[[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], stds=0.25, weights=[0.6, 0.3, 0.1]
)


def _run(case: str, sde_name: str, target: sg.GaussianMixture, seed: int = 0, n: int = N):
    name, options = CASES[case]
    model = target.model(SDES[sde_name]())
    gen = torch.Generator().manual_seed(seed)
    return sg.sample(model, (n, target.dim), name, generator=gen, dtype=torch.float64,
                     **options)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", list(CASES))
def test_gaussian_mean_and_covariance(case, sde_name):
    x = _run(case, sde_name, GAUSSIAN).double()
    assert torch.isfinite(x).all()
    mean, cov = GAUSSIAN.mean(), GAUSSIAN.covariance()
    std = cov.diagonal().sqrt()
    # 5 standard errors of the estimator, plus 3% for the discretisation
    assert ((x.mean(0) - mean).abs() < 5 * std / math.sqrt(N) + 0.03 * std).all(), x.mean(0)
    var_ratio = x.var(0) / cov.diagonal()
    assert ((var_ratio - 1).abs() < 5 * math.sqrt(2 / N) + 0.03).all(), var_ratio
    corr = torch.corrcoef(x.T)[0, 1]
    assert corr.abs() < 5 / math.sqrt(N) + 0.02, corr


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", list(CASES))
def test_mixture_mode_weights_and_widths(case, sde_name):
    x = _run(case, sde_name, MIXTURE, seed=1).double()
    comp = MIXTURE.component_of(x)
    freq = torch.bincount(comp, minlength=3).double() / N
    p = MIXTURE.weights
    assert ((freq - p).abs() < 5 * (p * (1 - p) / N).sqrt() + 0.01).all(), freq
    spread = (x - MIXTURE.means[comp]).std(0) / 0.25
    assert ((spread - 1).abs() < 0.08).all(), spread  # no collapse, no blow-up of the modes


def test_ddim_with_eta_zero_and_the_probability_flow_ode_agree_pointwise():
    """Both solve the same ODE: from the same x_T they reach (nearly) the same x_0."""
    sde = sg.VPSDE()
    model = MIXTURE.model(sde)
    x_T = sde.prior_sample((500, 2), generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64)
    x_ddim = ddim(model, x_T, steps=1000, spacing="quadratic")
    x_ode = ode(model, x_T, rtol=1e-8, atol=1e-8)
    err = (x_ddim - x_ode).norm(dim=1)
    assert err.median() < 2e-3 and err.max() < 5e-2, (err.median(), err.max())
    # and they are not trivially equal to the prior draw
    assert (x_ddim - x_T).norm(dim=1).median() > 0.5


def _ddpm_tables():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return betas, torch.cumprod(1 - betas, 0)


def test_ancestral_on_the_ddpm_schedule_is_ddpm_algorithm_2():
    sde = sg.VPSDE.ddpm()
    model = MIXTURE.model(sde)
    betas, abar = _ddpm_tables()
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = sg.sample(model, x_T, "ancestral", steps=1000,
                     generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    x = x_T.clone()
    for i in range(1000, 0, -1):  # DDPM's t = 1000 .. 1, tables indexed t - 1
        t = torch.full((64,), i / 1000, dtype=torch.float64)
        eps = model.eps(x, t)
        beta, ab = betas[i - 1], abar[i - 1]
        x = (x - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
        if i > 1:
            ab_prev = abar[i - 2]
            var = (1 - ab_prev) / (1 - ab) * beta  # beta-tilde, the "fixed small" variance
            x = x + var.sqrt() * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    torch.testing.assert_close(ours, x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_on_the_ddpm_schedule_is_the_papers_update(eta):
    sde = sg.VPSDE.ddpm()
    model = MIXTURE.model(sde)
    _, abar = _ddpm_tables()
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = ddim(model, x_T, steps=50, eta=eta, spacing="uniform",
                generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    x = x_T.clone()
    steps = list(range(1000, 0, -20))  # 1000, 980, ..., 20: starts at the last step
    for k, i in enumerate(steps):
        prev = steps[k + 1] if k + 1 < len(steps) else 0
        ab = abar[i - 1]
        ab_prev = abar[prev - 1] if prev > 0 else torch.tensor(1.0, dtype=torch.float64)
        eps = model.eps(x, torch.full((64,), i / 1000, dtype=torch.float64))
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        s = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - s**2).sqrt() * eps
        if s > 0:
            x = x + s * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    torch.testing.assert_close(ours, x, rtol=1e-8, atol=1e-8)


def test_ddim_50_grid_starts_at_the_last_training_step_and_ends_at_zero():
    model = MIXTURE.model(sg.VPSDE.ddpm(num_steps=1000))
    seen = []
    out = ddim(model, (8, 2), steps=50, spacing="uniform", callback=seen.append,
               generator=torch.Generator().manual_seed(0))
    times = [info["t"] for info in seen]
    assert times[0] == 1.0  # t = T: DDPM's step 1000, not 980
    assert seen[-1]["t_next"] == 0.0
    steps = [round(t * 1000) for t in times]
    assert steps == list(range(1000, 0, -20))
    assert all(abs(t * 1000 - s) < 1e-9 for t, s in zip(times, steps, strict=True))
    torch.testing.assert_close(out, seen[-1]["x0_hat"].to(out.dtype))  # last step = x0_hat
    assert [info["nfe"] for info in seen] == list(range(1, 51))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_generator_same_samples_and_cond_passes_through_unchanged(name):
    the_cond = torch.randn(6, 3)
    seen = []

    def net(x, t, cond):
        seen.append(cond)
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        return MIXTURE.net(sg.VPSDE(), "eps")(x, t, None)

    model = sg.ScoreModel(net, sg.VPSDE())
    opts = {"ode": {"method": "euler", "steps": 10}}.get(name, {"steps": 10})
    a = sg.sample(model, (6, 2), name, cond=the_cond,
                  generator=torch.Generator().manual_seed(5), **opts)
    b = sg.sample(model, (6, 2), name, cond=the_cond,
                  generator=torch.Generator().manual_seed(5), **opts)
    c = sg.sample(model, (6, 2), name, cond=the_cond,
                  generator=torch.Generator().manual_seed(6), **opts)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert seen and all(cond is the_cond for cond in seen)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_any_data_shape_images_included(name):
    """Independent Gaussian pixels on (B, 1, 4, 4): per-pixel mean and variance."""
    target = sg.GaussianMixture(means=torch.full((1, 16), 0.5), stds=0.3)
    inner = target.net(sg.VESDE(), "eps")
    model = sg.ScoreModel(inner, sg.VESDE())
    opts = {"ode": {}, "langevin": CASES["langevin"][1],
            "ancestral": {"steps": 200}}.get(name, {"steps": 200})
    x = sg.sample(model, (1000, 1, 4, 4), name, generator=torch.Generator().manual_seed(0),
                  dtype=torch.float64, **opts)
    assert x.shape == (1000, 1, 4, 4)
    pixels = x.flatten(1).double()
    assert (pixels.mean(0) - 0.5).abs().max() < 0.06
    assert ((pixels.std(0) / 0.3) - 1).abs().max() < 0.15


def test_nfe_and_grid_are_reported_and_match_the_network_calls():
    calls = []
    inner = MIXTURE.net(sg.VPSDE(), "eps")

    def counting(x, t, cond):
        calls.append(1)
        return inner(x, t, cond)

    model = sg.ScoreModel(counting, sg.VPSDE())
    expected = {"ddim": 50, "euler_maruyama": 51}
    for name, nfe_expected in expected.items():
        calls.clear()
        res = sg.sample_with_info(model, (4, 2), name, steps=50)
        assert isinstance(res, sg.SampleResult) and res.x.shape == (4, 2)
        assert res.nfe == nfe_expected == len(calls)
        spacing = _parameters(SAMPLERS[name])["spacing"].default
        torch.testing.assert_close(res.grid, sg.time_grid(model.sde, 50, spacing,
                                                          t_end=res.grid[-1].item()))
    calls.clear()
    res = sg.sample_with_info(model, (4, 2), "ode")
    assert res.nfe == len(calls) and 20 < res.nfe < 400
    assert res.grid.tolist() == [1.0, model.sde.t_eps]
    calls.clear()
    res = sg.sample_with_info(model, (4, 2), "torchsde", steps=30)
    assert res.nfe == len(calls) == 31  # torchsde's shape check is not a wasted network call


def test_samplers_return_a_plain_tensor():
    out = sg.sample(MIXTURE.model(sg.VPSDE()), (4, 2), "ddim", steps=3)
    assert type(out) is torch.Tensor
    with pytest.raises(TypeError, match="return_nfe"):
        sg.sample(MIXTURE.model(sg.VPSDE()), (4, 2), "ddim", steps=3, return_nfe=True)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_progress_bar_and_callback_are_the_same_for_every_sampler(name, capsys):
    model = MIXTURE.model(sg.VPSDE())
    infos = []
    opts = {"ode": {"method": "euler"}}.get(name, {})
    res = sg.sample_with_info(model, (4, 2), name, steps=5, progress=True,
                              callback=infos.append, **opts)
    assert name in capsys.readouterr().err
    assert [i["i"] for i in infos] == [0, 1, 2, 3, 4]
    assert all(set(i) == {"i", "t", "t_next", "x", "x0_hat", "nfe"} for i in infos)
    grid = res.grid.tolist()
    assert [i["t"] for i in infos] == grid[:-1] and [i["t_next"] for i in infos] == grid[1:]
    assert all(i["x"].shape == i["x0_hat"].shape == (4, 2) for i in infos)
    nfes = [i["nfe"] for i in infos]
    assert nfes == sorted(nfes) and nfes[-1] <= res.nfe


def test_float64_integration_returns_the_input_dtype():
    model = MIXTURE.model(sg.VPSDE())
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    out32 = ddim(model, x_T, steps=20)
    out64 = ddim(model, x_T, steps=20, dtype=torch.float64)
    assert out32.dtype == out64.dtype == torch.float32
    torch.testing.assert_close(out32, out64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spacing", sg.samplers.SPACINGS)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_time_grids_are_decreasing_from_T_to_zero(spacing, sde_name):
    sde = SDES[sde_name]()
    grid = sg.time_grid(sde, 20, spacing)
    assert grid[0] == sde.T and grid[-1] == 0.0
    assert (grid[1:] < grid[:-1]).all()
    assert len(grid) <= 21 and (len(grid) == 21 or sde.num_steps)


# ----------------------------------------------------------------------------- bad input
MODEL = MIXTURE.model(sg.VPSDE())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sampler": "heun3"}, ValueError, "valid names: ancestral, ddim"),
        ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"steps": 2.5}, ValueError, "steps must be an integer >= 1"),
        ({"eta": -0.1}, ValueError, "eta must be >= 0"),
        ({"cond": torch.zeros(3, 2)}, ValueError, "batch size of x"),
        ({"grid": torch.tensor([1.5, 0.5, 0.0])}, ValueError, r"lie in \[0, T=1.0\]"),
        ({"grid": torch.tensor([0.2, 0.5, 0.0])}, ValueError, "strictly decreasing"),
        ({"t_end": 2.0}, ValueError, "t_end"),
        ({"spacing": "cosine"}, ValueError, "unknown spacing"),
        ({"typo_option": 1}, TypeError, "has no option"),
    ],
    ids=["unknown-sampler", "steps-0", "steps-float", "eta-negative", "cond-batch",
         "grid-above-T", "grid-increasing", "t_end-above-T", "spacing", "unknown-option"],
)
def test_bad_input_gets_a_clear_error(kwargs, error, match):
    kwargs = {"sampler": "ddim", **kwargs}
    with pytest.raises(error, match=match):
        sg.sample(MODEL, (4, 2), **kwargs)


def test_non_finite_initial_noise_is_rejected():
    x_T = torch.randn(4, 2)
    x_T[1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sg.sample(MODEL, x_T, "ddim", steps=5)


@pytest.mark.parametrize("bad", [(4,), (0, 2), "shape", torch.zeros(4)], ids=str)
def test_bad_shape_is_rejected(bad):
    with pytest.raises((TypeError, ValueError), match="batch"):
        sg.sample(MODEL, bad, "ddim", steps=5)


def test_sampler_specific_option_errors():
    with pytest.raises(ValueError, match="variance must be one of"):
        sg.sample(MODEL, (4, 2), "ancestral", steps=5, variance="medium")
    with pytest.raises(ValueError, match="predictor must be one of"):
        sg.sample(MODEL, (4, 2), "pc", steps=5, predictor="heun")
    with pytest.raises(ValueError, match="fixed-grid method 'rk4' needs steps"):
        sg.sample(MODEL, (4, 2), "ode", method="rk4")
    with pytest.raises(ValueError, match="method must be one of"):
        sg.sample(MODEL, (4, 2), "torchsde", steps=5, method="heun")
    with pytest.raises(TypeError, match="ScoreModel"):
        sg.sample(lambda x, t, c: x, (4, 2), "ddim", steps=5)


def test_bad_calls_leave_the_generator_untouched():
    """Validation happens before x_T is drawn, so a retry gives the same samples."""
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    with pytest.raises(ValueError):
        sg.sample(MODEL, (4, 2), "ddim", steps=5, cond=torch.zeros(3, 1), generator=gen)
    with pytest.raises(ValueError):
        sg.sample(MODEL, (4, 2), "ddim", steps=5, spacing="cosine", generator=gen)
    assert torch.equal(gen.get_state(), state)


# ----------------------------------------------------------------------------- grids
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_steps_over_the_grid_it_is_given(name):
    sde = sg.VPSDE()
    grid = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.02], dtype=torch.float64)
    opts = {"ode": {"method": "euler"}}.get(name, {})
    res = sg.sample_with_info(MIXTURE.model(sde), (4, 2), name, grid=grid, **opts)
    assert torch.equal(res.grid, grid)
    quad = sg.sample_with_info(MIXTURE.model(sde), (4, 2), name, steps=7,
                               spacing="quadratic", **opts)
    assert torch.equal(quad.grid, sg.time_grid(sde, 7, "quadratic", t_end=quad.grid[-1].item()))


# ----------------------------------------------------------------------------- batch invariance
#: every stochastic sampler (and the deterministic ones, whose x_T must be batch-invariant)
INVARIANCE_CASES = {
    "ancestral": ("ancestral", {"steps": 8}),
    "ddim-eta": ("ddim", {"steps": 8, "eta": 0.7}),
    "ddim": ("ddim", {"steps": 8}),
    "langevin": ("langevin", {"steps": 4, "n_steps_each": 2}),
    "langevin-snr": ("langevin", {"steps": 4, "n_steps_each": 2, "snr": 0.1}),
    "euler_maruyama": ("euler_maruyama", {"steps": 8}),
    "torchsde": ("torchsde", {"steps": 8}),
    "torchsde-srk": ("torchsde", {"steps": 4, "method": "srk"}),
    "pc": ("pc", {"steps": 8}),
    "pc-ancestral": ("pc", {"steps": 8, "predictor": "ancestral"}),
    "ode-rk4": ("ode", {"steps": 4, "method": "rk4"}),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {"steps": 8}),
    "heun-churn": ("heun", {"steps": 6, "s_churn": 10.0}),
    "unipc": ("unipc", {"steps": 6}),
}


@pytest.mark.parametrize("case", list(INVARIANCE_CASES))
def test_with_one_generator_per_sample_a_sample_does_not_depend_on_its_batch(case):
    name, opts = INVARIANCE_CASES[case]
    model = MIXTURE.model(sg.VPSDE())
    gens = [torch.Generator().manual_seed(100 + i) for i in range(8)]
    batch = sg.sample(model, (8, 2), name, generator=gens, dtype=torch.float64, **opts)
    alone = sg.sample(model, (1, 2), name, generator=[torch.Generator().manual_seed(103)],
                      dtype=torch.float64, **opts)
    torch.testing.assert_close(batch[3:4], alone, rtol=1e-6, atol=1e-6)
    other = sg.sample(model, (1, 2), name, generator=[torch.Generator().manual_seed(104)],
                      dtype=torch.float64, **opts)
    assert not torch.allclose(other, alone)  # the seeds matter


def test_x_T_with_a_list_of_generators_is_each_generators_own_draw():
    model = MIXTURE.model(sg.VPSDE())
    seen = []
    sg.sample(model, (3, 2), "ddim", steps=1, generator=[torch.Generator().manual_seed(i)
                                                         for i in range(3)],
              callback=lambda info: seen.append(info))
    x_T = torch.cat([torch.randn(1, 2, generator=torch.Generator().manual_seed(i))
                     for i in range(3)])
    torch.testing.assert_close(model.x0(x_T, torch.ones(3)), seen[0]["x0_hat"])


@pytest.mark.parametrize(
    "generator, error, match",
    [([torch.Generator()] * 3, ValueError, "one per sample: got 3 for a batch of 4"),
     (42, TypeError, "list of B torch.Generators")],
    ids=["wrong-length", "not-a-generator"],
)
def test_bad_generators_are_rejected(generator, error, match):
    with pytest.raises(error, match=match):
        sg.sample(MODEL, (4, 2), "ddim", steps=3, generator=generator)


# ----------------------------------------------------------------------------- renamed sampler
def test_the_old_sampler_name_sde_still_works_and_warns():
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(DeprecationWarning, match="'sde' is deprecated.*'torchsde'"):
        old = sg.sample(MODEL, (4, 2), "sde", steps=5, generator=gen)
    new = sg.sample(MODEL, (4, 2), "torchsde", steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="torchsde_sampler"):
        fn = sg.samplers.sde
    assert fn is sg.samplers.torchsde_sampler
    assert "sde" not in SAMPLERS and isinstance(sg.sde, type(math))  # the module, unshadowed


# ----------------------------------------------------------------------------- the core
@pytest.mark.parametrize("sde_name", list(SDES))
def test_sampling_run_tables_are_the_schedule_on_the_grid(sde_name):
    sde = SDES[sde_name]()
    run = sg.samplers.SamplingRun(MIXTURE.model(sde), (3, 2), name="t", steps=12,
                                  spacing="karras")
    grid = sg.time_grid(sde, 12, "karras")
    assert torch.equal(run.grid, grid) and run.t == grid.tolist()
    alpha, sigma = sde.alpha_sigma(grid)
    f, g2 = sde.f_g2(grid)
    for name, want in [("alpha", alpha), ("sigma", sigma), ("f", f), ("g2", g2),
                       ("lam", sde.log_snr(grid))]:
        assert getattr(run, name) == want.tolist(), name
    assert run.lam[-1] == math.inf and all(a > b for a, b in zip(run.lam[1:], run.lam[:-1],
                                                                 strict=True))


def test_cond_and_net_checks_run_once_per_call_not_per_network_call():
    checks, calls = [], []
    inner = MIXTURE.net(sg.VPSDE(), "eps")

    class Net:
        def check_cond(self, x, cond):
            checks.append(1)

        def __call__(self, x, t, cond):
            calls.append(1)
            return inner(x, t, None)

    model = sg.ScoreModel(Net(), sg.VPSDE())
    sg.sample(model, (4, 2), "pc", steps=10, cond=torch.zeros(4, 1))
    assert len(checks) == 1 and len(calls) == 21
