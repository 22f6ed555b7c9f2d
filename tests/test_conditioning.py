"""Conditioning end to end with a real (tiny) U-Net: samplers, guidance, training.

* ``cond`` flows from ``sg.sample`` through every sampler to the U-Net untouched, and it
  changes the samples;
* a condition of the wrong shape is refused before the sampler moves: a wrong batch by
  ``ScoreModel.check_cond`` before any network call, wrong channels / size / a condition
  for an unconditional net by the U-Net's input check on the first call, before its first
  convolution, with no sampler state updated (no callback, no output); the same in the
  Trainer (no step counted, weights untouched);
* classifier-free guidance: scale 0 = the unconditional prediction (all-zeros condition),
  scale 1 = the conditional one, scale w = ``out_u + w (out_c - out_u)`` in every
  parametrisation, and through a sampler;
* classifier-free training: ``TrainConfig.p_uncond`` zeroes whole conditions, about that
  fraction of them, the same ones for the same ``(seed, step)``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import scoregen as sg
from scoregen.samplers import SAMPLERS

SIZE = 16
BATCH = 2
#: Small budgets: every sampler makes a handful of U-Net calls.
OPTIONS = {
    "ode": {"method": "euler", "steps": 2},
    "langevin": {"steps": 2, "n_steps_each": 1},
}


def options(name: str) -> dict:
    return OPTIONS.get(name, {"steps": 2})


def make_unet(cond_mode: str | None = "add", cond_channels: int = 1) -> sg.UNet:
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", cond_mode=cond_mode,
                                       cond_channels=cond_channels if cond_mode else 0)
    return sg.UNet(config).eval()


class Spy(nn.Module):
    """Wraps a net; records every ``cond`` it is called with and the calls that returned."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.conds: list[Tensor | None] = []
        self.returned = 0

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        self.conds.append(cond)
        out = self.net(x, t, cond)
        self.returned += 1
        return out


def count_stem_convs(net: sg.UNet) -> list[int]:
    """A counter of the U-Net's first convolution, the first heavy work of a forward."""
    calls = [0]
    net.stem.conv.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def inputs(batch: int = BATCH, channels: int = 1, size: int = SIZE) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, SIZE, SIZE, generator=gen)
    cond = torch.randn(batch, channels, size, size, generator=gen)
    return x, cond


