"""Markdown tables of the segmentation and likelihood benchmarks, from their results JSON.

Every table is one function of a ``segmentation.json`` written by
``benchmarks/segmentation.py``; ``markdown(result)`` is the whole ``segmentation.md``.
Regenerate from committed files (the docs cite these tables, never hand-typed numbers):

    python benchmarks/tables.py benchmarks/results/seg_lung/segmentation.json [...]
    python benchmarks/tables.py --docs README.md docs/results.md   # refill the docs' tables

A doc holds a generated table between ``<!-- table: NAME FILE.json [FILE.json ...] -->``
and ``<!-- /table -->``; ``--docs`` rewrites every such block from the named results
files with the function ``DOC_TABLES[NAME]``, and ``tests/test_doc_tables.py`` fails when
a committed doc differs from what its files give.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["DOC_TABLES", "calibration_k_table", "calibration_table", "cross_domain_table",
           "empty_truth_table", "fill_doc", "markdown", "operating_table", "peers_table",
           "reference_runs_table", "summary_table", "sweep_table", "ablation_table",
           "likelihood_domains_table", "likelihood_masks_table", "unconditional_runs_table"]


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _dice(metrics: dict[str, Any], group: str) -> str:
    return _f(metrics.get(group, {}).get("dice"))


def _models(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, record) of the diffusion operating points, then the peers."""
    out = [(f"diffusion {r['name']}", r) for r in result.get("operating", [])]
    out += [(f"peer {name}", r) for name, r in result.get("peers", {}).items()]
    return out


def operating_table(result: dict[str, Any]) -> str:
    """Dice of every diffusion operating point and every peer on the headline group."""
    g = result["headline_group"]
    groups = ["all"] + ([g] if g != "all" else [])
    head = " | ".join(f"Dice ({x})" for x in groups)
    lines = [f"| model | NFE / image | {head} | Jaccard ({g}) | held-out Dice | ms / image |",
             "| --- | ---: | " + "---: | " * len(groups) + "---: | ---: | ---: |"]
    for label, r in _models(result):
        m = r["metrics"]
        nfe = r.get("nfe", 1)
        mark = " (> limit)" if nfe > result.get("nfe_limit", 10) else ""
        best = " **(operating point)**" if r.get("name") == result.get("operating_point") else ""
        lines.append(f"| {label}{best} | {nfe}{mark} | "
                     + " | ".join(_dice(m, x) for x in groups)
                     + f" | {_f(m.get(g, {}).get('jaccard'))} | {_f(r.get('held_dice'))} | "
                       f"{_f(1000 * r['seconds_per_image'], 1)} |")
    return "\n".join(lines)


