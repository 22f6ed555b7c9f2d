"""What differs between the two lung domains: the X-rays, the framing, or the masks.

The lung model is scored on Montgomery/Shenzhen (``cxr-lung-mcsz``) without retraining.
A drop there can come from the input (another scanner's grey levels), the framing
(patient size and position in the 64 x 64 image) or the labels (another annotation
protocol). No model is needed to tell these apart; for each domain this script reports

* **grey levels**: image mean / sd, and the mean level inside and outside the lung, raw
  and after ``equalize_histogram`` (what ``--image-norm equalize`` feeds the model);
* **framing**: the lung mask's share of the image and its bounding box (mean top,
  bottom, left, right rows / columns);
* **mask shape**: every mask cropped to its own bounding box and resized to
  ``--box`` x ``--box`` (bilinear, so the mean is a fraction of lung per box cell), then
  averaged per domain. Framing and lung size drop out; what is left is where each
  domain's masks put the lung border relative to the lungs' extent. The difference
  map (second minus first) and its largest cells are reported.

With ``--checkpoint`` of a lung model (``examples/covid_qu_seg.py``) it also segments each
domain's Val images (DDIM, ``--steps`` x ``--ensemble``, the images normalised as the
model was trained) and reports, per domain, the predicted / true lung area, sensitivity
and precision, and the box-normalised shape error of the predictions against that
domain's own masks and against the *other* domain's mean mask: a model that imposes
its training domain's outlines is closer to the latter; one that follows the image is
closer to the former. The coarse map of (predicted - true) lung share per box cell says
where it over- or under-segments.

Writes ``domain_shift.json`` (with command, commit, hardware, date, wall time),
``domain_shift.md`` and ``mask_shape.png`` (mean box-normalised masks and their
difference) to ``--out``:

    python benchmarks/domain_shift.py --data-root ../shared/data/covid-qu-ex-64 \\
        --other ../shared/data/cxr-lung-mcsz --out benchmarks/results/domain_shift
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tables

import tables  # noqa: E402

from scoregen import devices  # noqa: E402
from scoregen.cli_types import positive_int  # noqa: E402
from scoregen.plotting import new_figure, png_path, save_png  # noqa: E402
from scoregen.provenance import git_commit  # noqa: E402
from scoregen.segmentation import CovidQUDataset, equalize_histogram  # noqa: E402
from scoregen.train.checkpoint import load_checkpoint  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True,
                   help="the training domain (COVID-QU-Ex layout)")
    p.add_argument("--other", type=Path, required=True,
                   help="the second domain (same layout, lung masks)")
    p.add_argument("--splits", default="Train,Val", help="comma list of splits to pool")
    p.add_argument("--size", type=positive_int, default=64)
    p.add_argument("--box", type=positive_int, default=32,
                   help="side of the box-normalised mask grid")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a lung model of examples/covid_qu_seg.py: also score its masks")
    p.add_argument("--steps", type=positive_int, default=1, help="DDIM steps (with --checkpoint)")
    p.add_argument("--ensemble", type=positive_int, default=4, help="K (with --checkpoint)")
    p.add_argument("--grid", type=positive_int, default=8,
                   help="side of the coarse (predicted - true) map; divides --box")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/domain_shift"))
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def lung_boxes(masks: Tensor) -> Tensor:
    """(N, 4) float ``[top, bottom, left, right]`` (inclusive pixel indices) of each
    (N, H, W) boolean mask's foreground; a ValueError names the first empty mask."""
    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a (N, H, W) bool tensor, got {tuple(masks.shape)} "
                         f"{masks.dtype}")
    rows, cols = masks.any(2), masks.any(1)
    empty = (~rows.any(1)).nonzero()
    if len(empty):
        raise ValueError(f"mask {int(empty[0])} is empty: it has no lung box")
    h, w = masks.shape[1:]
    r = torch.arange(h).expand_as(rows)
    c = torch.arange(w).expand_as(cols)
    top = torch.where(rows, r, h).min(1).values
    bottom = torch.where(rows, r, -1).max(1).values
    left = torch.where(cols, c, w).min(1).values
    right = torch.where(cols, c, -1).max(1).values
    return torch.stack([top, bottom, left, right], 1).float()