# --------------------------------------------------------------------------- flow
@pytest.mark.parametrize("cond_mode", ["add", "concat"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_cond_reaches_the_unet_untouched_through_every_sampler(name: str, cond_mode: str):
    spy = Spy(make_unet(cond_mode))
    model = sg.ScoreModel(spy, sg.VPSDE())
    _, the_cond = inputs()

    def draw(cond: Tensor) -> Tensor:
        gen = torch.Generator().manual_seed(3)
        return sg.sample(model, (BATCH, 1, SIZE, SIZE), name, cond=cond, generator=gen,
                         **options(name))

    out = draw(the_cond)
    assert out.shape == (BATCH, 1, SIZE, SIZE) and torch.isfinite(out).all()
    assert spy.conds and all(c is the_cond for c in spy.conds)  # the very object
    other = draw(the_cond + 1.0)
    assert not torch.allclose(out, other)  # the net uses it


# --------------------------------------------------------------------------- bad shapes
BAD_CONDS = {
    # id: (cond_mode of the net, cond shape, error regex)
    "batch": ("add", (BATCH + 1, 1, SIZE, SIZE), r"batch size of x \(2\)"),
    "channels-add": ("add", (BATCH, 2, SIZE, SIZE), r"2 channels but cond_channels=1"),
    "channels-concat": ("concat", (BATCH, 3, SIZE, SIZE), r"3 channels but cond_channels=1"),
    "size": ("add", (BATCH, 1, SIZE // 2, SIZE // 2), r"cond spatial size \(8, 8\)"),
    "rank": ("concat", (BATCH, SIZE, SIZE), r"cond must have shape \(B, cond_channels, H, W\)"),
    "to-unconditional": (None, (BATCH, 1, SIZE, SIZE), r"unconditional \(cond_mode=None\)"),
}


@pytest.mark.parametrize("case", list(BAD_CONDS))
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_wrong_cond_is_refused_before_the_sampler_moves(name: str, case: str):
    cond_mode, shape, message = BAD_CONDS[case]
    net = make_unet(cond_mode)
    convs = count_stem_convs(net)
    spy = Spy(net)
    steps_reported = []
    with pytest.raises(ValueError, match=message):
        sg.sample(sg.ScoreModel(spy, sg.VPSDE()), (BATCH, 1, SIZE, SIZE), name,
                  cond=torch.randn(shape), callback=steps_reported.append, **options(name))
    assert steps_reported == []  # no step completed
    assert spy.returned == 0 and convs[0] == 0  # the net stopped at its input check
    if case == "batch":
        assert spy.conds == []  # caught by ScoreModel.check_cond, before any net call
    x, good = inputs()
    with torch.no_grad():
        net(x, torch.full((BATCH,), 0.5), good if cond_mode else None)
    assert convs[0] == 1  # the counter works


@pytest.mark.parametrize("case", ["channels-add", "size"])
def test_wrong_cond_is_refused_under_guidance(case: str):
    """With guidance the net sees (cond; zeros) stacked: the error still names cond."""
    cond_mode, shape, message = BAD_CONDS[case]
    net = make_unet(cond_mode)
    convs = count_stem_convs(net)
    model = sg.ScoreModel(net, sg.VPSDE(), guidance_scale=3.0)
    with pytest.raises(ValueError, match=message):
        sg.sample(model, (BATCH, 1, SIZE, SIZE), "ddim", steps=2, cond=torch.randn(shape))
    assert convs[0] == 0


def test_wrong_cond_is_refused_by_the_trainer_before_any_update(tmp_path):
    net = make_unet("add")
    model = sg.ScoreModel(net, sg.VPSDE())
    trainer = sg.Trainer(model, sg.TrainConfig(), tmp_path,
                         host=sg.HostOptions(checkpoint_every=0, progress=False))
    before = [p.detach().clone() for p in model.parameters()]
    x0, _ = inputs()
    with pytest.raises(ValueError, match=r"2 channels but cond_channels=1"):
        trainer.step(x0, torch.randn(BATCH, 2, SIZE, SIZE))
    assert trainer.global_step == 0
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))


# --------------------------------------------------------------------------- guidance
@pytest.fixture(scope="module")
def cfg_setup():
    net = make_unet("add")
    x, cond = inputs()
    t = torch.full((BATCH,), 0.4)
    with torch.no_grad():
        out_c, out_u, out_none = net(x, t, cond), net(x, t, torch.zeros_like(cond)), net(x, t)
    return net, x, t, cond, out_c, out_u, out_none


def test_missing_condition_is_the_all_zeros_condition(cfg_setup):
    *_, out_u, out_none = cfg_setup
    torch.testing.assert_close(out_none, out_u, rtol=0, atol=0)


@pytest.mark.parametrize("scale", [0.0, 1.0, None, 0.5, 3.0])
def test_guidance_mixes_conditional_and_unconditional_unet_outputs(cfg_setup, scale):
    net, x, t, cond, out_c, out_u, _ = cfg_setup
    model = sg.ScoreModel(net, sg.VPSDE(), guidance_scale=scale)
    with torch.no_grad():
        out = model(x, t, cond)
    w = 1.0 if scale is None else scale
    expected = {0.0: out_u, 1.0: out_c}.get(w, out_u + w * (out_c - out_u))
    exact = w in (0.0, 1.0)  # a single net call on the conditional or the zero condition
    torch.testing.assert_close(out, expected, **({"rtol": 0, "atol": 0} if exact else {}))
    assert not torch.allclose(out_c, out_u)  # the test would be void otherwise


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
def test_guiding_the_raw_output_guides_eps_in_every_parametrisation(cfg_setup, prediction):
    net, x, t, cond, *_ = cfg_setup
    sde = sg.VPSDE()

    def eps(scale: float | None, c: Tensor) -> Tensor:
        with torch.no_grad():
            return sg.ScoreModel(net, sde, prediction, guidance_scale=scale).eps(x, t, c)

    eps_c, eps_u = eps(None, cond), eps(None, torch.zeros_like(cond))
    torch.testing.assert_close(eps(2.5, cond), eps_u + 2.5 * (eps_c - eps_u))


@pytest.mark.parametrize("name", ["ddim", "ancestral"])
def test_guidance_scale_0_and_1_through_a_sampler(cfg_setup, name):
    net, _, _, cond, *_ = cfg_setup
    sde = sg.VPSDE()

    def draw(scale: float | None, c: Tensor | None) -> Tensor:
        model = sg.ScoreModel(net, sde, guidance_scale=scale)
        gen = torch.Generator().manual_seed(7)
        return sg.sample(model, (BATCH, 1, SIZE, SIZE), name, steps=3, cond=c, generator=gen)

    unconditional, conditional = draw(None, None), draw(None, cond)
    torch.testing.assert_close(draw(0.0, cond), unconditional, rtol=0, atol=0)
    torch.testing.assert_close(draw(1.0, cond), conditional, rtol=0, atol=0)
    guided = draw(4.0, cond)
    assert not torch.allclose(guided, conditional) and torch.isfinite(guided).all()


# --------------------------------------------------------------------------- training
def dropped_rows(tmp_path, p_uncond: float, seed: int = 0, batch: int = 64) -> Tensor:
    """Which rows of one Trainer.step's condition reached the net as zeros."""
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", cond_mode="add", cond_channels=1)
    spy = Spy(sg.UNet(config))
    trainer = sg.Trainer(
        sg.ScoreModel(spy, sg.VPSDE()),
        sg.TrainConfig(p_uncond=p_uncond, seed=seed),
        tmp_path / f"p{p_uncond}-s{seed}",
        host=sg.HostOptions(checkpoint_every=0, progress=False),
    )
    x0 = torch.randn(batch, 1, 8, 8)
    cond = torch.rand(batch, 1, 8, 8) + 0.5  # never zero
    loss = trainer.step(x0, cond)
    assert torch.isfinite(torch.tensor(loss)) and trainer.global_step == 1
    (seen,) = spy.conds
    zero = (seen == 0).flatten(1).all(1)
    kept = (seen == cond).flatten(1).all(1)
    assert torch.equal(zero, ~kept)  # whole conditions are dropped, never parts
    return zero


def test_p_uncond_drops_whole_conditions_in_the_trainer(tmp_path):
    assert not dropped_rows(tmp_path, 0.0).any()
    assert dropped_rows(tmp_path, 1.0).all()
    half = dropped_rows(tmp_path, 0.5)
    assert 16 <= int(half.sum()) <= 48  # Binomial(64, 0.5): mean 32, sd 4
    torch.testing.assert_close(dropped_rows(tmp_path, 0.5), half)  # a function of (seed, step)
    assert not torch.equal(dropped_rows(tmp_path, 0.5, seed=1), half)
