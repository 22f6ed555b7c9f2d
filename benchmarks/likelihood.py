"""Likelihoods on real data through the probability-flow ODE (issue 11, part 2).

Two studies, each from a checkpoint; either or both per call.

**Unconditional** (``--unconditional CKPT`` of ``examples/unconditional_xray.py``): bits/dim
of the 8-bit X-rays of COVID-QU-Ex Val, of the Montgomery/Shenzhen Val X-rays
(``--cross-domain DIR``: other scanners) and of the synthetic phantom, each image
dequantised once per probe (``x = 2 (k + u) / 256 - 1``, ``u ~ U[0, 1)``), so that

    bits/dim(k) <= E_u[-log2 p(x)] / D + log2(256 / 2)

is the discrete data's bits/dim (an upper bound by Jensen, not score_sde's offset applied to
undequantised pixels; docs/likelihood.md). The divergence is Hutchinson's estimate with
``--probes`` Rademacher probes per image; the table gives the mean over images, the standard
error over images, and the estimator's own standard error (the spread over an image's
probes, divided by sqrt(probes), averaged over images). The AUROC of bits/dim for telling
each other domain from COVID-QU-Ex Val (higher bits/dim = "other") says whether the model's
likelihood notices a change of scanner.

**Conditional** (``--segmentation CKPT`` of ``examples/covid_qu_seg.py``): per Val image the
log-density of a mask given its X-ray, ``log p_{t_eps}(mask | image)``, for the model's own
mask (``--sampler``/``--sampling-steps``/``--ensemble``) and for the true one. Masks are
binary, so this is the density of the mask distribution smoothed by the forward process at
``t_eps`` (finite; the 0/1 masks themselves have no density), in bits/dim, a per-image
score: does a low likelihood flag a bad mask? Reported: the AUROC of bits/dim of the own
mask for "Dice below --dice-threshold", Pearson and Spearman correlation of that bits/dim
with the image's Dice, and (lung, ``--cross-domain``) the AUROC for telling the second
domain's images from COVID-QU-Ex Val.

    python benchmarks/likelihood.py --segmentation runs/covid_qu_seg   # phantom
    python benchmarks/likelihood.py --data-root ../shared/data/covid-qu-ex-64 \\
        --segmentation CKPT --cross-domain ../shared/data/cxr-lung-mcsz --n 128 \\
        --out benchmarks/results/likelihood_lung

Writes ``likelihood.json``, ``likelihood.md``, ``bits_per_dim.png`` (histogram per domain)
and ``likelihood_vs_dice.png`` (scatter) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tables

import tables  # noqa: E402

import scoregen as sg  # noqa: E402
from scoregen import devices  # noqa: E402
from scoregen.cli_types import positive_int  # noqa: E402
from scoregen.likelihood import bits_per_dim as bits_per_dim_of  # noqa: E402
from scoregen.metrics import auroc  # noqa: E402  (rank-based: any bits/dim stay ordered)
from scoregen.plotting import new_figure, png_path, save_png  # noqa: E402
from scoregen.provenance import git_commit  # noqa: E402
from scoregen.segmentation import (  # noqa: E402
    CovidQUDataset,
    PhantomDataset,
    per_image_dice,
    random_subset,
    segment,
)

#: Dice below which a lung mask counts as bad (the issue's threshold); infection: 0.5.
DEFAULT_DICE_THRESHOLD = {"lung": 0.9, "infection": 0.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--unconditional", type=Path, default=None, metavar="CKPT",
                   help="checkpoint (or run folder) of examples/unconditional_xray.py")
    p.add_argument("--segmentation", type=Path, default=None, metavar="CKPT",
                   help="checkpoint (or run folder) of examples/covid_qu_seg.py")
    p.add_argument("--data-root", type=Path, default=None,
                   help="COVID-QU-Ex folder; default: the synthetic phantom")
    p.add_argument("--cross-domain", type=Path, default=None, metavar="DIR",
                   help="second domain's folder (its Val split; lung masks)")
    p.add_argument("--n", type=positive_int, default=64, help="images per domain")
    p.add_argument("--probes", type=positive_int, default=2,
                   help="Hutchinson probes (and dequantisation draws) per image")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-3)
    p.add_argument("--t-eps", type=float, default=None,
                   help="the ODE's start time (default: the SDE's t_eps)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--sampling-steps", type=positive_int, default=2)
    p.add_argument("--ensemble", type=positive_int, default=4)
    p.add_argument("--dice-threshold", type=float, default=None,
                   help="a mask with Dice below it is 'bad' (default: lung 0.9, infection 0.5)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--phantom-val", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/likelihood"),
                   help="output folder; results meant to be committed go under "
                        "benchmarks/results/ (pass it on purpose)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.unconditional is None and args.segmentation is None:
        p.error("give --unconditional CKPT, --segmentation CKPT or both")
    if not 0 < args.rtol < 1 or not 0 < args.atol < 1:
        p.error("--rtol and --atol must lie in (0, 1)")
    return args


# ----------------------------------------------------------------------------- pieces


def to_8bit(images: Tensor) -> Tensor:
    """Images in [-1, 1] (the datasets' ``k / 255 * 2 - 1``) -> integers ``k`` in 0..255."""
    return ((images.clamp(-1, 1) + 1) / 2 * 255).round()


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks; ties get the mean
    rank)."""
    def ranks(x: Tensor) -> Tensor:
        x = x.double()
        order = x.argsort()
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=torch.float64)
        for v in x.unique():  # mean rank of ties
            tie = x == v
            r[tie] = r[tie].mean()
        return r
    return pearson(ranks(a), ranks(b))


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson's correlation (NaN when either is constant)."""
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def bits_per_dim(model: sg.ScoreModel, x: Tensor, cond: Tensor | None, args: argparse.Namespace,
                 *, num_bins: int | None, desc: str, seed: int) -> tuple[Tensor, Tensor, int]:
    """(per-image mean bits/dim over the probes (N,), per-image probe SE (N,), NFE).

    With ``num_bins``, ``x`` holds integers ``k`` and every probe draws a new
    dequantisation ``u``; otherwise ``x`` is scored as it is."""
    gen = torch.Generator().manual_seed(seed)
    per_probe, nfe = [], 0
    bar = tqdm(total=len(x) * args.probes, desc=desc, unit="img", leave=False,
               disable=args.no_progress)
    for _ in range(args.probes):
        rows = []
        for i in range(0, len(x), args.batch_size):
            xb = x[i:i + args.batch_size]
            cb = None if cond is None else cond[i:i + args.batch_size]
            if num_bins is not None:
                xb = sg.dequantize(xb, num_bins=num_bins, generator=gen)
            res = sg.log_prob_with_info(model, xb, cb, exact=False, rtol=args.rtol,
                                        atol=args.atol, t_eps=args.t_eps, generator=gen)
            rows.append(bits_per_dim_of(res.logp, xb[0].numel(), num_bins).detach())
            nfe += res.nfe
            bar.update(len(xb))
        per_probe.append(torch.cat(rows))
    bar.close()
    stack = torch.stack(per_probe)  # (P, N)
    se = (stack.std(0, unbiased=True) / math.sqrt(args.probes) if args.probes > 1
          else torch.full((stack.shape[1],), math.nan))
    return stack.mean(0), se, nfe


