"""Unconditional chest X-ray synthesis: the seed talk's first experiment.

Trains an unconditional diffusion model on the X-ray images alone and saves a grid of
generated X-rays next to real ones. The forward process is the talk's: DDPM's schedule
(1000 steps, beta linear 1e-4..0.02) as a VP SDE, or with ``--sde ve`` NCSN's geometric
sigmas (0.01..50, the talk's second SDE). The loss is L_simple on what the net predicts.

    python examples/unconditional_xray.py                      # synthetic phantom
    python examples/unconditional_xray.py --data-root ../shared/data/covid-qu-ex-64 --size 64

Why v-prediction and not the talk's eps (``--prediction eps`` restores it).
DDIM and every ODE sampler rebuild the image from ``x0_hat = (x_t - sigma eps_hat) /
alpha``; at the end of DDPM's schedule ``sigma / alpha = 157`` (``alpha(1)^2 =
alphas_cumprod[-1] = 4.0e-5``), so an eps error delta at low signal-to-noise becomes an
x0 error of up to 157 delta, and a deterministic sampler carries it to the end (in
``x / alpha`` it integrates ``eps_hat d(sigma / alpha)`` over sigma / alpha from 157 to 0).
A briefly trained net does not learn ``eps_hat ~ x_t`` to 1 %: the earlier default (eps,
64x64, 128 steps) had an eps MSE of 0.03 at every t >= 0.5, an x0 MSE of 730 at t = 1, and
DDIM-50 samples from -152 to +145 with 7 % of the pixels in [-1, 1] (the EMA and the raw
net alike: the EMA's warm-up is not the cause). With v-prediction (Salimans & Ho 2022)
``x0_hat = alpha x_t - sigma v_hat``: the same error enters x0 multiplied by sigma <= 1.
``--sde ve`` uses v as well, which under VE is EDM's preconditioning (see
:mod:`scoregen.model`). Measured on the phantom (32x32, 300 steps, 2026-12-02, AMD EPYC, 1
thread each; raw DDIM-50 pixels in [-1, 1] / mean-image corr / bits/dim of 8 phantom
images): NCSN's eps 17 % / 0.22 / 5.8 (``x0_hat = x_t - sigma eps_hat`` amplifies eps
errors by sigma up to 50), x0 97 % / 0.97 / 179,541 (the x0 net cannot represent the
identity at small sigma, so the probability-flow ODE expands data by ~1e4 and its
density is meaningless), v 97 % / 0.98 / 5.3.

Defaults are sized for a first run on a CPU: the phantom at 32x32, the ``tiny`` U-Net,
40 epochs of the 512-image phantom (640 steps), DDIM 50. Measured 2026-12-02 on 2 idle
CPU cores (Intel Xeon, torch's default threads): 156 s wall; 97.2 % of raw pixels in
[-1, 1], mean-image correlation with the training images 0.990, histogram TV 0.080 —
recognisable phantom X-rays. Real data: pass ``--size 64`` (the stored
images) and, for the talk's model, ``--preset seed`` and more ``--epochs``.

Writes to ``--out``: checkpoints, ``metrics.jsonl``, ``loss.png``, ``samples.png`` (top
half: generated, bottom half: real), ``samples.safetensors`` (the raw generated samples,
before the grid's clamp to [-1, 1]) and ``samples.json`` (:func:`sample_stats` of them
against the training images: a run that produced noise says so there), and
``results.json``: those stats with the command, the commit it started from, the date, the
hardware and the wall time — the record ``benchmarks/results/`` keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import scoregen as sg
from scoregen import devices
from scoregen.cli_types import positive_int, threads_arg
from scoregen.plotting import image_grid
from scoregen.provenance import git_commit
from scoregen.segmentation import CovidQUDataset, PhantomDataset
from scoregen.train import CheckpointError, ExistingRunError, OutDirInUseError
from scoregen.train.checkpoint_dir import latest_checkpoint
from scoregen.train.distributed import cleanup_distributed
from scoregen.train.figures import plot_loss

SDE_ARGS = {"num_steps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
#: Default image side and epochs: real data at its stored 64x64; the phantom smaller and
#: longer, so that a first CPU run learns it in minutes (see the module docstring).
REAL_SIZE, REAL_EPOCHS = 64, 20
PHANTOM_SIZE, PHANTOM_EPOCHS = 32, 40
#: VE (NCSN) noise range: score_sde's defaults for images in [-1, 1].
VE_ARGS = {"sigma_min": 0.01, "sigma_max": 50.0}
#: Default parametrisation per SDE (see the module docstring for why VP uses v).
DEFAULT_PREDICTION = {"vp": "v", "ve": "v"}


def make_sde(kind: str) -> sg.SDE:
    """``"vp"``: DDPM's discrete schedule (the talk's); ``"ve"``: NCSN's geometric sigmas."""
    if kind == "vp":
        return sg.VPSDE.ddpm(**SDE_ARGS)
    if kind == "ve":
        return sg.VESDE(**VE_ARGS)
    raise ValueError(f"sde must be 'vp' or 've', got {kind!r}")


