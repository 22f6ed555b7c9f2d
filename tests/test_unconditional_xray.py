"""The unconditional X-ray example makes phantom X-rays, not noise (issue 11).

A short phantom run (tiny U-Net, 16x16) is trained with the example's defaults and its raw
samples (``samples.safetensors``, before the grid's clamp) are compared with the training
images here, independently of the example's own summary:

* the fraction of pixels in [-1, 1] (this run with the old ``--prediction eps``: 9 %,
  samples -144..+105; the old 64x64 default: 7 %, -152..+145);
* the Pearson correlation of the mean generated image with the mean real image (noise: ~0;
  the old eps run's: 0.51);
* the total-variation distance of the pixel histograms (0 = equal, 1 = disjoint; old eps run: 0.89).

Pure Gaussian noise of the same shape is scored by the same function and must fail every
bound, so the bounds are not ones that anything passes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scoregen.segmentation import PhantomDataset
from scoregen.train.checkpoint import load_checkpoint
from scoregen.train.checkpoint_dir import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, SIZE = 256, 16
#: The short run: the example's defaults (v-prediction, DDIM 50) except size and length.
RUN = ["--phantom-train", str(N_TRAIN), "--size", str(SIZE), "--steps", "200",
       "--samples", "64", "--threads", "1", "--no-progress"]
#: Bounds a run that learnt the phantom meets and noise (or the old run) cannot.
MIN_IN_RANGE, MIN_MEAN_CORR, MAX_HIST_TV = 0.9, 0.9, 0.25


def _load_example():
    path = ROOT / "examples" / "unconditional_xray.py"
    spec = importlib.util.spec_from_file_location("unconditional_xray", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quality(generated: torch.Tensor, real: torch.Tensor, bins: int = 32) -> dict[str, float]:
    """(fraction in [-1, 1], mean-image correlation, pixel-histogram TV) of raw samples."""
    in_range = ((generated >= -1) & (generated <= 1)).float().mean().item()
    means = torch.stack([generated.mean(0).flatten(), real.mean(0).flatten()])
    corr = torch.corrcoef(means)[0, 1].item()
    h_gen = torch.histc(generated.clamp(-1, 1), bins, -1, 1)
    h_real = torch.histc(real, bins, -1, 1)
    tv = 0.5 * (h_gen / h_gen.sum() - h_real / h_real.sum()).abs().sum().item()
    return {"in_range": in_range, "mean_image_corr": corr, "histogram_tv": tv}


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """(example module, out folder, stdout, training images) of one short default run."""
    out = tmp_path_factory.mktemp("uncond") / "run"
    example = _load_example()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert example.main([*RUN, "--out", str(out)]) == 0
    real = PhantomDataset(N_TRAIN, task="lung", size=SIZE, seed=0).images
    return example, out, buffer.getvalue(), real


def test_samples_look_like_the_phantom_not_noise(phantom_run):
    _, out, _, real = phantom_run
    generated = load_file(out / "samples.safetensors")["generated"]
    assert generated.shape == (64, 1, SIZE, SIZE)
    q = quality(generated, real)
    assert q["in_range"] >= MIN_IN_RANGE, q
    assert q["mean_image_corr"] >= MIN_MEAN_CORR, q
    assert q["histogram_tv"] <= MAX_HIST_TV, q


def test_noise_fails_every_bound(phantom_run):
    _, _, _, real = phantom_run
    noise = torch.randn(64, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    q = quality(noise, real)
    assert q["in_range"] < MIN_IN_RANGE
    assert q["mean_image_corr"] < MIN_MEAN_CORR
    assert q["histogram_tv"] > MAX_HIST_TV


def test_the_example_reports_the_same_numbers_and_records_the_parametrisation(phantom_run):
    example, out, stdout, real = phantom_run
    generated = load_file(out / "samples.safetensors")["generated"]
    saved = json.loads((out / "samples.json").read_text())["stats"]
    mine = quality(generated, real)
    for key, value in mine.items():
        assert saved[key] == pytest.approx(value, abs=1e-6), key
    record = json.loads((out / "results.json").read_text())
    assert record["samples"]["stats"] == saved and record["train_steps"] == 200
    assert record["sde"] == "vp" and record["prediction"] == "v"
    assert record["command"].startswith("python ") and record["commit"]
    assert record["wall_seconds"] >= record["train_seconds"] > 0
    assert math.isfinite(record["final_loss_mean_last10"])
    assert "of pixels in [-1, 1]" in stdout
    checkpoint = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert type(checkpoint.sde).__name__ == "VPSDE" and checkpoint.prediction == "v"
    assert example.DEFAULT_PREDICTION["vp"] == "v"


def test_sample_stats_of_the_data_against_itself_are_perfect():
    example = _load_example()
    real = PhantomDataset(32, task="lung", size=SIZE, seed=0).images
    stats = example.sample_stats(real, real)
    assert stats["in_range"] == 1.0 and stats["histogram_tv"] == pytest.approx(0.0, abs=1e-7)
    assert stats["mean_image_corr"] == pytest.approx(1.0) and stats["std_ratio"] == 1.0


@pytest.mark.parametrize("flags", [["--sde", "ve"], ["--prediction", "eps"],
                                   ["--prediction", "x0"]], ids=["ve", "eps", "x0"])
def test_the_sde_and_prediction_flags_run(tmp_path, flags):
    example = _load_example()
    with contextlib.redirect_stdout(io.StringIO()):
        assert example.main(["--phantom-train", "32", "--size", "16", "--batch-size", "16",
                             "--steps", "2", "--sampling-steps", "2", "--samples", "4",
                             "--threads", "1", "--no-progress", "--out", str(tmp_path),
                             *flags]) == 0
    checkpoint = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert type(checkpoint.sde).__name__ == ("VESDE" if flags[0] == "--sde" else "VPSDE")
    assert checkpoint.prediction == (flags[1] if flags[0] == "--prediction" else "v")


@pytest.mark.slow
def test_ve_v_model_has_a_sane_density_and_the_x0_model_does_not(tmp_path):
    """The phantom, 32x32, 300 steps under VE (~90 s each on one core): v (EDM's
    preconditioning) reads ~5 bits/dim, x0 (cannot learn the identity at small sigma) ~1e5."""
    import scoregen as sg
    from scoregen.likelihood import bits_per_dim

    example = _load_example()
    images = PhantomDataset(8, task="lung", size=32, seed=10_000).images
    k = ((images.clamp(-1, 1) + 1) / 2 * 255).round()
    bpd = {}
    for prediction in ("v", "x0"):
        out = tmp_path / prediction
        with contextlib.redirect_stdout(io.StringIO()):
            assert example.main(["--phantom-train", "256", "--size", "32", "--steps", "300",
                                 "--samples", "4", "--threads", "1", "--no-progress",
                                 "--sde", "ve", "--prediction", prediction,
                                 "--out", str(out)]) == 0
        file = latest_checkpoint(out / "checkpoints")
        model = sg.load_model(file, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)), ema=True)
        x = sg.dequantize(k, generator=torch.Generator().manual_seed(0))
        logp = sg.log_prob(model.eval(), x, exact=False, rtol=1e-3, atol=1e-3,
                           generator=torch.Generator().manual_seed(1))
        bpd[prediction] = float(bits_per_dim(logp, x[0].numel(), 256).mean())
    assert math.isfinite(bpd["v"]) and 1 < bpd["v"] < 8, bpd
    assert bpd["x0"] > 1000, bpd