def box_normalised(masks: Tensor, box: int) -> Tensor:
    """(N, box, box): each (H, W) bool mask cropped to its lung box and resized to
    ``box`` x ``box`` bilinearly (values in [0, 1]: the share of lung in each cell)."""
    out = torch.empty(len(masks), box, box)
    for i, (t, b, left, right) in enumerate(lung_boxes(masks).long().tolist()):
        crop = masks[i, t:b + 1, left:right + 1].float()[None, None]
        out[i] = F.interpolate(crop, size=(box, box), mode="bilinear", align_corners=False,
                               antialias=True)[0, 0]
    return out


def domain_stats(images: Tensor, masks: Tensor) -> dict[str, Any]:
    """Grey levels (raw and equalised) and framing of (N, H, W) images in [-1, 1] and bool
    masks."""
    eq = equalize_histogram(images)
    area = masks.float().mean((1, 2))
    boxes = lung_boxes(masks)

    def levels(x: Tensor) -> dict[str, float]:
        return {"mean": float(x.mean()), "sd": float(x.std()),
                "in_lung": float(x[masks].mean()), "outside": float(x[~masks].mean())}

    return {"n_images": len(images), "raw": levels(images), "equalized": levels(eq),
            "lung_share": {"mean": float(area.mean()), "sd": float(area.std())},
            "box": dict(zip(("top", "bottom", "left", "right"),
                            boxes.mean(0).tolist(), strict=True))}


def largest_cells(diff: Tensor, n: int = 5) -> list[dict[str, float]]:
    """The ``n`` cells of ``diff`` (box grid) with the largest |difference|, as fractions
    of the box height / width (0 = top / image left) and the difference there."""
    box_h, box_w = diff.shape
    order = diff.abs().flatten().argsort(descending=True)[:n].tolist()
    return [{"row": (i // box_w + 0.5) / box_h, "col": (i % box_w + 0.5) / box_w,
             "difference": float(diff.flatten()[i])} for i in order]


def load(root: Path, splits: list[str], size: int, progress: bool, image_norm: str = "none"
         ) -> tuple[Tensor, Tensor, str]:
    images, masks = [], []
    for split in splits:
        ds = CovidQUDataset(root, split, task="lung", size=size, progress=progress,
                            image_norm=image_norm)
        images.append(ds.images[:, 0])
        masks.append(ds.masks[:, 0] > 0)
    return torch.cat(images), torch.cat(masks), str(ds.split_root)


def coarse(x: Tensor, grid: int) -> Tensor:
    """(box, box) -> (grid, grid) block means; ``grid`` must divide ``box``."""
    box = x.shape[-1]
    if box % grid:
        raise ValueError(f"--grid {grid} must divide --box {box}")
    return x.reshape(grid, box // grid, grid, box // grid).mean((1, 3))


def model_study(args: argparse.Namespace, means: dict[str, Tensor], roots: dict[str, Path]
                ) -> dict[str, Any]:
    """Segment each domain's Val images with ``--checkpoint``; per domain: area ratio,
    sensitivity, precision, and the predictions' box-normalised shape against the
    domain's own masks and the other domain's mean mask."""
    import scoregen as sg
    from scoregen.segmentation import segment, segmentation_metrics

    try:
        ck = load_checkpoint(args.checkpoint)
    except (OSError, ValueError) as err:
        raise SystemExit(f"--checkpoint {args.checkpoint}: {err}") from err
    info = ck.run_info or {}
    if info.get("task", "lung") != "lung":
        raise SystemExit(f"--checkpoint {args.checkpoint} is a {info['task']} model; "
                         "the second domain has lung masks only")
    size = int(info.get("image_size", args.size))
    norm = info.get("image_norm", "none")
    model = sg.load_model(args.checkpoint, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)))
    model.eval()
    names = list(means)
    out: dict[str, Any] = {"checkpoint": str(args.checkpoint), "image_norm": norm,
                           "sampler": f"ddim:{args.steps}x{args.ensemble}", "domains": {}}
    for name, other in zip(names, names[::-1], strict=True):
        images, truth, _ = load(roots[name], ["Val"], size, not args.no_progress, norm)
        pred = segment(model, images[:, None], steps=args.steps, ensemble=args.ensemble,
                       seed=0, progress=not args.no_progress,
                       desc=f"masks {name}").fused[:, 0].bool()
        keep = pred.flatten(1).any(1)  # an empty prediction has no box
        shape = box_normalised(pred[keep], args.box).mean(0)
        own = box_normalised(truth[keep], args.box).mean(0)
        scores = segmentation_metrics(pred.float(), truth.float())  # micro, as the benchmark
        out["domains"][name] = {
            "n_images": len(images), "empty_predictions": int((~keep).sum()),
            "dice": scores["dice"],
            "area_ratio": float(pred.sum()) / float(truth.sum()),
            "sensitivity": scores["sensitivity"], "precision": scores["precision"],
            "shape_error_own": float((shape - own).abs().mean()),
            "shape_error_other": float((shape - means[other]).abs().mean()),
            "other": other,
            "coarse_difference": coarse(shape - own, args.grid).tolist()}
    return out


