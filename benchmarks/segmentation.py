"""Issue 9's segmentation benchmark: the diffusion segmenter at <= 10 network evaluations
per image against supervised peers (MONAI's UNet and the same U-Net trained directly),
with calibration, uncertainty, the false positives on empty masks and a second domain.

From a checkpoint of ``examples/covid_qu_seg.py`` (its ``run_info`` gives the task, size,
augmentation and the Train-carved held-out set), on the Val split:

1. operating points ``sampler:steps x K`` (``--operating``): probabilities = the mean of
   the K sampled masks, fused mask = probabilities > 0.5, NFE = steps * K per image;
   Dice and the calibration study (:mod:`scoregen.segmentation.calibration_study`),
   raw and temperature-scaled (T fitted on the held-out Train subset, never on Val).
   The operating point of the figures and the cross-domain score is the one with the
   best Dice on the held-out subset;
2. calibration vs ensemble size K (``--calibration-k``, 1 DDIM step each by default);
3. supervised peers (``--peer monai,unet``), trained on the same carved Train rest with the
   same augmentation, stopped at 20 epochs or at the diffusion run's training wall time
   (``--budget-seconds``, default the run's ``results.json`` ``train_seconds``);
4. infection: metrics on all images and COVID-19 images, and the false-positive rate on
   images whose true mask is empty; lung: ``--cross-domain DIR`` scores every model
   without retraining on another set's Val split;
5. a reliability diagram and image | truth | probability | uncertainty | error panels.

The old studies stay available: ``--steps 1,2,5`` (a step sweep per ``--samplers``) and
``--ensembles 1,3,5`` (a K sweep); they run only when given.

    python benchmarks/segmentation.py \\
        --checkpoint runs/lung/checkpoints/step_00004640.safetensors \\
        --data-root ../shared/data/covid-qu-ex-64 \\
        --cross-domain ../shared/data/cxr-lung-mcsz --out benchmarks/results/seg_lung

Writes ``segmentation.json`` (every number, the command, the commit, wall time, hardware,
date; saved after each study), ``segmentation.md`` (tables from
``benchmarks/tables.py``) and PNGs to ``--out`` (default ``runs/segmentation``; pass
``benchmarks/results/...`` on purpose for results meant to be committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # segmentation_peers, tables

import segmentation_peers as peers_mod  # noqa: E402
import tables  # noqa: E402

import scoregen as sg  # noqa: E402
from scoregen import devices  # noqa: E402
from scoregen.metrics.calibration import reliability_curve  # noqa: E402
from scoregen.plotting import plot_curves, plot_reliability  # noqa: E402
from scoregen.provenance import git_commit  # noqa: E402
from scoregen.samplers import SAMPLERS, SPACINGS  # noqa: E402
from scoregen.segmentation import (  # noqa: E402
    CovidQUDataset,
    PhantomDataset,
    SegmentationDataset,
    class_groups,
    confusion_matrix,
    describe_augment,
    evaluate_segmentation,
    predict_masks,
    random_subset,
    segment,
    segmentation_panels,
    training_augment,
    uncertainty,
)
from scoregen.segmentation.calibration_study import (  # noqa: E402
    binary_entropy,
    calibration_study,
    empty_truth_false_positives,
    fit_probability_temperature,
    near_region,
    temperature_scale,
)
from scoregen.segmentation.image_norm import check_image_norm  # noqa: E402

DEFAULT_OPERATING = "ddim:1x1,ddim:1x4,ddim:1x8,ddim:2x4,dpmpp_2m:2x4,ddim:5x2,ddim:10x1"
#: The issue's cost limit: network evaluations per image (steps x K).
NFE_LIMIT = 10
NEAR_RADIUS = 4
PANEL_IMAGES = 6


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
    p.add_argument("--eval-samples", type=int, default=None,
                   help="Val images scored (a seeded random subset); default: all")
    p.add_argument("--operating", default=DEFAULT_OPERATING,
                   help="diffusion operating points sampler:STEPSxK, comma separated")
    p.add_argument("--calibration-k", default="1,4,8,16",
                   help="ensemble sizes of the calibration-vs-K study ('' skips it)")
    p.add_argument("--calibration-steps", type=int, default=1,
                   help="DDIM steps per member in the calibration-vs-K study")
    p.add_argument("--peer", default="monai,unet",
                   help=f"supervised peers, comma list of {peers_mod.PEERS} ('' for none)")
    p.add_argument("--no-baseline", action="store_true", help="no supervised peers")
    p.add_argument("--peer-epochs", type=int, default=20)
    p.add_argument("--peer-batch-size", type=int, default=32)
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="peers' training wall-time budget; default: the diffusion run's "
                        "train_seconds (results.json next to the checkpoints folder)")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="train every peer exactly this many steps, ignoring the epochs "
                        "and the wall-time budget (quick checks); default: the budget")
    p.add_argument("--cross-domain", type=Path, default=None, metavar="DIR",
                   help="lung: score every model on DIR's Val split without retraining")
    p.add_argument("--steps", default=None, help="old study: sampling steps to sweep")
    p.add_argument("--samplers", default="ddim,ancestral", help="samplers of --steps")
    p.add_argument("--ensembles", default=None, help="old study: ensemble sizes K to sweep")
    p.add_argument("--ensemble-steps", type=int, default=10, help="DDIM steps per member")
    p.add_argument("--ensemble-samples", type=int, default=128, help="images for the K sweep")
    p.add_argument("--spacing", choices=SPACINGS, default="uniform",
                   help="time grid of every sampler")
    p.add_argument("--batch-size", type=int, default=128, help="images x K per sampler call")
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


def _ints(text: str | None) -> list[int]:
    return [int(v) for v in (text or "").split(",") if v.strip()]


def parse_operating(text: str) -> list[tuple[str, int, int]]:
    """``"ddim:1x4,dpmpp_2m:2x4"`` -> ``[("ddim", 1, 4), ("dpmpp_2m", 2, 4)]``."""
    points = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        try:
            sampler, rest = item.split(":")
            steps, k = (int(v) for v in rest.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--operating: expected sampler:STEPSxK such as ddim:1x4, "
                             f"got {item!r}") from None
        if sampler not in SAMPLERS:
            raise SystemExit(f"--operating: unknown sampler {sampler!r}; valid: "
                             f"{', '.join(SAMPLERS)}")
        if steps < 1 or k < 1:
            raise SystemExit(f"--operating: steps and K must be >= 1, got {item!r}")
        points.append((sampler, steps, k))
    if not points:
        raise SystemExit("--operating: give at least one operating point")
    return points


def parse_peers(args: argparse.Namespace) -> list[str]:
    if args.no_baseline:
        return []
    names = [v.strip() for v in args.peer.split(",") if v.strip()]
    bad = [n for n in names if n not in peers_mod.PEERS]
    if bad:
        raise SystemExit(f"--peer: unknown {bad}; expected a comma list of {peers_mod.PEERS}")
    return list(dict.fromkeys(names))


def load_data(args: argparse.Namespace, info: dict[str, Any]
              ) -> tuple[SegmentationDataset, SegmentationDataset, SegmentationDataset,
                         dict[str, Any]]:
    """(train rest, held-out tuning set, val, notes): the checkpoint's own carving."""
    holdout = info.get("holdout") or {"n": 0, "seed": args.seed}
    augment = training_augment(bool(info.get("augment", args.data_root is not None)),
                               bool(info.get("intensity_augment", False))) or False
    norm = image_norm_of(info)
    if args.data_root is None:
        train = PhantomDataset(args.phantom_train, task=args.task, size=args.size,
                               seed=args.seed, augment=augment, image_norm=norm)
        val = PhantomDataset(args.phantom_val, task=args.task, size=args.size,
                             seed=args.seed + 10_000, image_norm=norm)
        data = "synthetic phantom"
    else:
        progress = not args.no_progress
        train = CovidQUDataset(args.data_root, "Train", task=args.task, size=args.size,
                               augment=augment, seed=int(holdout.get("seed", args.seed)),
                               progress=progress, image_norm=norm)
        val = CovidQUDataset(args.data_root, args.split, task=args.task, size=args.size,
                             progress=progress, image_norm=norm)
        data = f"COVID-QU-Ex {val.split_root}"
    n_held = int(holdout.get("n", 0))
    if n_held:
        rest, held = train.hold_out(n_held, int(holdout.get("seed", 0)))
        held_note = f"{n_held} Train images carved by hold_out(n={n_held}, seed={holdout['seed']})"
    else:  # a checkpoint without a holdout (the phantom): a fresh phantom set for tuning
        if args.data_root is not None:
            raise SystemExit(f"{args.checkpoint} has no run_info['holdout']: the tuning set "
                             "cannot be rebuilt; retrain with examples/covid_qu_seg.py "
                             "--holdout 256")
        rest = train
        held = PhantomDataset(max(args.phantom_val, 8), task=args.task, size=args.size,
                              seed=args.seed + 20_000, image_norm=norm)
        held_note = f"{len(held)} fresh phantom cases (seed {args.seed + 20_000})"
    notes = {"data": data, "augment": describe_augment(augment or None), "image_norm": norm,
             "train_images": len(rest),
             "held_out": held_note, "held_images": len(held)}
    return rest, held, val, notes


