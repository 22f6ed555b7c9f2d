"""Segmentation as conditional generation: sampling K masks, fusing, scoring."""

from __future__ import annotations

import pytest
import torch

import scoregen as sg
from scoregen.segmentation import evaluate_segmentation, predict_masks, segment


def _oracle(x, t, cond):
    """An x0-net that knows the answer: the mask is where the image is bright."""
    return torch.where(cond > 0, 1.0, -1.0).to(x.dtype)


def _images(n=6, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=gen) * 2 - 1
    masks = torch.where(images > 0, 1.0, -1.0)
    return images, masks


@pytest.mark.parametrize("sampler, steps", [("ddim", 5), ("ancestral", 20), ("ode", None)])
def test_an_exact_conditional_model_segments_perfectly(sampler, steps):
    images, masks = _images()
    model = sg.ScoreModel(_oracle, sg.VPSDE.ddpm(), prediction="x0")
    out = segment(model, images, sampler=sampler, steps=steps, ensemble=3,
                  generator=torch.Generator().manual_seed(0))
    assert out.samples.shape == (3, 6, 1, 8, 8) and out.fused.shape == (6, 1, 8, 8)
    assert 0.0 <= out.samples.min() and out.samples.max() <= 1.0
    metrics = evaluate_segmentation(out, images, masks)
    assert metrics["all"]["dice"] == pytest.approx(1.0)
    assert metrics["all"]["n_images"] == 6
    assert out.uncertainty.max() < 1e-3 and out.seconds_per_image > 0


def test_ensemble_disagreement_shows_as_uncertainty_and_fusion_helps():
    images, masks = _images(n=4, size=16)

    def noisy(x, t, cond):  # right on average, but each draw flips pixels at random
        return _oracle(x, t, cond) + 2.5 * torch.sin(50 * x)

    model = sg.ScoreModel(noisy, sg.VPSDE.ddpm(), prediction="x0")
    single = segment(model, images, steps=10, ensemble=1,
                     generator=torch.Generator().manual_seed(0))
    many = segment(model, images, steps=10, ensemble=9, fuse_method="vote",
                   generator=torch.Generator().manual_seed(0))
    assert many.uncertainty.mean() > 0.01
    d1 = evaluate_segmentation(single, images, masks)["all"]["dice"]
    d9 = evaluate_segmentation(many, images, masks)["all"]["dice"]
    assert d9 > d1


def test_groups_report_metrics_per_subset_and_conditioning_reaches_the_net():
    images, masks = _images(n=6)
    seen = []

    def net(x, t, cond):
        seen.append(cond.shape)
        return _oracle(x, t, cond)

    model = sg.ScoreModel(net, sg.VPSDE.ddpm(), prediction="x0")
    out = segment(model, images, steps=2, ensemble=2, batch_size=4)
    assert seen[0] == (8, 1, 8, 8)  # K * batch conditions per sampler call
    group = torch.tensor([True, True, False, False, True, False])
    metrics = evaluate_segmentation(out, images, masks, groups={"COVID-19": group})
    assert set(metrics) == {"all", "COVID-19"} and metrics["COVID-19"]["n_images"] == 3


def test_a_supervised_predictor_is_scored_the_same_way():
    images, masks = _images()
    probs = predict_masks(lambda im: 10 * im, images, batch_size=4)
    assert probs.shape == images.shape and ((probs > 0.5) == (masks > 0)).all()
    metrics = evaluate_segmentation(lambda im: (predict_masks(lambda z: 10 * z, im) > 0.5)
                                    .float(), images, masks)
    assert metrics["all"]["dice"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"ensemble": 0}, "ensemble"), ({"fuse_method": "max"}, "fuse_method"),
     ({"sampler": "heun3"}, "unknown sampler")],
)
def test_bad_options(kwargs, match):
    model = sg.ScoreModel(_oracle, sg.VPSDE.ddpm(), prediction="x0")
    with pytest.raises(ValueError, match=match):
        segment(model, _images()[0], steps=2, **kwargs)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        segment(model, torch.zeros(3, 8, 8), steps=2)


class _RecordingBar:
    """Stands in for tqdm: records the position after every update."""

    def __init__(self, *args, total=None, disable=False, **kwargs):
        self.total, self.n, self.positions = total, 0.0, []
        _RecordingBar.last = self

    def update(self, k):
        self.n += k
        self.positions.append(self.n)

    def close(self):
        pass


@pytest.mark.parametrize(("sampler", "steps", "moves"), [("ddim", 4, 4 + 1), ("ode", None, 1)],
                         ids=["fixed-grid", "adaptive"])
def test_the_progress_bar_moves_with_every_sampler_step(monkeypatch, sampler, steps, moves):
    import scoregen.segmentation.inference as inference

    monkeypatch.setattr(inference, "tqdm", _RecordingBar)
    images, _ = _images(n=6)
    model = sg.ScoreModel(_oracle, sg.VPSDE.ddpm(), prediction="x0")
    seen = []
    segment(model, images, sampler=sampler, steps=steps, ensemble=2, batch_size=64,
            progress=True, callback=lambda info: seen.append(info["i"]))
    bar = _RecordingBar.last
    # one batch of 6 images: 6/4 per DDIM step (not 0 until the batch ends), then the
    # batch's exact remainder; an adaptive ODE has no step count: one move per batch
    assert len(bar.positions) == moves and bar.positions[-1] == pytest.approx(6)
    if steps:
        assert bar.positions[0] == pytest.approx(6 / steps)
    assert seen  # a callback the caller passed still runs