def summarise(bpd: Tensor, probe_se: Tensor) -> dict[str, float]:
    n = len(bpd)
    return {"n": n, "bits_per_dim": float(bpd.mean()),
            "se_over_images": float(bpd.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan,
            "hutchinson_se_per_image": float(probe_se.mean()),
            "min": float(bpd.min()), "max": float(bpd.max())}


def _load(path: Path) -> tuple[sg.ScoreModel, dict[str, Any], Path]:
    """(EMA model, run_info, checkpoint file) from a checkpoint or a run folder."""
    from scoregen.train.checkpoint_dir import latest_checkpoint

    file = latest_checkpoint(path / "checkpoints") if path.is_dir() else path
    if file is None or not Path(file).is_file():
        raise SystemExit(f"no checkpoint at {path} (give a .safetensors file or a run folder "
                         "with checkpoints/)")
    ck = sg.load_checkpoint(file)
    model = sg.load_model(file, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)),
                          ema="ema" in ck.meta)  # EMA weights where the run kept them
    return model.eval(), ck.run_info or {}, Path(file)


# ----------------------------------------------------------------------------- studies


def unconditional_study(args: argparse.Namespace) -> dict[str, Any]:
    model, info, file = _load(args.unconditional)
    size = int(info.get("image_size", 64 if args.data_root is not None else 32))
    progress = not args.no_progress
    domains: dict[str, Tensor] = {}
    if args.data_root is not None:
        val = CovidQUDataset(args.data_root, "Val", task="lung", size=size, progress=progress)
        domains["COVID-QU-Ex Val"] = val.images[random_subset(len(val), args.n, args.seed)]
        if args.cross_domain is not None:
            other = CovidQUDataset(args.cross_domain, "Val", task="lung", size=size,
                                   progress=progress)
            domains["Montgomery/Shenzhen Val"] = other.images[
                random_subset(len(other), args.n, args.seed)]
    phantom = PhantomDataset(min(args.n, args.phantom_val), task="lung", size=size,
                             seed=args.seed + 10_000)
    domains["phantom"] = phantom.images
    first = next(iter(domains))
    rows, scores = {}, {}
    for i, (name, images) in enumerate(domains.items()):
        bpd, se, nfe = bits_per_dim(model, to_8bit(images), None, args, num_bins=256,
                                    desc=f"bits/dim {name}", seed=args.seed + i)
        rows[name] = {**summarise(bpd, se), "nfe": nfe}
        scores[name] = bpd
    for name in list(domains)[1:]:
        labels = torch.cat([torch.zeros(len(scores[first])), torch.ones(len(scores[name]))])
        rows[name]["ood_auroc"] = auroc(torch.cat([scores[first], scores[name]]), labels)
    return {"checkpoint": str(file), "image_size": size, "reference_domain": first,
            "dequantisation": "x = 2 (k + u) / 256 - 1, u ~ U[0, 1), one draw per probe; "
                              "+ log2(256 / 2) = 7 bits/dim (discrete upper bound)",
            "domains": rows, "per_image": {k: v.tolist() for k, v in scores.items()}}