def image_norm_of(info: dict[str, Any]) -> str:
    """The checkpoint's per-image normalisation (run_info "image_norm"; "none" before it)."""
    try:
        return check_image_norm(info.get("image_norm", "none"))
    except ValueError as err:
        raise SystemExit(f"checkpoint run_info: {err}") from err


def diffusion_budget(args: argparse.Namespace) -> tuple[float | None, str]:
    if args.budget_seconds is not None:
        return float(args.budget_seconds), "--budget-seconds"
    run = args.checkpoint.resolve().parent.parent
    results = run / "results.json"
    if results.is_file():
        seconds = json.loads(results.read_text()).get("train_seconds")
        if seconds is not None:
            return float(seconds), str(results)
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in reversed(metrics.read_text().splitlines()):
            try:
                seconds = json.loads(line).get("train_seconds")
            except json.JSONDecodeError:
                continue
            if seconds is not None:
                return float(seconds), str(metrics)
    return None, "unknown (no results.json): peers stop at their epochs only"


#: Thresholds tried on the held-out Train subset (never on Val) for the tuned-threshold Dice.
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(4, 17))  # 0.20 .. 0.80


def micro_dice(prob: torch.Tensor, masks: torch.Tensor, threshold: float,
               rows: torch.Tensor | None = None) -> float:
    """Dice of ``prob > threshold`` over all pixels of the images ``rows`` (bool; all when
    None) against ``masks`` (foreground > 0: the datasets' {-1, +1} or {0, 1}) — the
    benchmark's headline Dice; 1 when both masks are empty."""
    if rows is not None:
        prob, masks = prob[rows], masks[rows]
    return confusion_matrix(prob, masks > 0, threshold).metrics()["dice"]