def peers_table(result: dict[str, Any]) -> str:
    """How each supervised peer was trained: epochs, steps, seconds, what stopped it."""
    lines = ["| peer | params | epochs | steps | train s | stopped by | recipe |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for name, r in result.get("peers", {}).items():
        lines.append(f"| {name} | {r['params']:,} | {r['epochs']:.2f} | {r['steps']} | "
                     f"{r['train_seconds']:.0f} | {r['stopped_by']} | {r['recipe']} |")
    for name, why in result.get("skipped", {}).items():
        lines.append(f"| {name} | – | – | – | – | skipped | {why} |")
    budget = result.get("diffusion_budget_seconds")
    lines.append("")
    lines.append(f"Budget: {_f(budget, 0)} s of training wall time "
                 f"(the diffusion run's, from {result.get('budget_source')}).")
    return "\n".join(lines)


def calibration_table(result: dict[str, Any], region: str = "near") -> str:
    """ECE, Brier, NLL and uncertainty AUROC / AUPRC / overlap, raw and with T, on
    ``region`` ("all" or "near")."""
    lines = ["| model | T | ECE | Brier | NLL | ECE (T) | Brier (T) | NLL (T) | "
             "unc. AUROC | unc. AUPRC | overlap |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in _models(result):
        c, ct = r["calibration"][region], r.get("calibration_T", {}).get(region, {})
        lines.append(f"| {label} | {_f(r.get('temperature'), 3)} | {_f(c['ece'])} | "
                     f"{_f(c['brier'])} | {_f(c['nll'])} | {_f(ct.get('ece'))} | "
                     f"{_f(ct.get('brier'))} | {_f(ct.get('nll'))} | "
                     f"{_f(c['uncertainty_auroc'])} | {_f(c['uncertainty_auprc'])} | "
                     f"{_f(c['uncertainty_overlap'])} |")
    return "\n".join(lines)


def calibration_k_table(result: dict[str, Any], region: str = "near") -> str:
    """Calibration of the diffusion model vs the ensemble size K."""
    g = result["headline_group"]
    lines = [f"| K | steps | NFE | Dice ({g}) | ECE | Brier | NLL | ECE (T) | "
             "unc. AUROC | unc. AUPRC |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result.get("calibration_k", []):
        c, ct = r["calibration"][region], r.get("calibration_T", {}).get(region, {})
        mark = " (> limit)" if not r["within_nfe_limit"] else ""
        lines.append(f"| {r['ensemble']} | {r['steps']} | {r['nfe']}{mark} | "
                     f"{_dice(r['metrics'], g)} | {_f(c['ece'])} | {_f(c['brier'])} | "
                     f"{_f(c['nll'])} | {_f(ct.get('ece'))} | {_f(c['uncertainty_auroc'])} | "
                     f"{_f(c['uncertainty_auprc'])} |")
    return "\n".join(lines)


def empty_truth_table(result: dict[str, Any]) -> str:
    """Infection: false positives on the images whose true mask is empty."""
    lines = ["| model | empty-truth images | images with any FP | pixel FPR |",
             "| --- | ---: | ---: | ---: |"]
    for label, r in _models(result):
        e = r.get("empty_truth")
        if e is not None:
            lines.append(f"| {label} | {e['n_empty']} | {_f(e['image_fpr'])} | "
                         f"{_f(e['pixel_fpr'], 6)} |")
    return "\n".join(lines)


def cross_domain_table(result: dict[str, Any]) -> str:
    """Lung Dice on the second domain, no retraining; sensitivity against precision says
    whether a model's masks there are too large (precision lower) or too small."""
    cd = result.get("cross_domain")
    if not cd:
        return ""
    lines = [f"Second domain: {cd['data']} {cd['split']}, {cd['n_images']} images", "",
             "| model | Dice | Jaccard | per-image Dice | sensitivity | precision |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in cd["models"].items():
        lines.append(f"| {name} | {_f(m['dice'])} | {_f(m['jaccard'])} | "
                     f"{_f(m.get('dice_per_image'))} | {_f(m.get('sensitivity'))} | "
                     f"{_f(m.get('precision'))} |")
    return "\n".join(lines)


def sweep_table(result: dict[str, Any]) -> str:
    """The old step / K sweeps (only when they ran)."""
    rows = result.get("rows") or []
    if not rows:
        return ""
    g = result["headline_group"]
    lines = ["| study | sampler | steps | K | images | Dice | Jaccard | ms / image |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        m = r["metrics"][g]
        lines.append(f"| {r['study']} | {r['sampler']} | {r['steps']} | {r['ensemble']} | "
                     f"{r['n_images']} | {_f(m['dice'])} | {_f(m['jaccard'])} | "
                     f"{_f(1000 * r['seconds_per_image'], 1)} |")
    return "\n".join(lines)


def _norm_of(result: dict[str, Any]) -> str:
    """" (images equalize)" for a run on normalised images; nothing for plain ones."""
    norm = result.get("image_norm") or "none"
    return "" if norm == "none" else f" (images {norm})"


def markdown(result: dict[str, Any]) -> str:
    """The whole ``segmentation.md`` of one result."""
    g = result["headline_group"]
    parts = [f"# Segmentation benchmark — {result['task']}, {result['n_images']} "
             f"{result['split']} images (headline: {g})", "",
             f"Checkpoint {result['checkpoint']} (step {result['checkpoint_step']}), "
             f"{result.get('data')}{_norm_of(result)}; {result.get('hardware')}, "
             f"{result.get('threads')} "
             f"thread(s); {result.get('date')}; commit {result.get('git_commit')}; wall "
             f"{_f(result.get('wall_seconds'), 0)} s.", "",
             f"Command: `{result.get('command')}`", "",
             f"Threshold 0.5 on the mean of the K samples; NFE = steps x K, limit "
             f"{result.get('nfe_limit')}. Operating point: {result.get('operating_point')} "
             f"({result.get('operating_point_rule')}).", "",
             "## Dice", "", operating_table(result), ""]
    if result.get("peers") or result.get("skipped"):
        parts += ["## Supervised peers", "", peers_table(result), ""]
    if result.get("operating"):
        parts += ["## Calibration (pixels near the truth)", "",
                  f"Regions: {result.get('regions')}. Temperature: "
                  f"{result.get('temperature')}.", "", calibration_table(result, "near"), "",
                  "## Calibration (all pixels)", "", calibration_table(result, "all"), ""]
    if result.get("calibration_k"):
        parts += ["## Calibration vs ensemble size K (near the truth)", "",
                  calibration_k_table(result), ""]
    if result["task"] == "infection":
        parts += ["## False positives on empty masks", "", empty_truth_table(result), ""]
    for title, table in (("Cross-domain", cross_domain_table(result)),
                         ("Step and ensemble sweeps", sweep_table(result))):
        if table:
            parts += [f"## {title}", "", table, ""]
    return "\n".join(parts)


def _operating(result: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in result["operating"] if r["name"] == result["operating_point"])


def summary_table(results: list[dict[str, Any]]) -> str:
    """Issue 9's headline: per task, the diffusion operating point against each peer —
    Dice on the headline group (at 0.5, and at the threshold tuned on the held-out Train
    subset where the run has it), NFE, and ECE / Brier near the truth, raw and with T."""
    lines = ["| task (Dice on) | model | NFE / image | Dice | Dice (held-out threshold) | ECE "
             "| ECE (T) | Brier | Brier (T) | unc. AUROC |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        g = result["headline_group"]
        op = _operating(result)
        rows = [(f"diffusion {op['name']}", op)]
        rows += [(f"{name} (supervised)", r) for name, r in result.get("peers", {}).items()]
        for label, r in rows:
            c, ct = r["calibration"]["near"], r.get("calibration_T", {}).get("near", {})
            tt = r.get("tuned_threshold")
            tuned = "–" if tt is None else f"{tt['dice']:.4f} (at {tt['threshold']:.2f})"
            lines.append(f"| {result['task']} ({g}) | {label} | {r.get('nfe', 1)} | "
                         f"{_dice(r['metrics'], g)} | {tuned} | {_f(c['ece'])} | "
                         f"{_f(ct.get('ece'))} | "
                         f"{_f(c['brier'])} | {_f(ct.get('brier'))} | "
                         f"{_f(c['uncertainty_auroc'])} |")
    return "\n".join(lines)


def reference_runs_table(runs: list[dict[str, Any]]) -> str:
    """The example's reference runs (``results.json`` of ``examples/covid_qu_seg.py``):
    training length and wall time, and the run's own final Dice."""
    lines = ["| task | steps (epochs) | training wall s | torch threads | final eval | Dice (all) "
             "| Dice (COVID-19) | commit |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in runs:
        m = r["metrics"]
        lines.append(f"| {r['task']} | {r['steps']:,} ({r['epochs']}) | "
                     f"{r['train_seconds']:.0f} | {r['threads']} | {r['protocol'].split(';')[0]} "
                     f"| {_dice(m, 'all')} | {_dice(m, 'COVID-19')} | {r.get('commit')} |")
    return "\n".join(lines)


def _recipe(run: dict[str, Any]) -> dict[str, Any]:
    """A run's training settings: its ``recipe`` record, or (results files written before
    the record existed) its recorded command parsed by the example's own parser."""
    if "recipe" in run:
        return run["recipe"]
    import importlib.util
    import shlex

    path = Path(__file__).resolve().parents[1] / "examples" / "covid_qu_seg.py"
    spec = importlib.util.spec_from_file_location("_covid_qu_seg", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    args = example.parse_args(shlex.split(run["command"])[1:])
    return example.recipe_of(args)


def ablation_table(runs: list[dict[str, Any]]) -> str:
    """Reference runs side by side with what differs between them: preset, auxiliary loss
    and its weighting over t, the training-time density (``t^(k-1)``; runs before it existed
    drew t uniformly, k = 1), augmentation, length; the run's own final Dice."""
    lines = ["| run | preset | cond | aux loss (weighting) | t density | augment | steps (epochs) "
             "| training s | final eval | Dice (all) | Dice (COVID-19) | sensitivity (COVID-19) |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in runs:
        rec, m = _recipe(r), r["metrics"]
        aux = "none" if rec["aux_loss"] == "none" else f"{rec['aux_loss']} ({rec['aux_weighting']})"
        out = Path(r["checkpoint"]).parent.parent.name
        k = float(rec.get("time_power", 1.0))
        density = "uniform" if k == 1 else f"t^{k - 1:g}"
        augment = ("yes" if rec["augment"] else "no") + (
            " + intensity" if rec.get("intensity_augment") else "") + (
            f"; images {rec['image_norm']}" if rec.get("image_norm", "none") != "none" else "")
        cond = (rec.get("cond") or "add") + (" + self-cond" if rec.get("self_condition") else "")
        lines.append(f"| {out} | {rec['preset']} | {cond} | {aux} | {density} "
                     f"| {augment} "
                     f"| {r['steps']:,} ({r['epochs']}) | {r['train_seconds']:.0f} | "
                     f"{r['protocol'].split(';')[0].split(', micro')[0]} | {_dice(m, 'all')} | "
                     f"{_dice(m, 'COVID-19')} | {_f(m.get('COVID-19', {}).get('sensitivity'))} |")
    return "\n".join(lines)


def run_seed(run: dict[str, Any]) -> int:
    """A run's ``--seed``: the results file's ``seed``, or (files written before it was
    recorded) the one in its command, the example's default 0 when absent."""
    if "seed" in run:
        return int(run["seed"])
    found = re.search(r"--seed[ =](\d+)", run.get("command", ""))
    return int(found.group(1)) if found else 0


def _mean_sd(values: list[float]) -> str:
    """``mean ± sd`` (sample sd, n - 1) of ``values``; the mean alone for one value."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return f"{mean:.4f}"
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    return f"{mean:.4f} ± {sd:.4f}"


def seeds_table(runs: list[dict[str, Any]]) -> str:
    """Runs of one recipe and length that differ only in ``--seed`` (which also carves the
    held-out subset): each seed's final Dice, then the mean ± sample sd. Refuses runs whose
    recipe or epochs differ, so a table never averages two settings."""
    key = {json.dumps(_recipe(r), sort_keys=True) + f" {r['epochs']}" for r in runs}
    if len(key) != 1:
        raise ValueError(f"seeds table: the {len(runs)} runs differ in more than the seed "
                         "(recipe or epochs)")
    seeds = [run_seed(r) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds table: a seed appears twice in {seeds}")
    lines = ["| run | seed | training s | Dice (all) | Dice (COVID-19) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r, seed in sorted(zip(runs, seeds, strict=True), key=lambda pair: pair[1]):
        out = Path(r["checkpoint"]).parent.parent.name
        lines.append(f"| {out} | {seed} | {r['train_seconds']:.0f} | "
                     f"{_dice(r['metrics'], 'all')} | {_dice(r['metrics'], 'COVID-19')} |")
    cells = []
    for group in ("all", "COVID-19"):
        values = [r["metrics"][group]["dice"] for r in runs if group in r["metrics"]]
        cells.append(_mean_sd(values) if len(values) == len(runs) else "–")
    lines.append(f"| **mean ± sd** ({len(runs)} seeds) | | | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def domain_shift_table(result: dict[str, Any]) -> str:
    """``benchmarks/domain_shift.py``: grey levels and framing per domain, then the cells
    where the box-normalised mean masks differ most."""
    first, second = result["domains"]
    lines = ["| domain | images | raw mean | raw in-lung | raw outside | equalised in-lung "
             "| equalised outside | lung share | box top | box bottom | box left | box right |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in result["stats"].items():
        raw, eq, box = s["raw"], s["equalized"], s["box"]
        lines.append(f"| {name} | {s['n_images']} | {raw['mean']:.3f} | {raw['in_lung']:.3f} | "
                     f"{raw['outside']:.3f} | {eq['in_lung']:.3f} | {eq['outside']:.3f} | "
                     f"{s['lung_share']['mean']:.3f} | {box['top']:.1f} | {box['bottom']:.1f} "
                     f"| {box['left']:.1f} | {box['right']:.1f} |")
    shape = result["mask_shape"]
    lines += ["", f"Mask shape ({result['box']} x {result['box']} lung-box grid): mean "
              f"|difference| {shape['mean_abs_difference']:.4f}; largest cells (row, col as "
              f"fractions of the box; difference = share of lung, {second} minus {first}):", "",
              "| row | col | difference |", "| ---: | ---: | ---: |"]
    for cell in shape["largest_cells"]:
        lines.append(f"| {cell['row']:.2f} | {cell['col']:.2f} | {cell['difference']:+.3f} |")
    study = result.get("model")
    if study:
        lines += ["", f"Masks of {study['checkpoint']} ({study['sampler']}, images "
                  f"{study['image_norm']}) on each domain's Val images; shape error = mean "
                  "|difference| of the box-normalised mean masks:", "",
                  "| domain | images | Dice | predicted / true area | sensitivity | precision "
                  "| shape error vs own masks | vs the other domain's |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, d in study["domains"].items():
            lines.append(f"| {name} | {d['n_images']} | {_f(d.get('dice'))} | "
                         f"{d['area_ratio']:.3f} | "
                         f"{d['sensitivity']:.4f} | {d['precision']:.4f} | "
                         f"{d['shape_error_own']:.4f} | {d['shape_error_other']:.4f} |")
    return "\n".join(lines)


def unconditional_runs_table(runs: list[dict[str, Any]]) -> str:
    """``examples/unconditional_xray.py`` runs side by side: SDE and parametrisation, wall
    time, and :func:`sample_stats` of the grid's raw samples against the Train images."""
    lines = ["| SDE (prediction) | preset | steps | wall | raw pixels in [-1, 1] | raw range "
             "| mean-image corr. | histogram TV | std ratio | commit |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    names = {"vp": "VP / DDPM", "ve": "VE / NCSN"}
    for r in runs:
        st = r["samples"]["stats"]
        lines.append(f"| {names.get(r['sde'], r['sde'])} ({r['prediction']}) | {r['preset']} "
                     f"| {r['train_steps']:,} | {r['wall_seconds']:,.0f} s "
                     f"| {st['in_range']:.3f} | {st['min']:.2f}..{st['max']:.2f} "
                     f"| {st['mean_image_corr']:.3f} | {st['histogram_tv']:.3f} "
                     f"| {st['std_ratio']:.2f} | {r['commit']} |")
    return "\n".join(lines)


def likelihood_domains_table(result: dict[str, Any]) -> str:
    """``benchmarks/likelihood.py``'s unconditional study: bits/dim per domain."""
    lines = ["| domain | images | bits/dim | SE (images) | SE (Hutchinson, per image) "
             "| AUROC vs reference | NFE |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in result["unconditional"]["domains"].items():
        lines.append(f"| {name} | {r['n']} | {_f(r['bits_per_dim'], 3)} | "
                     f"{_f(r['se_over_images'], 3)} | {_f(r['hutchinson_se_per_image'], 3)} | "
                     f"{_f(r.get('ood_auroc'), 3)} | {r['nfe']} |")
    return "\n".join(lines)


def likelihood_masks_table(result: dict[str, Any]) -> str:
    """``benchmarks/likelihood.py``'s conditional study: log p(mask | X-ray) against Dice."""
    lines = ["| images | n | mean Dice | bad masks | bits/dim own | bits/dim true | "
             "true more likely | AUROC (bad mask) | Pearson (bpd, Dice) | Spearman | "
             "AUROC (domain) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in result["conditional"]["sets"].items():
        lines.append(f"| {name} | {r['n']} | {_f(r['dice_mean'])} | {r['bad_masks']} | "
                     f"{_f(r['own_mask']['bits_per_dim'], 3)} | "
                     f"{_f(r['true_mask']['bits_per_dim'], 3)} | {_f(r['true_more_likely'], 3)} "
                     f"| {_f(r['auroc_bad_mask'], 3)} | {_f(r['pearson_bpd_dice'], 3)} | "
                     f"{_f(r['spearman_bpd_dice'], 3)} | {_f(r.get('domain_auroc'), 3)} |")
    return "\n".join(lines)


def synthesis_table(results: list[dict[str, Any]]) -> str:
    """``benchmarks/synthesis.py`` runs side by side: per model and sampler, the Fréchet
    distance at each NFE budget (the NFE used in brackets where it differs), against the
    run's real-vs-real floor and its classifier's Val accuracy."""
    budgets = sorted({r["nfe_budget"] for res in results for r in res["rows"]})
    lines = ["| model | classifier Val acc. | floor | sampler | "
             + " | ".join(f"NFE {b}" for b in budgets) + " |",
             "| --- | ---: | ---: | --- | " + " | ".join("---:" for _ in budgets) + " |"]
    for res in results:
        model = Path(res["checkpoint"]).parent.parent.name
        acc, floor = res["classifier"]["val_accuracy"], res["floor"]["frechet"]
        for name in dict.fromkeys(r["sampler"] for r in res["rows"]):
            by_budget = {r["nfe_budget"]: r for r in res["rows"] if r["sampler"] == name}
            cells = []
            for b in budgets:
                r = by_budget.get(b)
                cells.append("–" if r is None else f"{r['frechet']:.3g}"
                             + ("" if r["nfe"] == b else f" ({r['nfe']})"))
            lines.append(f"| {model} | {acc:.3f} | {floor:.3g} | {name} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


#: name -> function of the loaded results files, for ``<!-- table: NAME FILES -->`` blocks.
DOC_TABLES = {
    "summary": summary_table,
    "reference_runs": reference_runs_table,
    "ablation": ablation_table,
    "seeds": seeds_table,
    "domain_shift": lambda rs: domain_shift_table(rs[0]),
    "unconditional_runs": unconditional_runs_table,
    "synthesis": synthesis_table,
    "likelihood_domains": lambda rs: likelihood_domains_table(rs[0]),
    "likelihood_masks": lambda rs: likelihood_masks_table(rs[0]),
    "operating": lambda rs: operating_table(rs[0]),
    "peers": lambda rs: peers_table(rs[0]),
    "calibration_k": lambda rs: calibration_k_table(rs[0]),
    "empty_truth": lambda rs: empty_truth_table(rs[0]),
    "cross_domain": lambda rs: cross_domain_table(rs[0]),
}

_BLOCK = re.compile(r"(<!-- table: (\w+) ([^>]*?) -->\n)(.*?)(<!-- /table -->)", re.S)


def fill_doc(text: str, root: Path) -> str:
    """``text`` with every generated-table block refilled from its files (relative to
    ``root``, the repository)."""

    def fill(match: re.Match[str]) -> str:
        name, files = match.group(2), match.group(3).split()
        if name not in DOC_TABLES:
            raise ValueError(f"unknown table {name!r}; known: {sorted(DOC_TABLES)}")
        loaded = [json.loads((root / f).read_text()) for f in files]
        return f"{match.group(1)}{DOC_TABLES[name](loaded)}\n{match.group(5)}"

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Print segmentation.md of results files, or refill the docs' generated "
                    "tables from the results files they name.")
    p.add_argument("results", nargs="*", type=Path, metavar="RESULTS.json",
                   help="segmentation.json files of benchmarks/segmentation.py")
    p.add_argument("--docs", nargs="+", type=Path, metavar="DOC.md", default=None,
                   help="rewrite every <!-- table: NAME FILES --> block of these docs")
    args = p.parse_args(argv)
    if args.docs is None and not args.results:
        p.error("give RESULTS.json files or --docs DOC.md ...")
    root = Path(__file__).resolve().parents[1]
    for path in [*(args.docs or []), *args.results]:
        if not path.is_file():
            p.error(f"{path} is not a file")
    try:
        for path in args.docs or []:
            path.write_text(fill_doc(path.read_text(), root))
            print(f"refilled the generated tables of {path}")
        for path in args.results:
            print(markdown(json.loads(path.read_text())))
    except (OSError, ValueError, KeyError) as err:  # a named results file missing or bad
        raise SystemExit(f"tables.py: {type(err).__name__}: {err}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