def figure(means: dict[str, Tensor], diff: Tensor, path: Path,
           study: dict[str, Any] | None = None) -> Path:
    """Mean box-normalised masks of both domains and their difference (second - first);
    with a model study, a second row: its (predicted - true) lung share per coarse cell."""
    rows = 1 if study is None else 2
    fig = new_figure(9.6, 3.4 * rows)
    axes = fig.subplots(rows, 3, squeeze=False)
    names = list(means)
    for ax, name in zip(axes[0, :2], names, strict=True):
        shown = ax.imshow(means[name].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"mean mask: {name}", fontsize=9)
    fig.colorbar(shown, ax=axes[0, 1], fraction=0.046)
    lim = max(float(diff.abs().max()), 1e-6)
    shown = axes[0, 2].imshow(diff.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0, 2].set_title(f"{names[1]} - {names[0]}", fontsize=9)
    fig.colorbar(shown, ax=axes[0, 2], fraction=0.046)
    if study is not None:
        maps = {n: torch.tensor(d["coarse_difference"]) for n, d in study["domains"].items()}
        lim = max(max(float(m.abs().max()) for m in maps.values()), 1e-6)
        for ax, (name, m) in zip(axes[1, :2], maps.items(), strict=True):
            shown = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"predicted - true: {name}", fontsize=9)
        fig.colorbar(shown, ax=axes[1, 1], fraction=0.046)
        axes[1, 2].axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("lung box: image left -> right (patient's right -> left)", fontsize=7)
    return save_png(fig, png_path(path))


def markdown(result: dict[str, Any]) -> str:
    first, second = result["domains"]
    return "\n".join([f"# Domain shift: {first} vs {second} (lung)", "",
                      f"{result['hardware']}; {result['date']}; commit {result['git_commit']}; "
                      f"wall {result['wall_seconds']:.0f} s.", "",
                      f"Command: `{result['command']}`", "",
                      tables.domain_shift_table(result), ""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    commit = git_commit(__file__)  # before any output is (re)written, so only code counts
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    progress = not args.no_progress
    try:
        loaded = {"COVID-QU-Ex": load(args.data_root, splits, args.size, progress),
                  "Montgomery/Shenzhen": load(args.other, splits, args.size, progress)}
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"domain_shift.py: {err}") from err
    if args.box % args.grid:
        raise SystemExit(f"--grid {args.grid} must divide --box {args.box}")
    stats = {name: domain_stats(im, m) for name, (im, m, _) in loaded.items()}
    means = {name: box_normalised(m, args.box).mean(0) for name, (_, m, _) in loaded.items()}
    first, second = list(means)
    diff = means[second] - means[first]
    study = None
    if args.checkpoint is not None:
        torch.set_num_threads(args.threads)
        study = model_study(args, means, {first: args.data_root, second: args.other})
    args.out.mkdir(parents=True, exist_ok=True)
    png = figure(means, diff, args.out / "mask_shape.png", study)
    result = {
        "command": "python " + " ".join(["benchmarks/domain_shift.py", *sys.argv[1:]]),
        "git_commit": commit,
        "hardware": devices.describe_device(torch.device("cpu")),
        "date": time.strftime("%Y-%m-%d %H:%M"), "splits": splits, "size": args.size,
        "box": args.box, "domains": [first, second],
        "roots": {name: root for name, (_, _, root) in loaded.items()},
        "stats": stats,
        "mask_shape": {"mean_abs_difference": float(diff.abs().mean()),
                       "largest_cells": largest_cells(diff)},
        "model": study,
        "figures": [str(png)],
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / "domain_shift.json").write_text(json.dumps(result, indent=2))
    (args.out / "domain_shift.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