def tuned_threshold(prob_held: torch.Tensor, held: Study, prob_val: torch.Tensor,
                    val: Study) -> dict[str, float]:
    """The threshold in :data:`THRESHOLDS` with the best headline Dice on the held-out Train
    subset (ties: the one nearest 0.5), and the Val Dice it gives."""
    hrows, vrows = held.headline_rows(), val.headline_rows()
    scored = [(micro_dice(prob_held, held.masks, t, hrows), -abs(t - 0.5), t)
              for t in THRESHOLDS]
    held_dice, _, best = max(scored)
    return {"threshold": best, "held_dice": held_dice,
            "dice": micro_dice(prob_val, val.masks, best, vrows)}


class Study:
    """The truth masks and regions of one image set, and how to score probabilities."""

    def __init__(self, task: str, ds: SegmentationDataset, idx: torch.Tensor,
                 grp: dict[str, torch.Tensor]) -> None:
        self.task, self.images, self.masks, self.grp = task, ds.images[idx], ds.masks[idx], grp
        self.region = near_region(self.masks, NEAR_RADIUS)

    def headline_rows(self) -> torch.Tensor | None:
        """The images of the headline group (COVID-19 for infection); None: all."""
        return self.grp.get("COVID-19")

    def score(self, prob: torch.Tensor, unc: torch.Tensor | None, temperature: float | None
              ) -> dict[str, Any]:
        metrics = evaluate_segmentation(lambda _: (prob > 0.5).float(), self.images,
                                        self.masks, groups=self.grp)
        out: dict[str, Any] = {"metrics": metrics,
                               "calibration": calibration_study(prob, self.masks, unc,
                                                                region=self.region)}
        if temperature is not None:
            out["calibration_T"] = calibration_study(prob, self.masks, unc, region=self.region,
                                                     temperature=temperature)
        if self.task == "infection":
            out["empty_truth"] = empty_truth_false_positives(prob, self.masks)
        return out


