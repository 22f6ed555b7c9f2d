"""Self-conditioning (Chen, Zhang & Hinton 2022): the net reads its previous ``x0_hat``.

* the U-Net: ``x_self`` changes the output, ``None`` is zeros, a net built without it
  refuses it, a wrong shape is named; configs without it are written as before;
* ``ScoreModel``: infers the flag through DDP / compile wrappers, refuses ``x_self`` for
  other nets, guides with it;
* every sampler feeds call ``k`` the ``x0_hat`` of call ``k - 1`` (zeros at the first), and
  a self-conditioned net that ignores ``x_self`` samples exactly what the plain one does;
  the likelihood's ODE never feeds it (its velocity must be a function of ``(t, x)``);
* ``dsm_loss``: the selected rows get the gradient-free first estimate, the others zeros;
  no gradient flows through the first call; ``p_self_cond=0`` is the plain loss on zeros;
  the draw of plain models is unchanged; the trainer passes the global batch's rows and a
  checkpoint reloads as a self-conditioned model.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import scoregen as sg
from scoregen.losses import draw_training_batch
from scoregen.samplers import SAMPLERS

SIZE = 16
BATCH = 2
OPTIONS = {
    "ode": {"method": "euler", "steps": 3},
    "langevin": {"steps": 2, "n_steps_each": 1},
}


def make_unet(self_condition: bool = True, cond_mode: str | None = "add") -> sg.UNet:
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", cond_mode=cond_mode,
                                       cond_channels=1 if cond_mode else 0,
                                       self_condition=self_condition)
    return sg.UNet(config).eval()


def inputs(batch: int = BATCH) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, SIZE, SIZE, generator=gen)
    cond = torch.randn(batch, 1, SIZE, SIZE, generator=gen)
    x_self = torch.randn(batch, 1, SIZE, SIZE, generator=gen).clamp(-1, 1)
    return x, cond, x_self


class Spy(nn.Module):
    """A self-conditioned net that records ``(x, t, x_self, out)`` of every call."""

    self_condition = True

    def __init__(self, net: nn.Module, use_x_self: bool = True) -> None:
        super().__init__()
        self.net = net
        self.use_x_self = use_x_self
        self.calls: list[tuple[Tensor, Tensor, Tensor | None, Tensor]] = []

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None, x_self: Tensor | None
                ) -> Tensor:
        out = self.net(x, t, cond, x_self if self.use_x_self else None)
        self.calls.append((x.detach().clone(), t.detach().clone(),
                           None if x_self is None else x_self.detach().clone(), out.detach()))
        return out


# --------------------------------------------------------------------------- the U-Net
def test_unet_reads_x_self_and_none_is_zeros():
    net = make_unet()
    x, cond, x_self = inputs()
    t = torch.full((BATCH,), 0.4)
    with torch.no_grad():
        none, zeros, given = (net(x, t, cond, v) for v in (None, torch.zeros_like(x), x_self))
    torch.testing.assert_close(none, zeros, rtol=0, atol=0)
    assert (given - zeros).abs().max() > 1e-3  # the estimate reaches the output
    encoded = net.encode_condition(cond)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, encoded, x_self), given)


def test_unet_refuses_x_self_it_cannot_read():
    x, cond, x_self = inputs()
    t = torch.full((BATCH,), 0.4)
    with pytest.raises(ValueError, match="without self_condition=True"):
        make_unet(False)(x, t, cond, x_self)
    shape_error = r"must have x's shape \(2, 1, 16, 16\); got \(2, 1, 8, 8\)"
    with pytest.raises(ValueError, match=shape_error):
        make_unet()(x, t, cond, x_self[..., :8, :8])
    with pytest.raises(TypeError, match="self_condition must be a bool"):
        sg.UNetConfig.from_preset("tiny", self_condition=1)


def test_config_writes_the_flag_only_when_set():
    plain = sg.UNetConfig.from_preset("tiny")
    assert "self_condition" not in plain.to_dict()  # configs of older runs compare equal
    assert sg.UNetConfig.from_dict(plain.to_dict()) == plain
    sc = sg.UNetConfig.from_preset("tiny", self_condition=True)
    assert sc.to_dict()["self_condition"] is True
    assert sg.UNetConfig.from_dict(sc.to_dict()) == sc
    # the input conv reads x_t and the estimate: one more input channel per data channel
    assert sg.UNet(sc).stem.conv.in_channels == sg.UNet(plain).stem.conv.in_channels + 1


# --------------------------------------------------------------------------- ScoreModel
class _Wrapper(nn.Module):
    """Stands in for DDP (``.module``) and torch.compile (``._orig_mod``)."""

    def __init__(self, inner: nn.Module, attr: str) -> None:
        super().__init__()
        setattr(self, attr, inner)
        self.attr = attr

    def forward(self, *args):
        return getattr(self, self.attr)(*args)


@pytest.mark.parametrize("attr", ["module", "_orig_mod"])
def test_score_model_reads_the_flag_through_wrappers(attr: str):
    assert sg.ScoreModel(_Wrapper(make_unet(), attr), sg.VPSDE()).self_condition
    assert not sg.ScoreModel(_Wrapper(make_unet(False), attr), sg.VPSDE()).self_condition
    assert not sg.ScoreModel(lambda x, t, c: x, sg.VPSDE()).self_condition
    with pytest.raises(TypeError, match="self_condition must be a bool or None"):
        sg.ScoreModel(make_unet(), sg.VPSDE(), self_condition="yes")


def test_score_model_refuses_x_self_for_a_plain_net():
    x, cond, x_self = inputs()
    model = sg.ScoreModel(make_unet(False), sg.VPSDE(), "v")
    with pytest.raises(ValueError, match="not self-conditioned"):
        model.denoise(x, 0.5, cond, x_self=x_self)


def test_guidance_passes_x_self_to_both_branches():
    x, cond, x_self = inputs()
    net = make_unet()
    t = torch.full((BATCH,), 0.5)
    with torch.no_grad():
        guided = sg.ScoreModel(net, sg.VPSDE(), "v", guidance_scale=2.5)(x, t, cond, x_self)
        out_c = net(x, t, cond, x_self)
        out_u = net(x, t, torch.zeros_like(cond), x_self)
    torch.testing.assert_close(guided, out_u + 2.5 * (out_c - out_u))


# --------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_feeds_the_previous_estimate(name: str):
    spy = Spy(make_unet())
    model = sg.ScoreModel(spy, sg.VPSDE(), "v")
    _, cond, _ = inputs()
    with torch.no_grad():
        sg.sample(model, (BATCH, 1, SIZE, SIZE), name, cond=cond,
                  generator=torch.Generator().manual_seed(3), **OPTIONS.get(name, {"steps": 3}))
    calls = spy.calls
    assert len(calls) >= 2
    assert calls[0][2] is None  # no estimate yet: the net reads zeros
    for (x, t, _, out), (_, _, x_self, _) in zip(calls[:-1], calls[1:], strict=True):
        alpha, sigma = model.coeffs(t, x)
        _, x0_hat = model.convert(out, x, alpha, sigma)
        assert x_self is not None
        torch.testing.assert_close(x_self, x0_hat, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "heun", "ancestral", "ode"])
def test_an_estimate_the_net_ignores_changes_nothing(name: str):
    """Self-conditioning only adds an input: a net that ignores it samples bit-exactly
    what the same weights sample without the flag."""
    net = make_unet()
    opts = OPTIONS.get(name, {"steps": 3})
    _, cond, _ = inputs()

    def draw(model: sg.ScoreModel) -> Tensor:
        with torch.no_grad():
            return sg.sample(model, (BATCH, 1, SIZE, SIZE), name, cond=cond,
                             generator=torch.Generator().manual_seed(5), **opts)

    ignoring = draw(sg.ScoreModel(Spy(net, use_x_self=False), sg.VPSDE(), "v"))
    plain = draw(sg.ScoreModel(lambda x, t, c: net(x, t, c), sg.VPSDE(), "v"))
    torch.testing.assert_close(ignoring, plain, rtol=0, atol=0)
    fed = draw(sg.ScoreModel(net, sg.VPSDE(), "v"))
    assert (fed - plain).abs().max() > 1e-4  # and one that reads it does differ


def test_segment_masks_do_not_depend_on_the_ensemble_size():
    """The estimate is per sample: a member's mask is the same with K = 1 or 3."""
    from scoregen.segmentation import segment

    model = sg.ScoreModel(make_unet(), sg.VPSDE.ddpm(), "v")
    _, cond, _ = inputs()
    one = segment(model, cond, sampler="ddim", steps=3, ensemble=1, seed=7)
    three = segment(model, cond, sampler="ddim", steps=3, ensemble=3, seed=7)
    torch.testing.assert_close(three.samples[:1], one.samples)