def conditional_study(args: argparse.Namespace) -> dict[str, Any]:
    model, info, file = _load(args.segmentation)
    task = info.get("task", "lung")
    size = int(info.get("image_size", 64 if args.data_root is not None else 32))
    threshold = (args.dice_threshold if args.dice_threshold is not None
                 else DEFAULT_DICE_THRESHOLD[task])
    progress = not args.no_progress
    norm = info.get("image_norm", "none")  # the X-rays as the model saw them in training
    sets: dict[str, Any] = {}
    if args.data_root is not None:
        val = CovidQUDataset(args.data_root, "Val", task=task, size=size, progress=progress,
                             image_norm=norm)
        idx = random_subset(len(val), args.n, args.seed)
        sets["COVID-QU-Ex Val"] = (val.images[idx], val.masks[idx])
        if args.cross_domain is not None:
            if task != "lung":
                raise SystemExit("--cross-domain: the second domain has lung masks only")
            other = CovidQUDataset(args.cross_domain, "Val", task="lung", size=size,
                                   progress=progress, image_norm=norm)
            j = random_subset(len(other), args.n, args.seed)
            sets["Montgomery/Shenzhen Val"] = (other.images[j], other.masks[j])
    else:
        ph = PhantomDataset(min(args.n, args.phantom_val), task=task, size=size,
                            seed=args.seed + 10_000, image_norm=norm)
        sets["phantom val"] = (ph.images, ph.masks)
    out: dict[str, Any] = {}
    for i, (name, (images, masks)) in enumerate(sets.items()):
        seg = segment(model, images, sampler=args.sampler, steps=args.sampling_steps,
                      ensemble=args.ensemble, seed=args.seed, batch_size=args.batch_size,
                      progress=progress, desc=f"masks {name}")
        pred = seg.fused * 2 - 1  # {0, 1} -> the model's {-1, +1}
        dice = per_image_dice((pred + 1) / 2, (masks + 1) / 2)
        bpd_pred, se_pred, nfe_p = bits_per_dim(model, pred, images, args, num_bins=None,
                                                desc=f"log p(own mask) {name}", seed=10 + i)
        bpd_true, se_true, nfe_t = bits_per_dim(model, masks, images, args, num_bins=None,
                                                desc=f"log p(true mask) {name}", seed=20 + i)
        bad = dice < threshold
        out[name] = {
            "n": len(images), "dice_mean": float(dice.mean()), "bad_masks": int(bad.sum()),
            "own_mask": summarise(bpd_pred, se_pred), "true_mask": summarise(bpd_true, se_true),
            "true_more_likely": float((bpd_true < bpd_pred).float().mean()),
            "auroc_bad_mask": auroc(bpd_pred, bad),
            "pearson_bpd_dice": pearson(bpd_pred, dice),
            "spearman_bpd_dice": spearman(bpd_pred, dice),
            "nfe": nfe_p + nfe_t,
            "per_image": {"dice": dice.tolist(), "bpd_own": bpd_pred.tolist(),
                          "bpd_true": bpd_true.tolist()},
        }
    names = list(out)
    for name in names[1:]:
        a, b = torch.tensor(out[names[0]]["per_image"]["bpd_own"]), torch.tensor(
            out[name]["per_image"]["bpd_own"])
        out[name]["domain_auroc"] = auroc(torch.cat([a, b]),
                                          torch.cat([torch.zeros(len(a)), torch.ones(len(b))]))
    return {"checkpoint": str(file), "task": task, "image_size": size,
            "dice_threshold": threshold, "t_eps": args.t_eps if args.t_eps is not None
            else model.sde.t_eps, "masks_from": f"{args.sampler} {args.sampling_steps} steps x "
            f"{args.ensemble}, mean-fused, threshold 0.5", "sets": out}


