"""Denoising score matching: the analytic score is its minimiser."""

from __future__ import annotations

import pytest
import torch

import scoregen as sg

SDES = {"ddpm": sg.VPSDE.ddpm, "vp": sg.VPSDE, "subvp": sg.SubVPSDE, "ve": sg.VESDE}
TARGET = sg.GaussianMixture(means=[[1.0, -0.5]], stds=[[0.5, 0.8]])


def _loss(model, x0, t, noise, **kw):
    return sg.dsm_loss(model, x0, t=t, noise=noise, **kw).item()


@pytest.mark.parametrize("prediction", sg.PREDICTIONS)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_the_exact_score_has_lower_loss_than_perturbed_scores(sde_name, prediction):
    sde = SDES[sde_name]()
    gen = torch.Generator().manual_seed(0)
    x0 = TARGET.sample(20000, gen)
    t = sg.sample_times(TARGET.model(sde), 20000, generator=gen).double()
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    exact = TARGET.net(sde, prediction)
    best = _loss(sg.ScoreModel(exact, sde, prediction), x0, t, noise)
    # perturbations relative to the output's spread, so they stand above the Monte-Carlo
    # noise of the loss (v-targets under VE are of order sigma_max)
    spread = exact(x0, t, None).std().item()
    for scale, shift in [(1.1, 0.0), (0.9, 0.0), (1.0, 0.1 * spread), (1.0, -0.1 * spread)]:
        def perturbed(x, t_, c, scale=scale, shift=shift):
            return exact(x, t_, c) * scale + shift

        worse = _loss(sg.ScoreModel(perturbed, sde, prediction), x0, t, noise)
        assert worse > best, (scale, shift, worse, best)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_training_a_linear_model_recovers_the_analytic_gaussian_score(sde_name):
    """At a fixed t, eps_hat(x) is affine in x for Gaussian data: learn it by DSM."""
    sde = SDES[sde_name]()
    t_fix = 0.3
    alpha, sigma = (v.item() for v in sde.marginal_coeffs(torch.tensor([t_fix])))
    linear = torch.nn.Linear(2, 2, dtype=torch.float64)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = linear

        def forward(self, x, t, cond=None):
            return self.linear(x)

    model = sg.ScoreModel(Net(), sde, prediction="eps")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[300, 450], gamma=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        x0 = TARGET.sample(1024, gen)
        loss = sg.dsm_loss(model, x0, t=torch.full((1024,), t_fix, dtype=torch.float64),
                           generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    # eps_hat(x) = -sigma * score = sigma (x - alpha mu) / (alpha^2 s^2 + sigma^2)
    var = alpha**2 * TARGET.stds[0] ** 2 + sigma**2
    weight = torch.diag(sigma / var)
    bias = -sigma * alpha * TARGET.means[0] / var
    torch.testing.assert_close(linear.weight.detach(), weight, rtol=0.05, atol=0.02)
    torch.testing.assert_close(linear.bias.detach(), bias, rtol=0.05, atol=0.02)


def test_discrete_times_for_the_ddpm_schedule_and_continuous_otherwise():
    gen = torch.Generator().manual_seed(0)
    model = TARGET.model(sg.VPSDE.ddpm(num_steps=1000))
    t = sg.sample_times(model, 5000, generator=gen)
    steps = t * 1000
    torch.testing.assert_close(steps, steps.round())
    assert steps.min() >= 1 and steps.max() <= 1000 and len(steps.unique()) > 900
    t_c = sg.sample_times(TARGET.model(sg.VPSDE()), 5000, generator=gen)
    assert t_c.min() >= 1e-3 and t_c.max() <= 1 and len(t_c.unique()) == 5000
    with pytest.raises(ValueError, match="num_steps"):
        sg.sample_times(TARGET.model(sg.VPSDE()), 5, discrete=True)


@pytest.mark.parametrize("discrete", [False, True])
def test_time_power_draws_the_density_t_to_the_k_minus_one(discrete):
    """power k: P(s <= q) = q^k for s = (t - t_eps) / (T - t_eps); k = 1 is the old draw."""
    sde = sg.VPSDE.ddpm(num_steps=1000) if discrete else sg.VPSDE()
    model = TARGET.model(sde)
    t0 = 0.0 if discrete else sde.t_eps
    for k in (0.5, 2.0, 3.0):
        t = sg.sample_times(model, 40_000, discrete=discrete, power=k,
                            generator=torch.Generator().manual_seed(1)).double()
        s = (t - t0) / (sde.T - t0)
        for q in (0.25, 0.5, 0.9):
            assert float((s <= q).double().mean()) == pytest.approx(q**k, abs=0.01)
        if discrete:
            steps = t * 1000
            torch.testing.assert_close(steps, steps.round())
            assert steps.min() >= 1 and steps.max() <= 1000
    same = [sg.sample_times(model, 64, discrete=discrete, power=p,
                            generator=torch.Generator().manual_seed(2)) for p in (1, 1.0)]
    base = sg.sample_times(model, 64, discrete=discrete, generator=torch.Generator().manual_seed(2))
    assert torch.equal(same[0], base) and torch.equal(same[1], base)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="power"):
            sg.sample_times(model, 4, power=bad)


