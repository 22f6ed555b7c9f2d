"""Sample quality of unconditional X-ray synthesis, measured in a feature space of our own.

No weights are downloaded: a small CNN (:class:`scoregen.nn.FeatureClassifier`) is trained
here on the Train X-rays to tell COVID-19 / Non-COVID / Normal apart (its Val accuracy is
reported), and its 128-d penultimate layer is the feature space of

* the Fréchet distance (Heusel et al. 2017; not "FID": the features are ours) and KID
  (Bińkowski et al. 2018) between a set of images and the real Val images,
* improved precision / recall (Kynkäänniemi et al. 2019, k = 3),
* a memorisation check: each image's distance to its nearest Train image, against the
  same for the real Val images (pixel space and feature space).

The **floor** is a real-vs-real measurement: a random Train subset of the generated set's
size against Val. The classifier has seen the Train images, so the floor is slightly
optimistic about how alike the two real sets look; generated sets are compared with the
same Val images, at the same size, so their numbers and the floor are comparable.

Given ``--checkpoint`` of an unconditional model (``examples/unconditional_xray.py``), it
draws ``--num-samples`` images with each sampler at each NFE budget (the same x_T for all:
common random numbers) and reports every distance against NFE. Samples are clamped to
[-1, 1] before they are measured (as the example saves them); the share of raw pixels
outside that range is reported beside them.

    python benchmarks/synthesis.py                  # phantom, no model: classifier + floor
    python benchmarks/synthesis.py --data-root ../shared/data/covid-qu-ex-64 \\
        --checkpoint CKPT \\
        --samplers ddim,dpmpp_2m,ipndm --nfe 5,10,20,50 --out benchmarks/results/synthesis

Without ``--data-root`` it runs on the synthetic phantom (2 classes). Writes to ``--out``:
``classifier.safetensors`` (weights, config and accuracy in its metadata),
``synthesis.json``, ``synthesis.md``, ``synthesis_nfe.png`` (distances vs NFE, the floor
dashed) and ``samples.png`` (top: generated, bottom: real Val).
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
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

import scoregen as sg
from scoregen import devices
from scoregen.cli_types import positive_int
from scoregen.metrics import (
    frechet_distance,
    kernel_distance,
    memorisation_from_distances,
    nearest_distances,
    precision_recall,
)
from scoregen.nn import ClassifierConfig, FeatureClassifier
from scoregen.plotting import image_grid, new_figure, plain_ticks, save_png
from scoregen.provenance import git_commit
from scoregen.segmentation import CLASSES, CovidQUDataset, PhantomDataset, SegmentationDataset

#: NFE budget -> grid steps for samplers that call the net twice a step (Heun)
TWO_CALL_SAMPLERS = ("heun",)
#: ``ode:METHOD``: the PF-ODE on a fixed grid, net calls per step of each torchdiffeq method
ODE_FIXED_CALLS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def sampler_list(text: str) -> list[str]:
    """Sampler names, plus ``ode:METHOD`` for the PF-ODE on a fixed grid (``ode`` alone is
    adaptive dopri5, whose NFE the tolerance sets, not the budget)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    fixed = [f"ode:{m}" for m in ODE_FIXED_CALLS]
    unknown = [n for n in names if n not in sg.SAMPLERS and n not in fixed]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown sampler(s) {unknown or text!r}; "
                                         f"choose from {sorted(sg.SAMPLERS) + fixed}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="COVID-QU-Ex folder; default: the synthetic phantom")
    p.add_argument("--size", type=positive_int, default=64)
    p.add_argument("--phantom-train", type=positive_int, default=512)
    p.add_argument("--phantom-val", type=positive_int, default=256)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="unconditional model to sample; without it: classifier and floor only")
    p.add_argument("--samplers", type=sampler_list, default=["ddim", "dpmpp_2m", "ipndm"])
    p.add_argument("--nfe", type=int_list, default=[5, 10, 20, 50], help="NFE budgets")
    p.add_argument("--num-samples", type=positive_int, default=500,
                   help="generated images per (sampler, NFE); also the floor's Train subset")
    p.add_argument("--sample-batch", type=positive_int, default=100)
    p.add_argument("--classifier", type=Path, default=None,
                   help="reuse a classifier.safetensors written by this script (no training)")
    p.add_argument("--classifier-epochs", type=positive_int, default=5)
    p.add_argument("--classifier-batch", type=positive_int, default=64)
    p.add_argument("--classifier-lr", type=float, default=2e-3)
    p.add_argument("--kid-subsets", type=positive_int, default=100)
    p.add_argument("--kid-subset-size", type=positive_int, default=1000)
    p.add_argument("--k", type=positive_int, default=3, help="k of the precision/recall balls")
    p.add_argument("--grid-images", type=positive_int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch intra-op threads (1: stable times on a shared machine)")
    p.add_argument("--out", type=Path, default=Path("runs/synthesis"),
                   help="output folder; results meant to be committed go under "
                        "benchmarks/results/ (pass it on purpose)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace) -> tuple[SegmentationDataset, SegmentationDataset, str]:
    if args.data_root is None:
        train = PhantomDataset(args.phantom_train, size=args.size, seed=args.seed)
        val = PhantomDataset(args.phantom_val, size=args.size, seed=args.seed + 10_000)
        return train, val, "synthetic phantom"
    progress = not args.no_progress
    train = CovidQUDataset(args.data_root, "Train", size=args.size, progress=progress)
    val = CovidQUDataset(args.data_root, "Val", size=args.size, progress=progress)
    return train, val, f"COVID-QU-Ex {val.split_root}"


def class_labels(ds: SegmentationDataset, classes: list[str]) -> Tensor:
    """Class indices (N,) of ``ds.classes_of`` in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(ds.classes_of) - set(index))
    if unknown:
        raise ValueError(f"classes {unknown} of the data are not among {classes}")
    return torch.tensor([index[c] for c in ds.classes_of])


# ----------------------------------------------------------------------------- classifier
def train_classifier(images: Tensor, labels: Tensor, num_classes: int, *, epochs: int,
                     batch_size: int, lr: float, seed: int, device: torch.device,
                     progress: bool, widths: tuple[int, ...] | None = None,
                     ) -> tuple[FeatureClassifier, list[float]]:
    """AdamW + one-cycle schedule, cross-entropy, shifts of up to 2 pixels as augmentation.

    ``widths``: the conv blocks' channels (default :class:`ClassifierConfig`'s).
    Returns the net (eval mode) and the mean training loss of each epoch.
    """
    torch.manual_seed(seed)
    shape = {} if widths is None else {"widths": tuple(widths)}
    cfg = ClassifierConfig(in_channels=images.shape[1], num_classes=num_classes, **shape)
    net = FeatureClassifier(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"classifier epoch {epoch + 1}/{epochs}",
                   disable=not progress)
        for i in bar:
            idx = order[i * batch_size:(i + 1) * batch_size]
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3)).to(device)
            loss = F.cross_entropy(net(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        losses.append(total / steps_per_epoch)
    return net.eval(), losses


@torch.no_grad()
def predict(net: FeatureClassifier, images: Tensor, batch: int = 256
            ) -> tuple[Tensor, Tensor]:
    """(features (N, D) float64, logits (N, K)) on the CPU."""
    device = next(net.parameters()).device
    feats, logits = [], []
    for i in range(0, len(images), batch):
        f = net.features(images[i:i + batch].to(device))
        feats.append(f.double().cpu())
        logits.append(net.head(f).cpu())
    return torch.cat(feats), torch.cat(logits)


def save_classifier(net: FeatureClassifier, path: Path, info: dict[str, Any]) -> Path:
    meta = {"config": json.dumps(net.config.to_dict()), "info": json.dumps(info)}
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
              str(path), metadata=meta)
    return path


def load_classifier(path: Path, device: torch.device) -> tuple[FeatureClassifier, dict]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{path} is not a classifier written by benchmarks/synthesis.py "
                             f"(no 'config' in its metadata)")
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    net = FeatureClassifier(ClassifierConfig.from_dict(json.loads(meta["config"])))
    net.load_state_dict(state)
    return net.to(device).eval(), json.loads(meta.get("info", "{}"))


# ----------------------------------------------------------------------------- quality
def quality(feats: Tensor, pixels: Tensor, ref: dict[str, Tensor], args: argparse.Namespace,
            *, val_memorisation: bool = False) -> dict[str, Any]:
    """Every distance of one set (features (N, D), images (N, 1, S, S)) against Val.

    ``val_memorisation``: report Val's own nearest-Train distances in place of the set's
    (for the floor, whose Train subset is its own nearest neighbour).
    """
    if val_memorisation:
        nn_pixels, nn_feats = ref["val_nn_pixels"], ref["val_nn_feats"]
    else:
        nn_pixels = nearest_distances(pixels, ref["train_pixels"])
        nn_feats = nearest_distances(feats, ref["train_feats"])
    gen = torch.Generator().manual_seed(args.seed)
    kid = kernel_distance(feats, ref["val_feats"], subsets=args.kid_subsets,
                          subset_size=args.kid_subset_size, generator=gen)
    pr = precision_recall(ref["val_feats"], feats, k=args.k)
    return {
        "frechet": frechet_distance(feats, ref["val_feats"]),
        "kid": kid.mean, "kid_std": kid.std, "kid_subset_size": kid.subset_size,
        "precision": pr.precision, "recall": pr.recall,
        "memorisation_pixel": memorisation_from_distances(nn_pixels,
                                                          ref["val_nn_pixels"]).to_dict(),
        "memorisation_feature": memorisation_from_distances(nn_feats,
                                                            ref["val_nn_feats"]).to_dict(),
    }


def reference_sets(train_feats: Tensor, val_feats: Tensor, train_pixels: Tensor,
                   val_pixels: Tensor) -> dict[str, Tensor]:
    """What :func:`quality` compares with, the Val-to-Train distances computed once."""
    return {"train_feats": train_feats, "val_feats": val_feats, "train_pixels": train_pixels,
            "val_pixels": val_pixels,
            "val_nn_pixels": nearest_distances(val_pixels, train_pixels),
            "val_nn_feats": nearest_distances(val_feats, train_feats)}


def grid_steps(sampler: str, nfe: int) -> int:
    """Grid steps for an NFE budget: two net calls a step for Heun (one for the last);
    for ``ode:METHOD`` the method's calls per step, after the final denoising call."""
    if sampler.startswith("ode:"):
        return max(1, (nfe - 1) // ODE_FIXED_CALLS[sampler.partition(":")[2]])
    return (nfe + 1) // 2 if sampler in TWO_CALL_SAMPLERS else nfe


def draw(model: sg.ScoreModel, sampler: str, nfe: int, args: argparse.Namespace,
         device: torch.device) -> tuple[Tensor, int, float]:
    """``--num-samples`` images (CPU, raw), the NFE the sampler reported, wall seconds.

    Batch ``b`` starts from the generator seeded ``seed + b`` for every sampler and budget.
    """
    shape = (1, args.size, args.size)
    out, used, t0 = [], 0, time.perf_counter()
    for b, start in enumerate(range(0, args.num_samples, args.sample_batch)):
        n = min(args.sample_batch, args.num_samples - start)
        name, _, method = sampler.partition(":")  # "ode:heun2" -> the ode sampler, heun2
        res = sg.sample_with_info(model, (n, *shape), name, steps=grid_steps(sampler, nfe),
                                  generator=torch.Generator(device).manual_seed(args.seed + b),
                                  **({"method": method} if method else {}))
        out.append(res.x.float().cpu())
        used = res.nfe
    return torch.cat(out), used, time.perf_counter() - t0


# ----------------------------------------------------------------------------- outputs
FLOAT_COLUMNS = ("frechet", "kid", "precision", "recall")


def _fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    c, fl = result["classifier"], result["floor"]
    lines = [
        "# Synthesis: sample quality in the feature space of a classifier trained here",
        "",
        f"Data: {result['data']}; Train {result['n_train']}, Val {result['n_val']} images "
        f"at {result['size']}x{result['size']}. Generated sets and the floor: "
        f"{result['num_samples']} images each, compared with all Val images.",
        "",
        f"Classifier ({', '.join(c['classes'])}): Val accuracy **{c['val_accuracy']:.3f}** "
        f"(Train {c['train_accuracy']:.3f}), {c['epochs']} epochs, "
        f"{_fmt(c.get('train_seconds') or float('nan'))} s"
        + (f" (loaded from {c['loaded_from']})" if c.get("loaded_from") else "") + ".",
        "",
        "Fréchet distance and KID in its 128-d feature space (not comparable with published "
        "FID/KID: other features); precision / recall with k = "
        f"{result['k']}; memorisation: nearest-Train distance, median and 5th percentile, "
        "and the share of images closer to Train than the Val 1st percentile (about 0.01 "
        "when nothing is copied).",
        "",
        "| set | NFE | s/image | Fréchet | KID (± std) | precision | recall | "
        "pixel NN median / p5 | copy share (pixel / feature) | raw outside [-1, 1] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(name: str, r: dict[str, Any], nfe: str, spi: str, outside: str) -> str:
        mp, mf = r["memorisation_pixel"], r["memorisation_feature"]
        return (f"| {name} | {nfe} | {spi} | {_fmt(r['frechet'])} | {_fmt(r['kid'])} ± "
                f"{_fmt(r['kid_std'])} | {r['precision']:.3f} | {r['recall']:.3f} | "
                f"{mp['generated_median']:.3g} / {mp['generated_p5']:.3g} | "
                f"{mp['copy_fraction']:.3f} / {mf['copy_fraction']:.3f} | {outside} |")

    lines.append(row("floor: Train subset vs Val (memorisation: Val itself)", fl, "", "", ""))
    for r in result["rows"]:
        lines.append(row(r["sampler"], r, str(r["nfe"]), f"{r['seconds_per_image']:.3g}",
                         f"{r['raw_outside']:.3f}"))
    mv = fl["memorisation_pixel"]
    lines += ["", f"Val images to their nearest Train image (pixel L2): median "
              f"{mv['val_median']:.3g}, 5th percentile {mv['val_p5']:.3g}, 1st "
              f"{mv['val_p1']:.3g}.", ""]
    if result.get("checkpoint"):
        lines.append(f"Checkpoint: `{result['checkpoint']}` (step {result['checkpoint_step']}).")
    if result.get("command"):
        lines.append(f"`{result['command']}` (commit {result['git_commit']}, "
                     f"{result['hardware']}).")
    lines.append(f"Wall time {result['wall_seconds']:.0f} s, {result['threads']} thread(s), "
                 f"device {result['device']}, torch {result['torch']}, {result['date']}.")
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_nfe(result: dict[str, Any], path: Path) -> Path:
    """One panel per distance: each sampler vs NFE, the real-vs-real floor dashed."""
    fig = new_figure(4.0 * len(FLOAT_COLUMNS), 3.2)
    axes = fig.subplots(1, len(FLOAT_COLUMNS), squeeze=False)[0]
    names = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
    titles = {"frechet": "Fréchet distance", "kid": "KID", "precision": "precision",
              "recall": "recall"}
    for ax, key in zip(axes, FLOAT_COLUMNS, strict=True):
        for name in names:
            rows = [r for r in result["rows"] if r["sampler"] == name]
            ax.plot([r["nfe"] for r in rows], [r[key] for r in rows], marker="o", ms=3,
                    lw=1.2, label=name)
        ax.axhline(result["floor"][key], color="k", ls="--", lw=1, label="Train vs Val")
        ax.set_xscale("log")
        if key == "frechet":
            ax.set_yscale("log")
        ax.set_title(titles[key], fontsize=9)
        ax.set_xlabel("NFE")
        ax.grid(alpha=0.3)
        plain_ticks(ax)
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    commit = git_commit(__file__)  # the code this run loads, read before it can change
    device = devices.resolve_device(args.device)
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    ck = None
    if args.checkpoint is not None:
        ck = sg.load_checkpoint(args.checkpoint)
        saved = ck.run_info.get("image_size")
        if saved is not None and saved != args.size:
            raise ValueError(f"--size {args.size} does not match the checkpoint: "
                             f"{args.checkpoint} was trained at {saved}x{saved}")
    train, val, note = load_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.num_samples < args.k + 1:
        raise ValueError(f"--num-samples must exceed --k = {args.k}, got {args.num_samples}")

    # 1. the feature network
    if args.classifier is not None:
        net, info = load_classifier(args.classifier, device)
        classes = info.get("classes") or [c for c in CLASSES if c in set(train.classes_of)]
        losses, train_seconds = info.get("losses", []), info.get("train_seconds")
        epochs = info.get("epochs", 0)
    else:
        classes = [c for c in CLASSES if c in set(train.classes_of)]
        t0 = time.perf_counter()
        net, losses = train_classifier(train.images, class_labels(train, classes), len(classes),
                                       epochs=args.classifier_epochs,
                                       batch_size=args.classifier_batch, lr=args.classifier_lr,
                                       seed=args.seed, device=device, progress=progress)
        train_seconds, epochs = time.perf_counter() - t0, args.classifier_epochs
    train_feats, train_logits = predict(net, train.images)
    val_feats, val_logits = predict(net, val.images)
    y_train, y_val = class_labels(train, classes), class_labels(val, classes)
    classifier = {
        "classes": classes, "epochs": epochs, "losses": losses, "train_seconds": train_seconds,
        "train_accuracy": float((train_logits.argmax(1) == y_train).double().mean()),
        "val_accuracy": float((val_logits.argmax(1) == y_val).double().mean()),
        "val_confusion": torch.bincount(y_val * len(classes) + val_logits.argmax(1),
                                        minlength=len(classes) ** 2)
        .reshape(len(classes), len(classes)).tolist(),
        "feature_dim": net.config.feature_dim,
        "loaded_from": str(args.classifier) if args.classifier is not None else None,
    }
    if args.classifier is None:
        save_classifier(net, args.out / "classifier.safetensors",
                        {k: classifier[k] for k in ("classes", "epochs", "losses",
                                                    "train_seconds", "val_accuracy")})
    print(f"classifier: Val accuracy {classifier['val_accuracy']:.3f} "
          f"(Train {classifier['train_accuracy']:.3f}) over {classes}")

    # 2. the real-vs-real floor: a Train subset of the generated sets' size vs Val
    ref = reference_sets(train_feats, val_feats, train.images, val.images)
    n_floor = min(args.num_samples, len(train))
    sub = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:n_floor]
    floor = quality(train_feats[sub], train.images[sub], ref, args,
                    val_memorisation=True)
    floor["n"] = n_floor
    print(f"floor (Train {n_floor} vs Val {len(val)}): Fréchet {floor['frechet']:.4g}, "
          f"KID {floor['kid']:.4g}, precision {floor['precision']:.3f}, "
          f"recall {floor['recall']:.3f}")

    # 3. generated sets, per sampler and NFE budget
    rows: list[dict[str, Any]] = []
    grid_set = None
    if ck is not None:
        model = sg.load_model(args.checkpoint, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)),
                              device=device)
        cases = [(s, n) for s in args.samplers for n in args.nfe]
        for sampler, budget in tqdm(cases, desc="sampling", disable=not progress):
            raw, nfe, seconds = draw(model, sampler, budget, args, device)
            x = raw.clamp(-1.0, 1.0)
            feats, _ = predict(net, x)
            r = {"sampler": sampler, "nfe_budget": budget, "nfe": nfe, "seconds": seconds,
                 "seconds_per_image": seconds / len(x),
                 "raw_outside": float((raw.abs() > 1).double().mean()),
                 "raw_min": float(raw.min()), "raw_max": float(raw.max()),
                 **quality(feats, x, ref, args)}
            rows.append(r)
            grid_set = x[:args.grid_images]  # the last case: the last sampler, largest NFE
            print(f"{sampler} NFE {nfe}: Fréchet {r['frechet']:.4g}, KID {r['kid']:.4g}, "
                  f"precision {r['precision']:.3f}, recall {r['recall']:.3f} "
                  f"({r['seconds_per_image']:.3g} s/image)")

    result = {
        "data": note, "size": args.size, "n_train": len(train), "n_val": len(val),
        "num_samples": args.num_samples, "k": args.k, "classifier": classifier,
        "floor": floor, "rows": rows,
        "checkpoint": str(args.checkpoint) if ck is not None else None,
        "checkpoint_step": ck.step if ck is not None else None,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": str(device), "threads": args.threads, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command, "git_commit": commit, "hardware": devices.describe_device(device),
    }
    result["wall_seconds"] = time.perf_counter() - t_start
    (args.out / "synthesis.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out / "synthesis.md")
    if rows:
        plot_nfe(result, args.out / "synthesis_nfe.png")
        real = val.images[torch.randperm(len(val), generator=torch.Generator()
                                         .manual_seed(args.seed))[:len(grid_set)]]
        image_grid(torch.cat([grid_set, real]), args.out / "samples.png",
                   nrow=max(1, min(8, len(grid_set))))
    print(f"done in {result['wall_seconds']:.0f} s: {args.out / 'synthesis.md'}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python", *sys.argv] if argv is None
                       else ["python", "benchmarks/synthesis.py", *argv])
    try:
        run(args, command)
    except (ValueError, FileNotFoundError, sg.CheckpointError) as err:
        print(f"synthesis.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
