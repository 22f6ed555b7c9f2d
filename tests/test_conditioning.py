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


def make_unet(cond_mode: str | None = "add", cond_channels: int = 1,
              patch_size: int = 1) -> sg.UNet:
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", cond_mode=cond_mode,
                                       cond_channels=cond_channels if cond_mode else 0,
                                       patch_size=patch_size)
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
@pytest.mark.parametrize("cond_mode", ["add", "concat", "both"])
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


# --------------------------------------------------------------------------- encoded condition
def count_encoder_calls(net: sg.UNet) -> list[int]:
    """A counter of SegDiff's condition encoder G (``cond_mode="add"``)."""
    calls = [0]
    net.stem.encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name, patch_size, mode", [
    ("ddim", 1, "add"), ("ancestral", 1, "add"), ("dpmpp_2m", 1, "add"), ("ddim", 2, "add"),
    ("ddim", 1, "both"), ("ddim", 2, "both")])
def test_an_encoded_condition_gives_the_same_samples_with_one_encoder_call(name, patch_size,
                                                                           mode):
    net = make_unet(mode, patch_size=patch_size)
    p = patch_size
    encoder_calls = count_encoder_calls(net)
    model = sg.ScoreModel(net, sg.VPSDE())
    _, cond = inputs()

    def draw(c) -> Tensor:
        gen = torch.Generator().manual_seed(3)
        return sg.sample(model, (BATCH, 1, SIZE, SIZE), name, cond=c, generator=gen, steps=3)

    with torch.no_grad():
        raw = draw(cond)
        raw_calls = encoder_calls[0]
        encoded = net.encode_condition(cond)
        assert isinstance(encoded, sg.nn.EncodedCondition)
        assert encoded.shape == (BATCH, net.config.level_channels[0], SIZE // p, SIZE // p)
        fast = draw(encoded)
    assert raw_calls >= 3  # G runs at every network call on the raw image
    assert encoder_calls[0] - raw_calls == 1  # ...and once with the encoding
    torch.testing.assert_close(fast, raw, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(draw(net.encode_condition(cond + 1.0)), raw)  # it is used


@pytest.mark.parametrize("cond_mode", ["concat", None])
def test_encoding_passes_the_condition_through_where_there_is_no_encoder(cond_mode):
    net = make_unet(cond_mode)
    _, cond = inputs()
    given = cond if cond_mode else None
    assert net.encode_condition(given) is given


BAD_ENCODED = {
    # id: (cond_mode of the net, features shape, error regex)
    "batch": ("add", (BATCH + 1, 8, SIZE, SIZE), r"batch size of x \(2\)"),
    "width": ("add", (BATCH, 4, SIZE, SIZE), r"features must have shape \(B, C_0, H, W\) = "
                                             r"\(2, 8, 16, 16\)"),
    "size": ("add", (BATCH, 8, SIZE // 2, SIZE // 2), r"features must have shape"),
    "full-size-for-patches": ("add-p2", (BATCH, 8, SIZE, SIZE),
                              r"\(2, 8, 8, 8\) .*patch_size 2"),
    "concat-net": ("concat", (BATCH, 8, SIZE, SIZE), r"only fits cond_mode 'add' or 'both'"),
    "unconditional-net": (None, (BATCH, 8, SIZE, SIZE), r"only fits cond_mode 'add' or"),
    "both-without-image": ("both", (BATCH, 8, SIZE, SIZE), r"'both' needs an EncodedCondition"
                                                           r" that carries the image"),
}


@pytest.mark.parametrize("case", list(BAD_ENCODED))
def test_a_wrong_encoded_condition_is_refused_before_the_sampler_moves(case: str):
    cond_mode, shape, message = BAD_ENCODED[case]
    net = make_unet("add", patch_size=2) if cond_mode == "add-p2" else make_unet(cond_mode)
    assert net.config.level_channels[0] == 8  # the width the regexes name
    convs = count_stem_convs(net)
    bad = sg.nn.EncodedCondition(torch.randn(shape))
    with pytest.raises(ValueError, match=message):
        sg.sample(sg.ScoreModel(net, sg.VPSDE()), (BATCH, 1, SIZE, SIZE), "ddim", steps=2,
                  cond=bad)
    assert convs[0] == 0


@pytest.mark.parametrize("cond, error, message", [
    (torch.randn(BATCH, 2, SIZE, SIZE), ValueError, r"2 channels but cond_channels=1"),
    (torch.randn(BATCH, 1, 10, 10), ValueError, r"divisible by"),
    (torch.randn(BATCH, SIZE, SIZE), ValueError, r"\(B, cond_channels=1, H, W\) tensor"),
    (torch.zeros(BATCH, 1, SIZE, SIZE, dtype=torch.long), TypeError, r"floating-point"),
], ids=["channels", "size", "rank", "dtype"])
def test_encode_condition_validates_the_image(cond, error, message):
    with pytest.raises(error, match=message):
        make_unet("add").encode_condition(cond)


def test_both_reads_the_image_in_the_input_conv_and_adds_the_encoder():
    """cond_mode="both": F([x_t, I]) + G(I), each path live: zeroing the input conv's
    condition weights leaves G(I); removing G leaves F([x_t, I])."""
    torch.manual_seed(0)
    both, add, concat = (make_unet(m) for m in ("both", "add", "concat"))
    stem = both.stem
    assert stem.conv.in_channels == 2 and stem.encoder is not None
    x, cond = inputs()
    conv_only = torch.nn.functional.conv2d(torch.cat([x, cond], 1), stem.conv.weight,
                                           stem.conv.bias, padding=1)
    torch.testing.assert_close(stem(x, cond), conv_only + stem.encoder(cond))
    assert add.stem.conv.in_channels == 1 and concat.stem.encoder is None
    encoded = both.encode_condition(cond)
    assert encoded.image is cond
    torch.testing.assert_close(stem(x, encoded), stem(x, cond))
    twice = encoded.repeat(2)
    assert twice.image.shape == (2 * BATCH, 1, SIZE, SIZE)
    torch.testing.assert_close(twice.image[BATCH:], cond)
    with pytest.raises(ValueError, match="cond_mode=None .* 'both'"):
        sg.UNetConfig.from_preset("tiny", cond_mode=None, cond_channels=1)
    with pytest.raises(TypeError, match="image must be a floating-point"):
        sg.nn.EncodedCondition(torch.zeros(BATCH, 8, SIZE, SIZE), torch.zeros(BATCH + 1, 1, 4, 4))


def test_encoded_condition_needs_a_4d_float_tensor():
    with pytest.raises(TypeError, match=r"floating-point \(B, C_0, H, W\)"):
        sg.nn.EncodedCondition(torch.zeros(2, 8, 16))


@pytest.mark.parametrize("scale", [0.0, 3.0])
def test_guidance_with_an_encoded_condition_is_refused_clearly(scale: float):
    net = make_unet("add")
    _, cond = inputs()
    model = sg.ScoreModel(net, sg.VPSDE(), guidance_scale=scale)
    encoded = net.encode_condition(cond)
    with pytest.raises(ValueError, match=r"guidance .* needs the raw condition image"):
        sg.sample(model, (BATCH, 1, SIZE, SIZE), "ddim", steps=2, cond=encoded)
    x, _ = inputs()
    with pytest.raises(ValueError, match=r"guidance .* needs the raw condition image"):
        model(x, torch.full((BATCH,), 0.5), encoded)  # a direct call too
    model.guidance_scale = 1.0  # plain conditional: allowed
    assert sg.sample(model, (BATCH, 1, SIZE, SIZE), "ddim", steps=2, cond=encoded).shape == (
        BATCH, 1, SIZE, SIZE)