def test_trainer_config_carries_time_power():
    cfg = sg.TrainConfig(time_power=2.0)
    assert sg.TrainConfig.from_dict(cfg.to_dict()).time_power == 2.0
    assert sg.TrainConfig.from_dict({k: v for k, v in cfg.to_dict().items()
                                     if k != "time_power"}).time_power == 1.0  # older runs
    with pytest.raises(ValueError, match="time_power"):
        sg.TrainConfig(time_power=0.0)


def test_sigma2_weighted_score_loss_equals_simple_eps_loss():
    """NCSN's lambda = sigma^2 on the score is L_simple on eps (Song & Ermon 2019)."""
    sde = sg.VESDE()
    gen = torch.Generator().manual_seed(0)
    x0 = TARGET.sample(256, gen)
    t = torch.rand(256, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    score_net = TARGET.net(sde, "score")

    def wrong_score(x, t_, c):
        return score_net(x, t_, c) * 0.7

    def wrong_eps(x, t_, c):
        alpha, sigma = sde.marginal_coeffs(t_)
        return -sigma[:, None] * wrong_score(x, t_, c)

    score_model = sg.ScoreModel(wrong_score, sde, "score")
    eps_model = sg.ScoreModel(wrong_eps, sde, "eps")
    a = sg.dsm_loss(score_model, x0, t=t, noise=noise)  # default weighting: sigma2
    b = sg.dsm_loss(eps_model, x0, t=t, noise=noise)  # default weighting: simple
    torch.testing.assert_close(a, b)
    custom = sg.dsm_loss(eps_model, x0, t=t, noise=noise, weighting=lambda al, s: 2 + 0 * s)
    torch.testing.assert_close(custom, 2 * b)


def test_condition_dropout_zeroes_a_fraction_of_the_conditions():
    seen = []

    def net(x, t, cond):
        seen.append(cond.clone())
        return torch.zeros_like(x)

    model = sg.ScoreModel(net, sg.VPSDE())
    cond = torch.ones(4000, 3)
    sg.dsm_loss(model, torch.zeros(4000, 2), cond, p_uncond=0.25,
                generator=torch.Generator().manual_seed(0))
    dropped = (seen[0] == 0).all(1)
    assert (seen[0][~dropped] == 1).all()  # the rest unchanged
    assert abs(dropped.double().mean().item() - 0.25) < 0.03


def _recording_model():
    seen = []

    def net(x, t, cond):
        seen.append((x.clone(), t.clone(), None if cond is None else cond.clone()))
        return torch.zeros_like(x)

    return sg.ScoreModel(net, sg.VPSDE.ddpm()), seen


def test_dsm_loss_draws_through_draw_training_batch():
    """dsm_loss's own draws are exactly draw_training_batch's (t, eps, dropout, in order)."""
    from scoregen.losses import draw_training_batch, drop_condition

    model, seen = _recording_model()
    x0, cond = torch.randn(64, 2), torch.ones(64, 3)
    sg.dsm_loss(model, x0, cond, p_uncond=0.5, generator=torch.Generator().manual_seed(7))
    d = draw_training_batch(model, x0.shape, p_uncond=0.5,
                            generator=torch.Generator().manual_seed(7))
    x_t, t, c = seen[0]
    alpha, sigma = model.coeffs(d.t, x0)
    torch.testing.assert_close(t, d.t)
    torch.testing.assert_close(x_t, alpha * x0 + sigma * d.noise)
    torch.testing.assert_close(c, drop_condition(cond, d.keep))
    assert 0 < int((~d.keep).sum()) < 64  # some dropped, some kept
    # given t: only eps (then the mask) is drawn, so eps is the generator's first draw
    g = torch.Generator().manual_seed(3)
    given = draw_training_batch(model, x0.shape, t=d.t, generator=g)
    torch.testing.assert_close(given.noise, torch.randn(x0.shape,
                                                        generator=torch.Generator().manual_seed(3)))
    assert given.keep is None


def test_a_sharded_global_draw_is_the_ranks_rows():
    from scoregen.losses import draw_training_batch

    model, _ = _recording_model()
    d = draw_training_batch(model, (6, 2), p_uncond=0.3, generator=torch.Generator().manual_seed(1))
    parts = [d.shard(r, 3) for r in range(3)]
    torch.testing.assert_close(parts[1].t, d.t[[1, 4]])
    torch.testing.assert_close(parts[2].noise, d.noise[[2, 5]])
    assert torch.equal(parts[0].keep, d.keep[[0, 3]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"shape": (4,)}, "at least one data dimension"), ({"p_uncond": -0.1}, "p_uncond"),
     ({"t": torch.full((3,), 0.5)}, r"t must have shape \(4,\)"),
     ({"noise": torch.zeros(4, 3)}, "noise must have the shape")],
    ids=["no-data-dim", "p_uncond", "t-shape", "noise-shape"],
)
def test_draw_training_batch_rejects_bad_input(kwargs, match):
    from scoregen.losses import draw_training_batch

    model, _ = _recording_model()
    kwargs = {"shape": (4, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        draw_training_batch(model, kwargs.pop("shape"), **kwargs)


def test_per_sample_reduction_and_generator_reproducibility():
    model = TARGET.model(sg.VPSDE())
    x0 = TARGET.sample(8, torch.Generator().manual_seed(0))
    a = sg.dsm_loss(model, x0, reduction="none", generator=torch.Generator().manual_seed(1))
    b = sg.dsm_loss(model, x0, reduction="none", generator=torch.Generator().manual_seed(1))
    assert a.shape == (8,)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"t": torch.full((4,), 1.5)}, ValueError, r"\[0, T=1.0\]"),
        ({"t": torch.full((3,), 0.5)}, ValueError, r"t must have shape \(4,\)"),
        ({"noise": torch.zeros(4, 3)}, ValueError, "noise must have the shape"),
        ({"cond": torch.zeros(2, 1)}, ValueError, "batch size of x"),
        ({"weighting": "snr"}, ValueError, "weighting must be one of"),
        ({"p_uncond": 1.5}, ValueError, "p_uncond"),
        ({"reduction": "sum"}, ValueError, "reduction"),
    ],
    ids=["t-range", "t-shape", "noise-shape", "cond-batch", "weighting", "p_uncond",
         "reduction"],
)
def test_bad_input(kwargs, error, match):
    model = TARGET.model(sg.VPSDE())
    with pytest.raises(error, match=match):
        sg.dsm_loss(model, torch.zeros(4, 2), **kwargs)


