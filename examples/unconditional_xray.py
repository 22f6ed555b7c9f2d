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
from scoregen.plotting import image_grid, plot_curves
from scoregen.segmentation import CovidQUDataset, PhantomDataset
from scoregen.train import loss_curve

SDE_ARGS = {"num_steps": 1000, "beta_start": 1e-4, "beta_end": 0.02}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="COVID-QU-Ex folder; default: a synthetic phantom")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--phantom-train", type=int, default=512)
    p.add_argument("--preset", choices=tuple(sg.UNET_PRESETS), default=None,
                   help="U-Net size; default 'small' on real data, 'tiny' on the phantom")
    p.add_argument("--epochs", type=int, default=None, help="default 20 (real), 8 (phantom)")
    p.add_argument("--steps", type=int, default=None, help="total steps (overrides epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--sampler", choices=tuple(sg.SAMPLERS), default="ddim")
    p.add_argument("--sampling-steps", type=int, default=50)
    p.add_argument("--samples", type=int, default=16, help="generated images in the grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/unconditional_xray"))
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def plot_loss(trainer: sg.Trainer, path: Path) -> None:
    """The DSM loss curve of ``trainer``'s ``metrics.jsonl`` (the trainer draws no figures)."""
    steps, losses = loss_curve(trainer.read_metrics())
    if steps:
        name = f"DSM loss (mean of {trainer.host.log_every} steps)"
        plot_curves({name: (steps, losses)}, path, xlabel="step",
                    logy=[name] if min(losses) > 0 else [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = devices.resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"--device: {err}") from err
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
    total = args.steps or (args.epochs or (20 if args.data_root else 8)) * steps_per_epoch
    train_config = sg.TrainConfig(
        lr=args.lr, warmup_steps=min(100, total // 10), lr_schedule="cosine",
        min_lr=args.lr * 0.05, max_steps=total, batch_size=args.batch_size,
        ema_decay=args.ema_decay, precision=devices.default_precision(device), seed=args.seed,
    )
    host = sg.HostOptions(checkpoint_every=steps_per_epoch, keep_last=2, progress=progress)
    trainer = sg.Trainer(model, train_config, args.out, host=host,
                         model_config=config.to_dict(), device=device)
    if args.resume and trainer.resume():
        print(f"resumed at step {trainer.global_step}")
    t0 = time.perf_counter()
    trainer.fit(data, steps=total, batch_fn=lambda b: (b["image"], None))
    print(f"trained {trainer.global_step} steps in {time.perf_counter() - t0:.0f} s")
    plot_loss(trainer, Path(args.out) / "loss.png")

    generated = sg.sample(trainer.ema_model.eval(), (args.samples, 1, args.size, args.size),
                          args.sampler, steps=args.sampling_steps, progress=progress,
                          generator=torch.Generator(device).manual_seed(args.seed))
    real = data.images[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
                       [:args.samples]]
    path = image_grid(torch.cat([generated.clamp(-1, 1).cpu(), real]), args.out / "samples.png",
                      nrow=max(1, args.samples // 2))
    print(f"wrote {path} (top: generated with {args.sampler}, {args.sampling_steps} steps; "
          "bottom: real)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