# --------------------------------------------------------------------------- one generator per mask
def _noisy(x, t, cond):
    """An x0-net whose answer depends on x_t, so every noise draw changes the mask."""
    return _oracle(x, t, cond) + 2.5 * torch.sin(50 * x)


#: (sampler, options): stochastic (fresh noise at every step) and deterministic (x_T only)
PER_SAMPLE = {"ddim-eta": ("ddim", {"steps": 6, "eta": 1.0}),
              "ancestral": ("ancestral", {"steps": 6}),
              "ddim": ("ddim", {"steps": 6})}


@pytest.mark.parametrize("case", list(PER_SAMPLE))
def test_masks_do_not_change_with_batch_size(case):
    sampler, opts = PER_SAMPLE[case]
    images, _ = _images(n=7)
    model = sg.ScoreModel(_noisy, sg.VPSDE.ddpm(), prediction="x0")
    one = segment(model, images, sampler=sampler, ensemble=2, batch_size=1, seed=5, **opts)
    seven = segment(model, images, sampler=sampler, ensemble=2, batch_size=7, seed=5, **opts)
    three = segment(model, images, sampler=sampler, ensemble=2, batch_size=3, seed=5, **opts)
    assert one.samples.std() > 0.1  # the masks are noise-dependent, so this means something
    torch.testing.assert_close(seven.samples, one.samples, rtol=0, atol=0)
    torch.testing.assert_close(three.samples, one.samples, rtol=0, atol=0)
    # image i's masks do not depend on the images after it (i is its index in images)
    first = segment(model, images[:3], sampler=sampler, ensemble=2, seed=5, **opts)
    torch.testing.assert_close(first.samples, one.samples[:, :3], rtol=0, atol=0)


@pytest.mark.parametrize("case", list(PER_SAMPLE))
def test_the_first_members_of_a_larger_ensemble_are_the_smaller_ensemble(case):
    sampler, opts = PER_SAMPLE[case]
    images, _ = _images(n=3)
    model = sg.ScoreModel(_noisy, sg.VPSDE.ddpm(), prediction="x0")
    k2 = segment(model, images, sampler=sampler, ensemble=2, seed=11, **opts)
    k4 = segment(model, images, sampler=sampler, ensemble=4, seed=11, batch_size=2, **opts)
    torch.testing.assert_close(k4.samples[:2], k2.samples, rtol=0, atol=0)
    assert not torch.allclose(k4.samples[2], k4.samples[0])  # members differ from each other


def test_the_seed_or_the_generator_fixes_the_masks():
    images, _ = _images(n=3)
    model = sg.ScoreModel(_noisy, sg.VPSDE.ddpm(), prediction="x0")

    def run(**kw):
        return segment(model, images, steps=4, ensemble=2, **kw).samples

    assert torch.equal(run(seed=1), run(seed=1)) and not torch.equal(run(seed=1), run(seed=2))
    gen_a = run(generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen_a, run(generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(run(generator=g), run(generator=g))  # the generator advances
    with pytest.raises(TypeError, match="seed must be an int"):
        run(seed=1.5)


# --------------------------------------------------------------------------- encode once
def _unet_model(cond_mode):
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", cond_mode=cond_mode, cond_channels=1)
    return sg.ScoreModel(sg.UNet(config).eval(), sg.VPSDE.ddpm(), prediction="x0")


@pytest.mark.parametrize("cond_mode", ["add", "concat"])
def test_segment_gives_the_same_masks_with_the_encoded_condition(cond_mode):
    images, _ = _images(n=3, size=16)
    model = _unet_model(cond_mode)
    kw = dict(steps=4, ensemble=2, batch_size=2, seed=3)
    fast = segment(model, images, **kw)
    slow = segment(model, images, encode_condition=False, **kw)
    torch.testing.assert_close(fast.samples, slow.samples, rtol=1e-5, atol=1e-5)
    assert fast.samples.std() > 0.01  # not a constant net


@pytest.mark.parametrize("encode, calls", [(True, 2), (False, 2 * 4)], ids=["encoded", "raw"])
def test_segment_encodes_each_batch_once(encode, calls):
    images, _ = _images(n=3, size=16)  # batch_size 2: two sampler calls of 4 steps
    model = _unet_model("add")
    seen = []
    model.net.stem.encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    segment(model, images, steps=4, ensemble=3, batch_size=2, seed=0, encode_condition=encode)
    assert len(seen) == calls
    if encode:
        assert seen == [2, 1]  # the b images, not the K * b repeated conditions


def test_segment_with_guidance_falls_back_to_the_raw_condition():
    images, _ = _images(n=2, size=16)
    model = _unet_model("add")
    model.guidance_scale = 2.0
    kw = dict(steps=3, ensemble=2, seed=4)
    torch.testing.assert_close(segment(model, images, **kw).samples,
                               segment(model, images, encode_condition=False, **kw).samples)