def test_net_output_of_the_wrong_shape_is_reported():
    model = sg.ScoreModel(lambda x, t, c: x[:, :1], sg.VPSDE())
    with pytest.raises(ValueError, match=r"net returned shape \(4, 1\)"):
        sg.dsm_loss(model, torch.zeros(4, 2))


def test_dsm_loss_of_an_empty_batch_is_refused():
    """Issue 10, defect 5: an empty batch returned NaN (a mean over nothing)."""
    model = sg.ScoreModel(lambda x, t, cond=None: torch.zeros_like(x), sg.VPSDE(), "eps")
    with pytest.raises(ValueError, match=r"at least one sample.*got shape \(0, 2\)"):
        sg.dsm_loss(model, torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"got shape \(3, 0\)"):
        sg.dsm_loss(model, torch.zeros(3, 0))


def test_binary_mask_loss_matches_hand_computed_dice_and_bce():
    from scoregen.losses import binary_mask_loss

    x0 = torch.tensor([[1.0, 1.0, -1.0, -1.0]])  # mask m = 1 1 0 0
    x0_hat = torch.tensor([[0.0, 1.0, -1.0, 0.0]])  # p = 0.5 1 0 0.5 (clamped to [1e-4, 1-1e-4])
    p = torch.tensor([0.5, 1 - 1e-4, 1e-4, 0.5])
    m = torch.tensor([1.0, 1.0, 0.0, 0.0])
    dice = 1 - (2 * (p * m).sum() + 1) / (p.sum() + m.sum() + 1)
    bce = -(m * p.log() + (1 - m) * (1 - p).log()).mean()
    assert torch.allclose(binary_mask_loss(x0_hat, x0), (dice + bce).reshape(1))
    perfect = binary_mask_loss(x0, x0)
    assert float(perfect) < 1e-3  # a perfect mask costs (almost) nothing