# ----------------------------------------------------------------------------- outputs


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Likelihoods ({result['date']}, {result['hardware']})", "",
             f"`{result['command']}` (commit {result['git_commit']}, "
             f"{result['wall_seconds']:.0f} s wall)", ""]
    if "unconditional" in result:
        u = result["unconditional"]
        lines += ["## Bits/dim of X-rays under the unconditional model", "",
                  f"{u['dequantisation']}; {result['probes']} Hutchinson probes per image; "
                  f"AUROC: telling the domain from {u['reference_domain']} by bits/dim.", "",
                  tables.likelihood_domains_table(result), ""]
    if "conditional" in result:
        c = result["conditional"]
        lines += [f"## log p(mask | X-ray) of the {c['task']} model", "",
                  f"Own masks: {c['masks_from']}. Bits/dim of the mask density smoothed at "
                  f"t_eps = {c['t_eps']:g} (lower = more likely). A mask is bad below Dice "
                  f"{c['dice_threshold']}.", "", tables.likelihood_masks_table(result), ""]
    return "\n".join(lines)


def plot_histograms(result: dict[str, Any], path: Path) -> Path:
    series = {}
    if "unconditional" in result:
        for name, v in result["unconditional"]["per_image"].items():
            series[f"X-ray: {name}"] = v
    if "conditional" in result:
        for name, r in result["conditional"]["sets"].items():
            series[f"own mask | X-ray: {name}"] = r["per_image"]["bpd_own"]
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for name, v in series.items():
        ax.hist(np.asarray(v), bins=30, alpha=0.5, label=name)
    ax.set_xlabel("bits/dim")
    ax.set_ylabel("images")
    ax.set_title("bits/dim per domain (lower = more likely)")
    ax.legend(fontsize=7)
    return save_png(fig, png_path(path))


def plot_scatter(result: dict[str, Any], path: Path) -> Path:
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for name, r in result["conditional"]["sets"].items():
        ax.scatter(r["per_image"]["dice"], r["per_image"]["bpd_own"], s=8, label=name)
    ax.axvline(result["conditional"]["dice_threshold"], color="grey", ls="--", lw=0.8)
    ax.set_xlabel("per-image Dice of the model's own mask")
    ax.set_ylabel("bits/dim of that mask given the X-ray")
    ax.set_title(f"{result['conditional']['task']}: likelihood vs Dice")
    ax.legend(fontsize=7)
    return save_png(fig, png_path(path))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    result: dict[str, Any] = {
        "command": "python " + " ".join(["benchmarks/likelihood.py", *sys.argv[1:]]),
        "git_commit": git_commit(__file__),
        "hardware": devices.describe_device(torch.device("cpu")),
        "date": time.strftime("%Y-%m-%d %H:%M"), "probes": args.probes,
        "rtol": args.rtol, "atol": args.atol,
        "data": "synthetic phantom" if args.data_root is None else str(args.data_root)}
    if args.unconditional is not None:
        result["unconditional"] = unconditional_study(args)
    if args.segmentation is not None:
        result["conditional"] = conditional_study(args)
    result["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "likelihood.json").write_text(json.dumps(result, indent=2))
    (args.out / "likelihood.md").write_text(markdown(result))
    figures = [plot_histograms(result, args.out / "bits_per_dim.png")]
    if "conditional" in result:
        figures.append(plot_scatter(result, args.out / "likelihood_vs_dice.png"))
    result["figures"] = [str(f) for f in figures]
    (args.out / "likelihood.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(markdown(result))
    print(f"wrote {args.out / 'likelihood.json'}, likelihood.md and {len(result['figures'])} "
          f"PNG in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
