"""What diffusion buys for segmentation: Dice vs sampling steps, vs ensemble size, and a
supervised baseline trained with the same data and budget.

From a checkpoint of ``examples/covid_qu_seg.py``:

1. Dice vs sampling steps (1, 2, 5, 10, 25, 50) for DDIM and other samplers, with the
   time per image;
2. Dice and time per image vs ensemble size K (1, 3, 5, 9), masks fused by the mean;
3. a supervised baseline: the same U-Net (same preset, the X-ray as its input instead of
   the noisy mask, t fixed) trained directly as a segmenter with BCE + soft-Dice loss,
   with the checkpoint's number of steps, batch size and learning rate.

All scored with the seed's protocol (micro metrics, threshold 0.5; infection also on
COVID-19 images only). Writes JSON, a markdown table and PNG plots to ``--out``.

    python benchmarks/segmentation.py \\
        --checkpoint runs/lung/checkpoints/step_00004640.safetensors \\
        --data-root ../shared/data/covid-qu-ex-64 --out benchmarks/results/seg_lung

Task and image size come from the checkpoint's ``run_info`` (a contradicting flag is
refused). Default ``--out``: ``runs/segmentation``; pass ``benchmarks/results/...`` on
purpose for results meant to be committed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import scoregen as sg
from scoregen import devices
from scoregen.plotting import plot_curves
from scoregen.samplers import SPACINGS
from scoregen.segmentation import (
    CovidQUDataset,
    PhantomDataset,
    SegmentationDataset,
    class_groups,
    evaluate_segmentation,
    metrics_table,
    predict_masks,
    random_subset,
    segment,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data-root", type=Path, default=None,
                   help="COVID-QU-Ex folder; default: the synthetic phantom (seed 0)")
    p.add_argument("--task", choices=("lung", "infection"), default=None,
                   help="default: the checkpoint's (lung for one without run_info)")
    p.add_argument("--split", default="Val")
    p.add_argument("--size", type=int, default=None,
                   help="default: the checkpoint's (64 for one without run_info)")
    p.add_argument("--eval-samples", type=int, default=512, help="images for the step sweep")
    p.add_argument("--steps", default="1,2,5,10,25,50", help="sampling steps to sweep")
    p.add_argument("--samplers", default="ddim,ancestral", help="samplers to sweep")
    p.add_argument("--ensembles", default="1,3,5,9", help="ensemble sizes K")
    p.add_argument("--ensemble-steps", type=int, default=10, help="DDIM steps per member")
    p.add_argument("--spacing", choices=SPACINGS, default="uniform",
                   help="time grid of every sampler (uniform: the grid of the committed results)")
    p.add_argument("--ensemble-samples", type=int, default=128, help="images for the K sweep")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="supervised training steps; default: the checkpoint's")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--phantom-train", type=int, default=512)
    p.add_argument("--phantom-val", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: stable times on a shared machine)")
    p.add_argument("--out", type=Path, default=Path("runs/segmentation"),
                   help="output folder; results meant to be committed go under "
                        "benchmarks/results/ (pass it on purpose)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def load_data(args: argparse.Namespace) -> tuple[SegmentationDataset, SegmentationDataset, str]:
    if args.data_root is None:
        train = PhantomDataset(args.phantom_train, task=args.task, size=args.size, seed=args.seed)
        val = PhantomDataset(args.phantom_val, task=args.task, size=args.size,
                             seed=args.seed + 10_000)
        return train, val, "synthetic phantom"
    train = CovidQUDataset(args.data_root, "Train", task=args.task, size=args.size,
                           progress=not args.no_progress)
    val = CovidQUDataset(args.data_root, args.split, task=args.task, size=args.size,
                         progress=not args.no_progress)
    return train, val, f"COVID-QU-Ex {val.split_root}"


# ----------------------------------------------------------------------------- baseline
class Segmenter(torch.nn.Module):
    """The diffusion U-Net used as a plain segmenter: the X-ray is its input, t = 0."""

    def __init__(self, config: sg.UNetConfig) -> None:
        super().__init__()
        self.unet = sg.UNet(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        t = torch.zeros(images.shape[0], device=images.device)
        return self.unet(images, t, None)  # logits


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice over each image (Milletari et al. 2016), averaged over the batch."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def train_baseline(train_ds: SegmentationDataset, config: sg.UNetConfig, steps: int,
                   batch_size: int, lr: float, seed: int, progress: bool
                   ) -> tuple[Segmenter, float]:
    torch.manual_seed(seed)
    model = Segmenter(config)
    ema = sg.EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = min(100, steps // 10)

    def lr_at(i: int) -> float:  # the diffusion runs' schedule: warm-up then cosine to 5%
        if i < warmup:
            return lr * (i + 1) / warmup
        frac = (i - warmup) / max(1, steps - warmup)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(seed)
    images, masks = train_ds.images, (train_ds.masks + 1) / 2
    t0 = time.perf_counter()
    order = torch.randperm(len(images), generator=gen)
    pos = 0
    for i in tqdm(range(steps), desc="supervised baseline", disable=not progress):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(i)
        logits = model(images[idx])
        loss = F.binary_cross_entropy_with_logits(logits, masks[idx]) + soft_dice_loss(
            logits, masks[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
    return ema.module.eval(), time.perf_counter() - t0


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    ck = sg.load_checkpoint(args.checkpoint)
    info = ck.run_info
    for flag, key, default in (("task", "task", "lung"), ("size", "image_size", 64)):
        given, saved = getattr(args, flag), info.get(key)
        if given is not None and saved is not None and given != saved:
            raise SystemExit(f"--{flag} {given} does not match the checkpoint: "
                             f"{args.checkpoint} was trained with {flag} {saved}")
        setattr(args, flag, given if given is not None else (saved or default))
    model = sg.load_model(args.checkpoint, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)))
    train_cfg = ck.train_config or {}
    unet_cfg = ck.model_config or {}
    train_ds, val_ds, note = load_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    idx = random_subset(len(val_ds), args.eval_samples, args.seed)
    images, masks = val_ds.images[idx], val_ds.masks[idx]
    grp = class_groups(args.task, val_ds, idx)
    headline = "COVID-19" if grp else "all"
    # the ensemble study's images, drawn (and checked) before any sampling: a random part of
    # the sweep's, since ``idx`` is sorted and the data by class (its head is all COVID-19)
    ens_idx = idx[random_subset(len(idx), args.ensemble_samples, args.seed + 1)]
    ens_grp = class_groups(args.task, val_ds, ens_idx)
    if bool(grp) != bool(ens_grp):
        raise ValueError(f"--ensemble-samples {args.ensemble_samples} drew images of one class "
                         f"only; the {headline!r} group needs a larger subset")
    rows: list[dict[str, Any]] = []

    def result(baseline: dict[str, Any] | None) -> dict[str, Any]:
        return {"checkpoint": str(args.checkpoint), "checkpoint_step": ck.step, "data": note,
                "task": args.task, "split": args.split, "n_images": len(idx),
                "headline_group": headline, "command": " ".join(sys.argv),
                "hardware": devices.describe_device("cpu"),
                "date": time.strftime("%Y-%m-%d"), "rows": rows, "baseline": baseline}

    def save(res: dict[str, Any]) -> None:
        """After every study, so a crash later keeps what was measured."""
        (args.out / "segmentation.json").write_text(json.dumps(res, indent=2))
        (args.out / "segmentation.md").write_text(markdown(res))

    for sampler in args.samplers.split(","):
        for steps in _ints(args.steps):
            out = segment(model, images, sampler=sampler, steps=steps, spacing=args.spacing,
                          batch_size=128,
                          generator=torch.Generator().manual_seed(args.seed))
            m = evaluate_segmentation(out, images, masks, groups=grp)
            rows.append({"study": "steps", "sampler": sampler, "steps": steps, "ensemble": 1,
                         "n_images": len(idx), "seconds_per_image": out.seconds_per_image,
                         "metrics": m})
            print(f"{sampler:>10s} steps {steps:3d}: Dice[{headline}] "
                  f"{m[headline]['dice']:.4f}  {1000 * out.seconds_per_image:.1f} ms/image",
                  flush=True)

        save(result(None))

    for k in _ints(args.ensembles):
        out = segment(model, val_ds.images[ens_idx], steps=args.ensemble_steps,
                      spacing=args.spacing, ensemble=k,
                      batch_size=max(1, 128 // k),
                      generator=torch.Generator().manual_seed(args.seed))
        m = evaluate_segmentation(out, val_ds.images[ens_idx], val_ds.masks[ens_idx],
                                  groups=ens_grp)
        rows.append({"study": "ensemble", "sampler": "ddim", "steps": args.ensemble_steps,
                     "ensemble": k, "n_images": len(ens_idx),
                     "seconds_per_image": out.seconds_per_image, "metrics": m,
                     "uncertainty_mean": float(out.uncertainty.mean())})
        print(f"ensemble K={k}: Dice[{headline}] {m[headline]['dice']:.4f}  "
              f"{1000 * out.seconds_per_image:.1f} ms/image", flush=True)
    save(result(None))

    baseline = None
    if not args.no_baseline:
        steps = args.baseline_steps or ck.step
        config = sg.UNetConfig.from_dict({**unet_cfg, "in_channels": 1, "out_channels": 1,
                                          "cond_channels": 0, "cond_mode": None})
        net, seconds = train_baseline(train_ds, config, steps,
                                      int(train_cfg.get("batch_size", 32)),
                                      float(train_cfg.get("lr", 1e-3)), args.seed, progress)
        t0 = time.perf_counter()
        probs = predict_masks(net, images)
        per_image = (time.perf_counter() - t0) / len(images)
        m = evaluate_segmentation(lambda _: (probs > 0.5).float(), images, masks, groups=grp)
        baseline = {"steps": steps, "train_seconds": seconds, "seconds_per_image": per_image,
                    "metrics": m}
        print(f"supervised baseline ({steps} steps, {seconds:.0f} s): "
              f"Dice[{headline}] {m[headline]['dice']:.4f}", flush=True)

    final = result(baseline)
    save(final)
    plot(final, args.out)
    print(markdown(final))
    return 0


def markdown(result: dict[str, Any]) -> str:
    g = result["headline_group"]
    lines = [f"Segmentation benchmark — {result['task']}, {result['n_images']} {result['split']} "
             f"images ({g}), checkpoint step {result['checkpoint_step']}; {result['hardware']}, "
             f"{result['date']}", "", "| study | sampler | steps | K | images | Dice | Jaccard | "
             "ms / image |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        m = r["metrics"][g]
        lines.append(f"| {r['study']} | {r['sampler']} | {r['steps']} | {r['ensemble']} | "
                     f"{r.get('n_images', result['n_images'])} | {m['dice']:.4f} | "
                     f"{m['jaccard']:.4f} | {1000 * r['seconds_per_image']:.1f} |")
    b = result["baseline"]
    sweep = [r for r in result["rows"] if r["study"] == "steps"]  # the baseline's images
    if b is not None:
        m = b["metrics"][g]
        lines.append(f"| supervised U-Net ({b['steps']} steps) | – | 1 forward | – | "
                     f"{result['n_images']} | {m['dice']:.4f} | {m['jaccard']:.4f} | "
                     f"{1000 * b['seconds_per_image']:.1f} |")
    if b is not None and sweep:
        best = max(sweep, key=lambda r: r["metrics"][g]["dice"])
        lines += ["", "Best diffusion setting vs the supervised baseline:", "",
                  metrics_table({f"diffusion ({best['sampler']}, {best['steps']} steps, "
                                 f"K={best['ensemble']})": best["metrics"][g],
                                 "supervised": m})]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out: Path) -> None:
    g = result["headline_group"]
    steps: dict[str, tuple[list[float], list[float]]] = {}
    for r in result["rows"]:
        if r["study"] == "steps":
            xs, ys = steps.setdefault(r["sampler"], ([], []))
            xs.append(r["steps"])
            ys.append(r["metrics"][g]["dice"])
    if result["baseline"] is not None and steps:
        xs = next(iter(steps.values()))[0]
        steps["supervised U-Net"] = (xs, [result["baseline"]["metrics"][g]["dice"]] * len(xs))
    if steps:
        plot_curves(steps, out / "dice_vs_steps.png", xlabel="sampling steps",
                    panels={f"Dice ({g}) vs sampling steps": list(steps)})
    ens = [r for r in result["rows"] if r["study"] == "ensemble"]
    if ens:
        ks = [r["ensemble"] for r in ens]
        plot_curves({f"Dice ({g})": (ks, [r["metrics"][g]["dice"] for r in ens]),
                     "ms per image": (ks, [1000 * r["seconds_per_image"] for r in ens])},
                    out / "dice_vs_ensemble.png", xlabel="ensemble size K")


if __name__ == "__main__":
    sys.exit(main())