def sample_stats(generated: torch.Tensor, real: torch.Tensor, bins: int = 32) -> dict[str, float]:
    """How far raw samples (N, 1, S, S) are from the real images (M, 1, S, S) in [-1, 1].

    ``in_range``: fraction of generated pixels in [-1, 1] (before any clamp);
    ``mean_image_corr``: Pearson correlation of the two mean images (noise: ~0);
    ``histogram_tv``: total-variation distance of the pixel histograms (``bins`` bins on
    [-1, 1], generated pixels clamped into it; 0 = equal, 1 = disjoint);
    ``std_ratio``: mean per-pixel std across generated samples over the same for real.
    """
    g, r = generated.detach().float().cpu(), real.detach().float().cpu()
    in_range = ((g >= -1) & (g <= 1)).float().mean().item()
    means = torch.stack([g.mean(0).flatten(), r.mean(0).flatten()])
    corr = torch.corrcoef(means)[0, 1].item()
    hist_g = torch.histc(g.clamp(-1, 1), bins, -1, 1)
    hist_r = torch.histc(r.clamp(-1, 1), bins, -1, 1)
    tv = 0.5 * (hist_g / hist_g.sum() - hist_r / hist_r.sum()).abs().sum().item()
    ratio = (g.std(0).mean() / r.std(0).mean()).item()
    return {"in_range": in_range, "mean_image_corr": corr, "histogram_tv": tv,
            "std_ratio": ratio, "min": g.min().item(), "max": g.max().item()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="COVID-QU-Ex folder; default: a synthetic phantom")
    p.add_argument("--size", type=positive_int, default=None,
                   help=f"image side; default {REAL_SIZE} (real), {PHANTOM_SIZE} (phantom)")
    p.add_argument("--phantom-train", type=positive_int, default=512)
    p.add_argument("--preset", choices=tuple(sg.UNET_PRESETS), default=None,
                   help="U-Net size; default 'small' on real data, 'tiny' on the phantom")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"default {REAL_EPOCHS} (real), {PHANTOM_EPOCHS} (phantom)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="total steps (overrides epochs)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--sde", choices=("vp", "ve"), default="vp",
                   help="vp: DDPM's schedule (the talk's); ve: NCSN's sigmas "
                        f"{VE_ARGS['sigma_min']}..{VE_ARGS['sigma_max']}")
    p.add_argument("--prediction", choices=sg.PREDICTIONS, default=None,
                   help="what the net predicts; default "
                        + ", ".join(f"{v} ({k})" for k, v in DEFAULT_PREDICTION.items()))
    p.add_argument("--sampler", choices=tuple(sg.SAMPLERS), default="ddim")
    p.add_argument("--sampling-steps", type=positive_int, default=50)
    p.add_argument("--samples", type=positive_int, default=16, help="generated images in the grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=threads_arg, default="auto",
                   help="torch CPU threads; auto: the cores other processes leave free")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="move another run found in --out aside to --out/previous-<run id>")
    p.add_argument("--out", type=Path, default=Path("runs/unconditional_xray"))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="full traceback on an error")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, TypeError, OSError, CheckpointError, ExistingRunError,
            OutDirInUseError) as err:
        if args.debug:
            raise
        text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"unconditional_xray.py: error: {text} (--debug shows the traceback)",
              file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    commit = git_commit(__file__)  # the code this run loads, read before it can change
    try:
        device = devices.resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"--device: {err}") from err
    if device.type == "cpu":
        torch.set_num_threads(devices.resolve_threads(args.threads))
    progress = not args.no_progress
    if args.size is None:
        args.size = PHANTOM_SIZE if args.data_root is None else REAL_SIZE
    if args.data_root is None:
        data = PhantomDataset(args.phantom_train, task="lung", size=args.size, seed=args.seed)
        print(f"data: synthetic chest X-ray phantom (no --data-root), {len(data)} images")
    else:
        data = CovidQUDataset(args.data_root, "Train", task="lung", size=args.size,
                              progress=progress)
        print(f"data: COVID-QU-Ex at {data.split_root}, {len(data)} Train images")
    preset = args.preset or ("small" if args.data_root is not None else "tiny")
    config = sg.UNetConfig.from_preset(preset, in_channels=1, out_channels=1)
    torch.manual_seed(args.seed)
    prediction = args.prediction or DEFAULT_PREDICTION[args.sde]
    model = sg.ScoreModel(sg.UNet(config), make_sde(args.sde), prediction=prediction)
    print(f"model: U-Net '{preset}', {args.sde.upper()} SDE, {prediction}-prediction")
    steps_per_epoch = len(data) // args.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(data)} images")
    epochs = args.epochs if args.epochs is not None else (
        REAL_EPOCHS if args.data_root else PHANTOM_EPOCHS)
    total = args.steps if args.steps is not None else epochs * steps_per_epoch
    train_config = sg.TrainConfig(
        lr=args.lr, warmup_steps=min(100, total // 10), lr_schedule="cosine",
        min_lr=args.lr * 0.05, max_steps=total, batch_size=args.batch_size,
        ema_decay=args.ema_decay, precision=devices.default_precision(device), seed=args.seed,
    )
    host = sg.HostOptions(checkpoint_every=steps_per_epoch, keep_last=2, progress=progress)
    trainer = sg.Trainer(model, train_config, args.out, host=host,
                         model_config=config.to_dict(), device=device,
                         run_info={"example": "unconditional_xray", "image_size": args.size,
                                   "sde": args.sde, "prediction": prediction,
                                   "data": "phantom" if args.data_root is None
                                   else "COVID-QU-Ex"},
                         on_existing="overwrite" if args.overwrite else "refuse")
    if args.resume and trainer.resume():
        print(f"resumed at step {trainer.global_step}, run {trainer.run_id}")
    fitted = trainer.fit(data, steps=total, batch_fn=lambda b: (b["image"], None))
    if not fitted["ok"]:  # skipped non-finite steps: say so and exit non-zero
        raise SystemExit(fitted["status"])
    trainer.leave_distributed()  # its DDP reducer must go before the process group
    cleanup_distributed()  # every rank has left fit() together; a no-op on one process
    if not trainer.is_main:  # under torchrun, rank 0 samples and writes the results
        return 0
    print(f"trained {trainer.global_step} steps in {trainer.train_seconds:.0f} s")
    plot_loss(trainer.read_metrics(), Path(args.out) / "loss.png",
              log_every=trainer.host.log_every)

    generated = sg.sample(trainer.ema_model.eval(), (args.samples, 1, args.size, args.size),
                          args.sampler, steps=args.sampling_steps, progress=progress,
                          generator=torch.Generator(device).manual_seed(args.seed))
    generated = generated.float().cpu()
    real = data.images[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
                       [:args.samples]]
    out = Path(args.out)
    save_file({"generated": generated.contiguous()}, out / "samples.safetensors")
    stats = sample_stats(generated, data.images)
    (out / "samples.json").write_text(json.dumps(
        {"sampler": args.sampler, "sampling_steps": args.sampling_steps,
         "samples": args.samples, "stats": stats}, indent=2) + "\n")
    losses = [row["loss"] for row in trainer.read_metrics() if "loss" in row][-10:]
    (out / "results.json").write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "commit": commit,
        "date": time.strftime("%Y-%m-%d"), "hardware": devices.describe_device(device),
        "torch": torch.__version__, "sde": args.sde, "prediction": prediction,
        "preset": preset, "image_size": args.size,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": round(trainer.train_seconds, 1), "train_steps": trainer.global_step,
        "final_loss_mean_last10": sum(losses) / len(losses) if losses else None,
        "samples": {"sampler": args.sampler, "sampling_steps": args.sampling_steps,
                    "samples": args.samples, "stats": stats},
    }, indent=2) + "\n")
    path = image_grid(torch.cat([generated.clamp(-1, 1), real]), out / "samples.png",
                      nrow=max(1, args.samples // 2))
    print(f"samples against the {len(data)} training images: "
          f"{stats['in_range']:.1%} of pixels in [-1, 1] (raw range "
          f"{stats['min']:.2f}..{stats['max']:.2f}), mean-image correlation "
          f"{stats['mean_image_corr']:.3f}, pixel-histogram TV distance "
          f"{stats['histogram_tv']:.3f}, per-pixel std ratio {stats['std_ratio']:.2f}")
    print(f"done in {time.perf_counter() - t0:.0f} s wall\n"
          f"  samples:    {path} (top: generated with {args.sampler}, "
          f"{args.sampling_steps} steps; bottom: real)\n"
          f"  raw:        {out / 'samples.safetensors'}, stats in {out / 'samples.json'}\n"
          f"  loss curve: {out / 'loss.png'}\n"
          f"  checkpoint: {latest_checkpoint(out / 'checkpoints')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