@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_dsm_loss_aux_term_is_added_with_alpha_squared_weight(prediction):
    from scoregen.losses import binary_mask_loss

    torch.manual_seed(0)
    sde = sg.VPSDE.ddpm(num_steps=100)

    class Net(torch.nn.Module):
        def forward(self, x, t, cond=None):
            return 0.3 * x

    model = sg.ScoreModel(Net(), sde, prediction)
    x0 = torch.randint(0, 2, (4, 1, 4, 4)).float() * 2 - 1
    t = torch.tensor([0.1, 0.3, 0.6, 0.9])
    noise = torch.randn_like(x0)
    base = sg.dsm_loss(model, x0, t=t, noise=noise, reduction="none")
    both = sg.dsm_loss(model, x0, t=t, noise=noise, reduction="none", aux="dice_bce",
                       aux_weight=0.5)
    alpha, sigma = model.coeffs(t, x0)
    x_t = alpha * x0 + sigma * noise
    _, x0_hat = model.convert(0.3 * x_t, x_t, alpha, sigma)
    expected = base + 0.5 * alpha.flatten() ** 2 * binary_mask_loss(x0_hat, x0)
    assert torch.allclose(both, expected, atol=1e-6)
    uniform = sg.dsm_loss(model, x0, t=t, noise=noise, reduction="none", aux="dice_bce",
                          aux_weighting="uniform")
    assert torch.allclose(uniform, base + binary_mask_loss(x0_hat, x0), atol=1e-6)
    with pytest.raises(ValueError, match="aux must be None or one of"):
        sg.dsm_loss(model, x0, aux="dice")


def test_the_training_step_draws_times_with_the_configs_power():
    from scoregen.train.step import draw_rows

    model = TARGET.model(sg.VPSDE())
    x0 = torch.zeros(4000, 2)
    means = []
    for k in (1.0, 3.0):
        t, *_ = draw_rows(model, x0, None, config=sg.TrainConfig(time_power=k), step=0,
                            generator=torch.Generator(), device=torch.device("cpu"), rank=0,
                            world_size=1)
        means.append(float(t.mean()))
    assert means[0] == pytest.approx(0.5, abs=0.02)
    assert means[1] == pytest.approx(0.75, abs=0.02)  # E[u^(1/3)] = 3/4