def region_note(task: str) -> str:
    what = "true lung mask" if task == "lung" else "true infection mask"
    return (f"'all': every pixel; 'near': pixels within {NEAR_RADIUS} px of the {what} "
            "(near_mask of the truth)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    progress = not args.no_progress
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    points = parse_operating(args.operating)
    peer_names = parse_peers(args)
    ck = sg.load_checkpoint(args.checkpoint)
    info = ck.run_info or {}
    for flag, key, default in (("task", "task", "lung"), ("size", "image_size", 64)):
        given, saved = getattr(args, flag), info.get(key)
        if given is not None and saved is not None and given != saved:
            raise SystemExit(f"--{flag} {given} does not match the checkpoint: "
                             f"{args.checkpoint} was trained with {flag} {saved}")
        setattr(args, flag, given if given is not None else (saved or default))
    if args.cross_domain is not None and args.task != "lung":
        raise SystemExit("--cross-domain scores lung models only (the second domain has "
                         "lung masks only)")
    model = sg.load_model(args.checkpoint, lambda **c: sg.UNet(sg.UNetConfig.from_dict(c)))
    model.eval()
    train_cfg = ck.train_config or {}
    train_ds, held_ds, val_ds, notes = load_data(args, info)
    budget, budget_source = diffusion_budget(args)
    other = None  # the second domain, loaded first so a bad folder fails before any work
    if args.cross_domain is not None:
        other = CovidQUDataset(args.cross_domain, "Val", task="lung", size=args.size,
                               progress=progress, image_norm=image_norm_of(info))
    args.out.mkdir(parents=True, exist_ok=True)
    n_eval = len(val_ds) if args.eval_samples is None else args.eval_samples
    idx = random_subset(len(val_ds), n_eval, args.seed)
    grp = class_groups(args.task, val_ds, idx)
    headline = "COVID-19" if grp else "all"
    held_idx = torch.arange(len(held_ds))
    held_grp = class_groups(args.task, held_ds, held_idx)
    held_headline = "COVID-19" if held_grp else "all"
    val, held = Study(args.task, val_ds, idx, grp), Study(args.task, held_ds, held_idx,
                                                          held_grp)
    result: dict[str, Any] = {
        "checkpoint": str(args.checkpoint), "checkpoint_step": ck.step, **notes,
        "task": args.task, "split": args.split, "n_images": len(idx),
        "headline_group": headline, "image_size": args.size,
        "command": " ".join(["python", *sys.argv] if argv is None
                            else ["python", "benchmarks/segmentation.py", *argv]),
        "git_commit": git_commit(__file__), "hardware": devices.describe_device("cpu"),
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "nfe_limit": NFE_LIMIT, "threshold": 0.5, "regions": region_note(args.task),
        "tuned_threshold_rule": f"best headline Dice on the held-out Train subset over "
                                f"{THRESHOLDS[0]}..{THRESHOLDS[-1]} in steps of 0.05 "
                                "(every model alike); Val is scored at it, never tuned on",
        "temperature": "fitted on the held-out Train subset (fit_temperature on "
                       "logit(p), p clamped to [1e-4, 1-1e-4]), applied to Val",
        "diffusion_budget_seconds": budget, "budget_source": budget_source,
        "operating": [], "calibration_k": [], "peers": {}, "skipped": {},
        "cross_domain": None, "rows": [], "baseline": None, "figures": [],
    }

    def save() -> None:
        """After every study, so a crash later keeps what was measured."""
        result["wall_seconds"] = round(time.perf_counter() - wall0, 1)
        (args.out / "segmentation.json").write_text(json.dumps(result, indent=2))
        (args.out / "segmentation.md").write_text(tables.markdown(result))

    def run_diffusion(images: torch.Tensor, sampler: str, steps: int, k: int):
        return segment(model, images, sampler=sampler, steps=steps, ensemble=k,
                       spacing=args.spacing, batch_size=max(1, args.batch_size // k),
                       generator=torch.Generator().manual_seed(args.seed))

    # 1. operating points
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for sampler, steps, k in points:
        name = f"{sampler}:{steps}x{k}"
        out = run_diffusion(val.images, sampler, steps, k)
        out_h = run_diffusion(held.images, sampler, steps, k)
        prob, prob_h = out.samples.mean(0), out_h.samples.mean(0)
        temp = fit_probability_temperature(prob_h, held.masks)
        held_dice = evaluate_segmentation(lambda _, p=prob_h: (p > 0.5).float(), held.images,
                                          held.masks, groups=held_grp)[held_headline]["dice"]
        row = {"name": name, "sampler": sampler, "steps": steps, "ensemble": k,
               "nfe": steps * k, "within_nfe_limit": steps * k <= NFE_LIMIT,
               "seconds_per_image": out.seconds_per_image, "held_dice": held_dice,
               "temperature": temp, "tuned_threshold": tuned_threshold(prob_h, held, prob, val),
               **val.score(prob, out.uncertainty, temp)}
        result["operating"].append(row)
        outputs[name] = (prob, out.uncertainty)
        print(f"{name:>14s} NFE {steps * k:2d}: Dice[{headline}] "
              f"{row['metrics'][headline]['dice']:.4f} (held {held_dice:.4f}), "
              f"ECE {row['calibration']['all']['ece']:.4f}, T {temp:.3f}, "
              f"{1000 * out.seconds_per_image:.1f} ms/image", flush=True)
        save()
    eligible = [r for r in result["operating"] if r["within_nfe_limit"]] or result["operating"]
    best = max(eligible, key=lambda r: (r["held_dice"], -r["nfe"]))
    result["operating_point"] = best["name"]
    result["operating_point_rule"] = (f"best Dice ({held_headline}) on the held-out Train "
                                      f"subset among points with NFE <= {NFE_LIMIT}")
    save()

    # 2. calibration vs K (samples of one call; the first k members for each K)
    ks = _ints(args.calibration_k)
    if ks:
        k_max, steps = max(ks), args.calibration_steps
        out = run_diffusion(val.images, "ddim", steps, k_max)
        out_h = run_diffusion(held.images, "ddim", steps, k_max)
        for k in ks:
            prob, prob_h = out.samples[:k].mean(0), out_h.samples[:k].mean(0)
            temp = fit_probability_temperature(prob_h, held.masks)
            row = {"sampler": "ddim", "steps": steps, "ensemble": k, "nfe": steps * k,
                   "within_nfe_limit": steps * k <= NFE_LIMIT, "temperature": temp,
                   **val.score(prob, uncertainty(out.samples[:k]), temp)}
            result["calibration_k"].append(row)
            print(f"  calibration K={k:2d} (NFE {steps * k}): ECE "
                  f"{row['calibration']['all']['ece']:.4f}, Brier "
                  f"{row['calibration']['all']['brier']:.4f}", flush=True)
        save()

    # 3. supervised peers
    trained: dict[str, peers_mod.TrainedPeer] = {}
    peer_probs: dict[str, torch.Tensor] = {}
    for name in peer_names:
        try:
            # --baseline-steps: exactly that many steps, no wall-time budget (quick checks)
            exact = args.baseline_steps
            peer = peers_mod.train_peer(
                name, train_ds, epochs=max(args.peer_epochs, exact or 0),
                batch_size=args.peer_batch_size,
                budget_seconds=budget if exact is None else None, max_steps=exact,
                unet_config=ck.model_config, lr=float(train_cfg.get("lr", 1e-3)),
                seed=args.seed, progress=progress)
        except ImportError as err:
            if name != "monai":
                raise
            print(peers_mod.MONAI_SKIP_MESSAGE, flush=True)
            result["skipped"][name] = f"not installed ({err}); pip install -e '.[bench]'"
            save()
            continue
        trained[name] = peer
        t0 = time.perf_counter()
        prob = predict_masks(peer.net, val.images)
        per_image = (time.perf_counter() - t0) / len(val.images)
        prob_h = predict_masks(peer.net, held.images)
        temp = fit_probability_temperature(prob_h, held.masks)
        held_dice = evaluate_segmentation(lambda _, p=prob_h: (p > 0.5).float(), held.images,
                                          held.masks, groups=held_grp)[held_headline]["dice"]
        record = {**peer.record(), "seconds_per_image": per_image, "temperature": temp,
                  "held_dice": held_dice,
                  "tuned_threshold": tuned_threshold(prob_h, held, prob, val),
                  "uncertainty": "binary entropy of the sigmoid",
                  **val.score(prob, None, temp)}
        result["peers"][name] = record
        peer_probs[name] = prob
        if name == "unet":
            result["baseline"] = record  # the former single baseline's key
        print(f"peer {name} ({peer.steps} steps, {peer.epochs:.2f} epochs, "
              f"{peer.train_seconds:.0f} s, stopped by {peer.stopped_by}): Dice[{headline}] "
              f"{record['metrics'][headline]['dice']:.4f}, ECE "
              f"{record['calibration']['all']['ece']:.4f}", flush=True)
        save()

    # 4. cross-domain (lung)
    if other is not None:
        o_idx = torch.arange(len(other))
        sampler, steps, k = best["sampler"], best["steps"], best["ensemble"]
        out = run_diffusion(other.images, sampler, steps, k)
        models = {f"diffusion {best['name']}": out.samples.mean(0)}
        models.update({name: predict_masks(p.net, other.images) for name, p in trained.items()})
        scores = {name: evaluate_segmentation(lambda _, p=p: (p > 0.5).float(), other.images,
                                              other.masks)["all"] for name, p in models.items()}
        result["cross_domain"] = {"data": str(other.split_root), "split": "Val",
                                  "n_images": len(o_idx), "models": scores}
        for name, m in scores.items():
            print(f"cross-domain {name}: Dice {m['dice']:.4f}", flush=True)
        save()

    # old studies, only when asked for
    old_studies(args, model, val_ds, idx, grp, headline, result)
    save()

    # 5. figures
    result["figures"] = figures(args, result, val, outputs[best["name"]], best, trained,
                                peer_probs)
    save()
    print(tables.markdown(result))
    return 0


def old_studies(args: argparse.Namespace, model: sg.ScoreModel, val_ds: SegmentationDataset,
                idx: torch.Tensor, grp: dict[str, torch.Tensor], headline: str,
                result: dict[str, Any]) -> None:
    """The step sweep (``--steps``) and the K sweep (``--ensembles``) of the first benchmark."""
    rows = result["rows"]
    images, masks = val_ds.images[idx], val_ds.masks[idx]
    for sampler in (args.samplers.split(",") if args.steps else []):
        for steps in _ints(args.steps):
            out = segment(model, images, sampler=sampler, steps=steps, spacing=args.spacing,
                          batch_size=args.batch_size,
                          generator=torch.Generator().manual_seed(args.seed))
            m = evaluate_segmentation(out, images, masks, groups=grp)
            rows.append({"study": "steps", "sampler": sampler, "steps": steps, "ensemble": 1,
                         "n_images": len(idx), "seconds_per_image": out.seconds_per_image,
                         "metrics": m})
    ks = _ints(args.ensembles)
    if ks:
        ens_idx = idx[random_subset(len(idx), args.ensemble_samples, args.seed + 1)]
        ens_grp = class_groups(args.task, val_ds, ens_idx)
        if bool(grp) != bool(ens_grp):
            raise ValueError(f"--ensemble-samples {args.ensemble_samples} drew images of one "
                             f"class only; the {headline!r} group needs a larger subset")
        for k in ks:
            out = segment(model, val_ds.images[ens_idx], steps=args.ensemble_steps,
                          spacing=args.spacing, ensemble=k, batch_size=max(1, args.batch_size // k),
                          generator=torch.Generator().manual_seed(args.seed))
            m = evaluate_segmentation(out, val_ds.images[ens_idx], val_ds.masks[ens_idx],
                                      groups=ens_grp)
            rows.append({"study": "ensemble", "sampler": "ddim", "steps": args.ensemble_steps,
                         "ensemble": k, "n_images": len(ens_idx),
                         "seconds_per_image": out.seconds_per_image, "metrics": m,
                         "uncertainty_mean": float(out.uncertainty.mean())})
    if rows:
        plot_old(result, args.out)


def figures(args: argparse.Namespace, result: dict[str, Any], val: Study,
            diffusion: tuple[torch.Tensor, torch.Tensor], best: dict[str, Any],
            trained: dict[str, peers_mod.TrainedPeer], peer_probs: dict[str, torch.Tensor]
            ) -> list[str]:
    """The reliability diagram (near region) and the 5-column panels of every model."""
    region = val.region
    models = {f"diffusion {best['name']}": (diffusion[0], best["temperature"])}
    models.update({name: (peer_probs[name], result["peers"][name]["temperature"])
                   for name in trained})
    curves = {}
    for name, (prob, temp) in models.items():
        for label, p, ls in ((f"{name} [raw]", prob, "-"),
                             (f"{name} [T={temp:.2f}]", temperature_scale(prob, temp), "--")):
            c = reliability_curve(p, (val.masks > 0).float(), region=region)
            curves[label] = (c.confidence, c.frequency, ls)
    paths = [plot_reliability(curves, args.out / "reliability.png",
                              title=f"{result['task']}, {len(val.images)} {result['split']} "
                                    f"images, pixels within {NEAR_RADIUS} px of the truth")]
    pick = random_subset(len(val.images), PANEL_IMAGES, args.seed + 2)
    maps = {"diffusion": (diffusion[0], diffusion[1], f"variance over K={best['ensemble']}")}
    maps.update({name: (peer_probs[name], binary_entropy(peer_probs[name]),
                        "binary entropy") for name in trained})
    for name, (prob, unc, label) in maps.items():
        paths.append(segmentation_panels(
            val.images[pick], val.masks[pick], prob[pick], unc[pick],
            args.out / f"panels_{name}.png", uncertainty_label=label, error_threshold=0.5,
            title=f"{name}" + (f" ({best['name']})" if name == "diffusion" else ""),
            titles=[f"Val #{int(i)}" for i in pick]))
    return [str(p) for p in paths]


def plot_old(result: dict[str, Any], out: Path) -> None:
    g = result["headline_group"]
    steps: dict[str, tuple[list[float], list[float]]] = {}
    for r in result["rows"]:
        if r["study"] == "steps":
            xs, ys = steps.setdefault(r["sampler"], ([], []))
            xs.append(r["steps"])
            ys.append(r["metrics"][g]["dice"])
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
