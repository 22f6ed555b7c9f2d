"""Unconditional chest X-ray synthesis: the seed talk's first experiment.

Trains an unconditional DDPM (the seed's schedule: 1000 steps, beta linear 1e-4..0.02,
eps-prediction, L_simple) on the X-ray images alone and saves a grid of generated
X-rays next to real ones.

    python examples/unconditional_xray.py                      # synthetic phantom
    python examples/unconditional_xray.py --data-root ../shared/data/covid-qu-ex-64

Writes to ``--out``: checkpoints, ``metrics.jsonl``, ``loss.png`` and
``samples.png`` (top half: generated, bottom half: real).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import scoregen as sg
from scoregen import devices
from scoregen.plotting import image_grid
from scoregen.segmentation import CovidQUDataset, PhantomDataset
from scoregen.train import CheckpointError, ExistingRunError, OutDirInUseError
from scoregen.train.checkpoint_dir import latest_checkpoint
from scoregen.train.figures import plot_loss

SDE_ARGS = {"num_steps": 1000, "beta_start": 1e-4, "beta_end": 0.02}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def threads_arg(text: str) -> int | str:
    return text if text == "auto" else positive_int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="COVID-QU-Ex folder; default: a synthetic phantom")
    p.add_argument("--size", type=positive_int, default=64)
    p.add_argument("--phantom-train", type=positive_int, default=512)
    p.add_argument("--preset", choices=tuple(sg.UNET_PRESETS), default=None,
                   help="U-Net size; default 'small' on real data, 'tiny' on the phantom")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="default 20 (real), 8 (phantom)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="total steps (overrides epochs)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema-decay", type=float, default=0.999)
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
    try:
        device = devices.resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"--device: {err}") from err
    if device.type == "cpu":
        torch.set_num_threads(devices.resolve_threads(args.threads))
    progress = not args.no_progress
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
    model = sg.ScoreModel(sg.UNet(config), sg.VPSDE.ddpm(**SDE_ARGS), prediction="eps")
    steps_per_epoch = len(data) // args.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(data)} images")
    epochs = args.epochs if args.epochs is not None else (20 if args.data_root else 8)
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
                                   "data": "phantom" if args.data_root is None
                                   else "COVID-QU-Ex"},
                         on_existing="overwrite" if args.overwrite else "refuse")
    if args.resume and trainer.resume():
        print(f"resumed at step {trainer.global_step}, run {trainer.run_id}")
    fitted = trainer.fit(data, steps=total, batch_fn=lambda b: (b["image"], None))
    if not fitted["ok"]:  # skipped non-finite steps: say so and exit non-zero
        raise SystemExit(fitted["status"])
    print(f"trained {trainer.global_step} steps in {trainer.train_seconds:.0f} s")
    plot_loss(trainer.read_metrics(), Path(args.out) / "loss.png",
              log_every=trainer.host.log_every)

    generated = sg.sample(trainer.ema_model.eval(), (args.samples, 1, args.size, args.size),
                          args.sampler, steps=args.sampling_steps, progress=progress,
                          generator=torch.Generator(device).manual_seed(args.seed))
    real = data.images[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
                       [:args.samples]]
    path = image_grid(torch.cat([generated.clamp(-1, 1).cpu(), real]), args.out / "samples.png",
                      nrow=max(1, args.samples // 2))
    print(f"done in {time.perf_counter() - t0:.0f} s wall\n"
          f"  samples:    {path} (top: generated with {args.sampler}, "
          f"{args.sampling_steps} steps; bottom: real)\n"
          f"  loss curve: {Path(args.out) / 'loss.png'}\n"
          f"  checkpoint: {latest_checkpoint(Path(args.out) / 'checkpoints')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