def test_likelihood_never_feeds_an_estimate():
    spy = Spy(make_unet(cond_mode=None))
    model = sg.ScoreModel(spy, sg.VPSDE(), "v")
    x = torch.randn(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 0.5
    sg.log_likelihood(model, x, exact=False, rtol=1e-2, atol=1e-2,
                      generator=torch.Generator().manual_seed(0))
    assert len(spy.calls) > 2 and all(c[2] is None for c in spy.calls)


# --------------------------------------------------------------------------- the loss
def loss_inputs(batch: int = 6) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(batch, 1, SIZE, SIZE, generator=gen).sign()
    cond = torch.randn(batch, 1, SIZE, SIZE, generator=gen)
    return x0, cond


def test_loss_feeds_the_gradient_free_first_estimate_to_the_chosen_rows():
    spy = Spy(make_unet().train())
    model = sg.ScoreModel(spy, sg.VPSDE.ddpm(), "v")
    x0, cond = loss_inputs()
    rows = torch.tensor([True, False, True, True, False, False])
    loss = sg.dsm_loss(model, x0, cond, self_cond=rows,
                       generator=torch.Generator().manual_seed(0))
    (x1, t1, prev1, out1), (x2, t2, x_self, _) = spy.calls
    assert prev1 is None and x1.shape[0] == 3  # the first call saw only the chosen rows
    torch.testing.assert_close(x1, x2[rows])
    alpha, sigma = model.coeffs(t1, x1)
    torch.testing.assert_close(x_self[rows], model.convert(out1, x1, alpha, sigma)[1])
    assert (x_self[~rows] == 0).all()
    assert not out1.requires_grad  # no gradient through the first estimate
    loss.backward()
    assert all(p.grad is not None for p in spy.parameters())


def test_loss_with_no_chosen_rows_is_the_loss_on_zeros():
    net = make_unet().train()
    x0, cond = loss_inputs()
    gen = torch.Generator().manual_seed(0)
    draw = draw_training_batch(sg.ScoreModel(net, sg.VPSDE.ddpm(), "v"), x0.shape, generator=gen)
    sc = sg.dsm_loss(sg.ScoreModel(net, sg.VPSDE.ddpm(), "v"), x0, cond, t=draw.t,
                     noise=draw.noise, p_self_cond=0.0)
    zeros = sg.dsm_loss(sg.ScoreModel(lambda x, t, c: net(x, t, c, None), sg.VPSDE.ddpm(), "v"),
                        x0, cond, t=draw.t, noise=draw.noise)
    torch.testing.assert_close(sc, zeros, rtol=0, atol=0)


def test_loss_refuses_rows_for_a_plain_model():
    x0, cond = loss_inputs()
    with pytest.raises(ValueError, match="self_cond must be a \\(6,\\) bool tensor"):
        sg.dsm_loss(sg.ScoreModel(make_unet(False), sg.VPSDE.ddpm(), "v"), x0, cond,
                    self_cond=torch.ones(6, dtype=torch.bool))


def test_the_mask_is_drawn_last_so_plain_draws_do_not_change():
    model = sg.ScoreModel(make_unet(False), sg.VPSDE.ddpm(), "v")
    plain = draw_training_batch(model, (64, 1, 4, 4), p_uncond=0.2,
                                generator=torch.Generator().manual_seed(9))
    sc = draw_training_batch(model, (64, 1, 4, 4), p_uncond=0.2, p_self_cond=0.5,
                             generator=torch.Generator().manual_seed(9))
    assert plain.self_cond is None
    for a, b in ((plain.t, sc.t), (plain.noise, sc.noise), (plain.keep, sc.keep)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert 16 <= int(sc.self_cond.sum()) <= 48  # about half of 64
    shards = [sc.shard(r, 2).self_cond for r in range(2)]
    torch.testing.assert_close(torch.stack(shards, 1).flatten(), sc.self_cond)
    with pytest.raises(ValueError, match="p_self_cond must be None or in"):
        draw_training_batch(model, (4, 1, 4, 4), p_self_cond=1.5)


def test_trainer_trains_and_reloads_a_self_conditioned_model(tmp_path):
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", cond_mode="add", cond_channels=1,
                                       self_condition=True)
    model = sg.ScoreModel(sg.UNet(config), sg.VPSDE.ddpm(), "v")
    x0, cond = loss_inputs(8)
    seen: list[int] = []
    model.net.stem.conv.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[0]))
    train = sg.TrainConfig(batch_size=8, max_steps=2, lr=1e-3, p_self_cond=0.5)
    with sg.Trainer(model, train, tmp_path, model_config=config.to_dict()) as trainer:
        for _ in range(2):
            trainer.step(x0, cond)
        path = trainer.save()
    # per step: one first call on the chosen rows (if any), then the full batch
    assert seen.count(8) == 2 and all(0 < n < 8 for n in seen if n != 8)
    with pytest.raises(ValueError, match="p_self_cond must be in"):
        sg.TrainConfig(p_self_cond=2.0)
    loaded = sg.load_model(path, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)), ema=False)
    assert loaded.self_condition
    x, cond2, x_self = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x, 0.3, cond2, x_self),
                                   model.net.eval()(x, 0.3, cond2, x_self))
