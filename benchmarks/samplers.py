#!/usr/bin/env python
"""Sampler accuracy vs NFE on closed-form Gaussian mixtures, and per-NFE sampler overhead.

    OMP_NUM_THREADS=1 python benchmarks/samplers.py --quick     # 8 repeats, ~18 min on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/samplers.py             # 32 repeats + extra cases
    OMP_NUM_THREADS=1 python benchmarks/samplers.py --sde all   # also VP, sub-VP and VE

Targets (exact scores at every t, :mod:`scoregen.analytic`; no training involved):

* ``ring2d`` — ``ring_mixture(8, radius=1, std=0.05)``: eight narrow modes on the unit
  circle. Narrow modes punish a grid whose last model call is far above zero noise.
* ``mix64`` — four modes in R^64 at fixed Rademacher (+-1) means, std 0.25, weights
  0.4 / 0.3 / 0.2 / 0.1: well separated (about 11 apart) with unequal weights, where
  stochastic samplers at low NFE misplace mass (pitfalls.md, "Samplers").

Metric. SW2 is the sliced Wasserstein-2 distance (P random directions) between N sampler
outputs and N exact samples; the noise floor is the same distance between two independent
exact samples of size N. Both are noisy at N = 4096 (the ring's floor is dominated by the
multinomial noise of the mode counts), so for each repeat s = 0..R-1:

* directions theta_s, J exact reference samples y_sj and K more exact samples z_sk are drawn
  from seed 10_000 + s; the sampler starts from x_T drawn from seed s — the same x_T for
  every sampler (common random numbers make the rows comparable with each other);
* ``SW2^2 = mean_sj SW2^2(x_s, y_sj)`` and ``floor^2 = mean_sjk SW2^2(z_sk, y_sj)``.

Reported: ``SW2``, ``floor``, ``ratio = SW2 / floor`` with its standard error over the
repeats (delta method), and an ``exact`` row — the estimator applied to exact samples in
place of a sampler — whose ratio is 1 up to that noise. Also: total-variation error of the
mode weights (each point assigned to its most likely mode) and the spread, the RMS of
``(x - mu_k) / s_k`` over points and dimensions (1 = right width; < 1 under-dispersed).

Overhead. The closed-form net is wrapped in a timer; overhead per NFE = (wall time of the
``sample`` call - time inside the net) / NFE: argument checks, grid and schedule set-up,
parametrisation conversions, step arithmetic, noise, solver bookkeeping. Measured twice:
*warm* — on ``ring2d`` (N = 4096, D = 2, the issue's configuration) each case is run
``--timing-repeats`` more times back to back and the minimum is kept, as ``timeit`` does
(other processes share the machine and only ever add time); and *in situ* — min and median
over the accuracy runs, where every case runs once between others (colder caches). The
net is an isotropic fast form of :meth:`GaussianMixture.score` (checked against it at
start-up).

Fast solvers (``--budgets`` default 5, 10, 20, 50, 100): every solver x grid, ``steps = B``
(``heun``: ``(B + 1) // 2`` steps, 2 calls each but 1 for the step to t = 0). ``--peers``
adds diffusers' and k-diffusion's samplers on the same exact model and ``x_T``
(``benchmarks/peers.py``) and a table "best scoregen row / best peer row" per budget with
issue 8's targets.

NFE accounting (budgets B = 10, 20, 50, 100, plus 1000 for ancestral):
``ddim``/``ancestral`` steps = B; ``euler_maruyama`` and ``torchsde`` steps = B - 1 (+1 final
Tweedie denoising); fixed-grid ODE (torchdiffeq, uniform grid to t_eps, +1 denoising):
``euler`` B - 1 steps, ``heun2`` (B - 1) // 2 steps of 2 calls, ``rk4`` (B - 1) // 4 of 4;
adaptive ``dopri5`` at rtol = atol in TOLERANCES uses what it needs; ``langevin`` levels x
steps per level + 1 (see LANGEVIN_PLAN, step size LANGEVIN_STEP); ``pc`` (the default
Euler-Maruyama predictor, or ``pc/ddim`` the DDIM one, + 1 Langevin corrector step at snr
0.16) (B - 1) // 2 grid steps of 2 calls + 1. The NFE column is what the sampler reported,
which can be below the budget (DDPM-snapped dense grids merge points).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import scoregen as sg
from scoregen import devices
from scoregen.plotting import plot_sampler_accuracy
from scoregen.provenance import git_commit

BUDGETS = (5, 10, 20, 50, 100)
#: the fast solvers (issue 8): one row per solver x grid x budget
SOLVERS = ("dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "ipndm", "heun")
#: ours -> the diffusers scheduler it is compared with for the per-NFE overhead
OVERHEAD_PEER = {"ddim": "diffusers/ddim", "dpmpp_2m": "diffusers/dpm++2m",
                 "dpmpp_3m": "diffusers/dpm++3m", "unipc": "diffusers/unipc",
                 "heun": "diffusers/heun"}
#: issue 8's accuracy targets: budget -> {target: max SW2 / floor of the best scoregen row}
SOLVER_TARGETS = {10: {"ring2d": 1.15, "mix64": 1.3}, 5: {"ring2d": 2.0, "mix64": 2.0}}
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
SPACINGS = ("uniform", "quadratic", "logsnr", "karras")
#: budget -> (noise levels, Langevin steps per level); NFE = levels * steps + 1. Chosen by
#: a sweep on ring2d (levels x steps in {B-1 x 1, (B-1)/2 x 2, (B-1)/3 x 3}, step sizes 0.2,
#: 0.5, 1): one step per level below 50 NFE, three above; step size LANGEVIN_STEP.
LANGEVIN_PLAN = {10: (9, 1), 20: (19, 1), 50: (16, 3), 100: (33, 3)}
#: NCSN's rule delta_i = step_size * sigma_i^2. The sampler's default 0.2 (NCSN's, tuned for
#: ~1000 NFE) cannot follow the noise at 10-20 NFE (ratios in the hundreds); the full mode
#: adds it as its own series.
LANGEVIN_STEP = 1.0
SDE_FACTORIES: dict[str, Callable[[], sg.SDE]] = {
    "ddpm": sg.VPSDE.ddpm,
    "vp": sg.VPSDE,
    "subvp": sg.SubVPSDE,
    "ve": sg.VESDE,
}
#: Targets checked on ``ring2d`` (from the issue): (label, row series, budget, max ratio).
RATIO_TARGETS = (
    ("DDIM-50, uniform grid", "ddim/uniform", 50, 1.3),
    ("PF-ODE adaptive (dopri5, tol 1e-5)", "ode/dopri5", None, 1.1),
    ("ancestral-1000", "ancestral", 1000, 1.1),
)
OVERHEAD_TARGET_US = 100.0
#: The plot's y-axis stops at this multiple of the floor (Langevin at step 0.2 reaches 900x).
PLOT_MAX_RATIO = 8.0


# ----------------------------------------------------------------------------- targets
def targets() -> dict[str, tuple[sg.GaussianMixture, str]]:
    """The benchmark's mixtures, with a one-line description each."""
    gen = torch.Generator().manual_seed(0)
    means = (torch.randint(0, 2, (4, 64), generator=gen) * 2 - 1).to(torch.float64)
    return {
        "ring2d": (sg.ring_mixture(8, radius=1.0, std=0.05),
                   "8 modes on the unit circle, std 0.05, equal weights (D = 2)"),
        "mix64": (sg.GaussianMixture(means, 0.25, [0.4, 0.3, 0.2, 0.1]),
                  "4 modes at Rademacher means, std 0.25, weights 0.4/0.3/0.2/0.1 (D = 64)"),
    }


class ExactEps:
    """The exact eps-prediction ``-sigma(t) grad log p_t(x)`` of an isotropic mixture.

    Same values as ``mixture.net(sde, "eps")`` but one (B, D) x (D, K) product instead of
    (B, K, D) broadcasts: ~20x faster in 64-D, so the benchmark time goes to the samplers.
    ``log N(x; a mu_k, v_k I) = -(|x|^2 - 2 a x.mu_k + a^2 |mu_k|^2) / (2 v_k) - D/2 log 2pi v_k``
    with ``v_k = a^2 s_k^2 + sigma^2``.
    """

    def __init__(self, mixture: sg.GaussianMixture, sde: sg.SDE) -> None:
        stds = mixture.stds
        if not torch.equal(stds, stds[:, :1].expand_as(stds)):
            raise ValueError("ExactEps needs isotropic components (one std per component)")
        self.sde = sde
        self.mu = mixture.means  # (K, D) float64
        self.mu2 = self.mu.pow(2).sum(1)  # (K,)
        self.s2 = stds[:, 0] ** 2  # (K,)
        self.logw = mixture.weights.log()
        self.dim = mixture.dim

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        x64 = x.flatten(1).to(torch.float64)  # (B, D)
        alpha, sigma = self.sde.alpha_sigma(t.detach().to(torch.float64), check=False)
        a, s = alpha[:, None], sigma[:, None]  # (B, 1)
        v = a**2 * self.s2 + s**2  # (B, K)
        sq = (x64.pow(2).sum(1, keepdim=True) - 2 * a * (x64 @ self.mu.T) + a**2 * self.mu2)
        logits = self.logw - 0.5 * self.dim * (2 * math.pi * v).log() - 0.5 * sq / v
        r_over_v = logits.softmax(1) / v  # (B, K)
        score = a * (r_over_v @ self.mu) - x64 * r_over_v.sum(1, keepdim=True)
        return (-s * score).reshape(x.shape).to(x.dtype)


class TimedNet:
    """Wrap a net, accumulating the seconds spent inside it and its number of calls."""

    def __init__(self, net: Callable[..., Tensor]) -> None:
        self.net = net
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        t0 = time.perf_counter()
        out = self.net(x, t, cond)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One sampler configuration: a point of one series of the plot."""

    series: str  # e.g. "ddim/karras": the line it belongs to
    sampler: str
    options: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None  # the NFE it aims at (None: adaptive)

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.series} ({opts})" if opts else self.series


def solver_steps(name: str, budget: int) -> int:
    """Grid steps of a fast solver for an NFE budget (Heun: 2 calls a step, 1 for the last)."""
    return (budget + 1) // 2 if name == "heun" else budget


def build_cases(budgets: Sequence[int] = BUDGETS, full: bool = False,
                peers: bool = False) -> list[Case]:
    """Every sampler at every budget (see the module docstring for the NFE accounting)."""
    cases: list[Case] = []
    for b in budgets:
        cases += [Case(f"{name}/{sp}", name, {"steps": solver_steps(name, b), "spacing": sp}, b)
                  for name in SOLVERS for sp in SPACINGS]
        cases += [Case(f"unipc3/{sp}", "unipc", {"steps": b, "spacing": sp, "order": 3}, b)
                  for sp in SPACINGS]
        if peers:
            from peers import PEER_CASES

            cases += [Case(f"peer:{series}", "peer", {"series": series}, b)
                      for series in PEER_CASES]
        cases += [Case(f"ddim/{sp}", "ddim", {"steps": b, "spacing": sp}, b) for sp in SPACINGS]
        cases.append(Case("ancestral", "ancestral", {"steps": b}, b))
        if full:
            cases.append(Case("ancestral/large", "ancestral", {"steps": b, "variance": "large"},
                              b))
            cases.append(Case("ddim/eta=1", "ddim", {"steps": b, "eta": 1.0}, b))
        cases.append(Case("euler_maruyama", "euler_maruyama", {"steps": b - 1}, b))
        cases.append(Case("torchsde", "torchsde", {"steps": b - 1}, b))
        cases.append(Case("ode/euler", "ode", {"method": "euler", "steps": b - 1}, b))
        if b >= 5:
            cases.append(Case("ode/heun2", "ode", {"method": "heun2", "steps": (b - 1) // 2}, b))
        if b >= 9:
            cases.append(Case("ode/rk4", "ode", {"method": "rk4", "steps": (b - 1) // 4}, b))
        levels, each = LANGEVIN_PLAN.get(b, (b - 1, 1))
        lang = {"steps": levels, "n_steps_each": each}
        cases.append(Case("langevin", "langevin", {**lang, "step_size": LANGEVIN_STEP}, b))
        if full:
            cases.append(Case("langevin/step=0.2", "langevin", {**lang, "step_size": 0.2}, b))
        if b >= 3:
            cases.append(Case("pc", "pc", {"steps": (b - 1) // 2}, b))
            cases.append(Case("pc/ddim", "pc", {"steps": (b - 1) // 2, "predictor": "ddim"}, b))
    if 1000 not in budgets:
        cases.append(Case("ancestral", "ancestral", {"steps": 1000}, 1000))
        if full:
            cases.append(Case("ancestral/large", "ancestral",
                              {"steps": 1000, "variance": "large"}, 1000))
    cases += [Case("ode/dopri5", "ode", {"rtol": tol, "atol": tol}) for tol in TOLERANCES]
    return cases


# ----------------------------------------------------------------------------- estimator
def sorted_projections(x: Tensor, theta: Tensor) -> Tensor:
    """``theta (P, D)`` projections of ``x (N, D)``, each sorted: (P, N), float64."""
    return (theta @ x.detach().flatten(1).to(torch.float64).T).sort(1).values


@dataclass
class Repeat:
    """Everything one repeat compares against: directions, references, floor values."""

    theta: Tensor  # (P, D)
    refs: list[Tensor]  # J sorted projections (P, N)
    floor_sq: list[float]  # SW2^2 of K exact samples against the J references


def make_repeat(target: sg.GaussianMixture, n: int, seed: int, projections: int,
                refs: int, floor_samples: int) -> Repeat:
    """Repeat ``seed``: directions, then ``refs`` references, then ``floor_samples`` exact
    samples whose SW2^2 to every reference estimate the floor (all from seed 10_000 + seed)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    theta = torch.randn(projections, target.dim, generator=gen, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    ys = [sorted_projections(target.sample(n, gen), theta) for _ in range(refs)]
    floor_sq = []
    for _ in range(floor_samples):
        z = sorted_projections(target.sample(n, gen), theta)
        floor_sq += [float((z - y).pow(2).mean()) for y in ys]
    return Repeat(theta, ys, floor_sq)


def sw2_squared(x: Tensor, rep: Repeat) -> float:
    """Mean over the repeat's references of SW2^2(x, y); inf if x is not finite."""
    if not bool(torch.isfinite(x).all()):
        return math.inf
    px = sorted_projections(x, rep.theta)
    return statistics.fmean(float((px - y).pow(2).mean()) for y in rep.refs)


def mode_stats(x: Tensor, target: sg.GaussianMixture) -> tuple[float, float]:
    """(total-variation error of the mode weights, RMS spread in units of the mode std)."""
    x64 = x.detach().flatten(1).to(torch.float64)
    if not bool(torch.isfinite(x64).all()):
        return math.inf, math.inf
    comp = target.component_of(x64)
    freq = torch.bincount(comp, minlength=target.num_components).double() / x64.shape[0]
    tv = 0.5 * float((freq - target.weights).abs().sum())
    z = (x64 - target.means[comp]) / target.stds[comp]
    return tv, float(z.pow(2).mean().sqrt())


def ratio_and_se(sq: Sequence[float], floor_sq: float) -> tuple[float, float, float]:
    """(SW2, ratio to the floor, standard error of the ratio) from per-repeat SW2^2."""
    mean = statistics.fmean(sq)
    if not math.isfinite(mean):
        return math.inf, math.inf, math.nan
    sd = statistics.stdev(sq) if len(sq) > 1 else math.nan
    ratio = math.sqrt(mean / floor_sq)
    return math.sqrt(mean), ratio, 0.5 * ratio * sd / (mean * math.sqrt(len(sq)))


# ----------------------------------------------------------------------------- running
def _run_case(case: Case, model: sg.ScoreModel, timed: TimedNet, sde: sg.SDE,
              shape: tuple[int, int], gen: torch.Generator, dtype: torch.dtype | None
              ) -> tuple[Tensor, int]:
    """(samples, NFE) of one case; a peer row starts from the x_T scoregen would draw."""
    if case.sampler != "peer":
        res = sg.sample_with_info(model, shape, case.sampler, generator=gen, dtype=dtype,
                                  **case.options)
        return res.x, res.nfe
    from peers import run_peer

    x_T = torch.randn(shape, generator=gen) * sde.prior_std
    calls = timed.calls
    x = run_peer(case.options["series"], timed, sde, x_T, case.budget, gen)
    return x, timed.calls - calls


def run_target(
    name: str,
    target: sg.GaussianMixture,
    sde: sg.SDE,
    cases: Sequence[Case],
    *,
    n: int,
    repeats: int,
    projections: int,
    refs: int,
    floor_samples: int,
    dtype: torch.dtype | None = None,
    timing_repeats: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every case ``repeats`` times on one target; returns the JSON-ready summary."""
    exact = ExactEps(target, sde)
    check_x = torch.randn(64, target.dim, generator=torch.Generator().manual_seed(1))
    check_t = torch.linspace(0.01, 1.0, 64) * sde.T
    torch.testing.assert_close(exact(check_x, check_t), target.net(sde, "eps")(check_x, check_t),
                               rtol=1e-4, atol=1e-5)
    timed = TimedNet(exact)
    model = sg.ScoreModel(timed, sde, prediction="eps")
    sg.sample(model, (n, target.dim), "ddim", steps=5)  # warm-up: allocator, lazy imports
    per_case: dict[int, dict[str, list[float]]] = {
        i: {"sq": [], "nfe": [], "seconds": [], "net": [], "overhead": [], "tv": [],
            "spread": []} for i in range(len(cases))}
    exact_row: dict[str, list[float]] = {"sq": [], "tv": [], "spread": []}
    floor_sq: list[float] = []
    t_start = time.perf_counter()
    for s in range(repeats):
        rep = make_repeat(target, n, s, projections, refs, floor_samples)
        floor_sq += rep.floor_sq
        z = target.sample(n, torch.Generator().manual_seed(20_000 + s))
        exact_row["sq"].append(sw2_squared(z, rep))
        tv, spread = mode_stats(z, target)
        exact_row["tv"].append(tv)
        exact_row["spread"].append(spread)
        for i, case in enumerate(cases):
            timed.reset()
            gen = torch.Generator().manual_seed(s)
            t0 = time.perf_counter()
            x, nfe = _run_case(case, model, timed, sde, (n, target.dim), gen, dtype)
            wall = time.perf_counter() - t0
            if timed.calls != nfe:
                raise RuntimeError(f"{case.label}: reported NFE {nfe} != {timed.calls} net calls")
            rec = per_case[i]
            rec["sq"].append(sw2_squared(x, rep))
            rec["nfe"].append(nfe)
            rec["seconds"].append(wall)
            rec["net"].append(timed.seconds / nfe)
            rec["overhead"].append((wall - timed.seconds) / nfe)
            tv, spread = mode_stats(x, target)
            rec["tv"].append(tv)
            rec["spread"].append(spread)
        log(f"  {name}: repeat {s + 1}/{repeats} done ({time.perf_counter() - t_start:.0f} s)")
    warm: dict[int, float] = {}
    if timing_repeats > 0:
        for i, case in enumerate(cases):
            best = math.inf
            for _ in range(timing_repeats):
                timed.reset()
                t0 = time.perf_counter()
                nfe = _run_case(case, model, timed, sde, (n, target.dim),
                                torch.Generator().manual_seed(0), dtype)[1]
                best = min(best, (time.perf_counter() - t0 - timed.seconds) / nfe)
            warm[i] = best
        log(f"  {name}: warm timing ({timing_repeats} runs per case) done "
            f"({time.perf_counter() - t_start:.0f} s)")
    floor_mean_sq = statistics.fmean(floor_sq)
    floor = math.sqrt(floor_mean_sq)
    rows = []
    for i, case in enumerate(cases):
        rec = per_case[i]
        sw2, ratio, se = ratio_and_se(rec["sq"], floor_mean_sq)
        rows.append({
            "series": case.series, "label": case.label, "sampler": case.sampler,
            "options": case.options, "budget": case.budget,
            "nfe": statistics.fmean(rec["nfe"]), "nfe_max": max(rec["nfe"]),
            "sw2": sw2, "ratio": ratio, "ratio_se": se,
            "weight_tv": statistics.fmean(rec["tv"]), "spread": statistics.fmean(rec["spread"]),
            "overhead_us": 1e6 * warm[i] if i in warm else None,
            "overhead_us_insitu_min": 1e6 * min(rec["overhead"]),
            "overhead_us_insitu_median": 1e6 * statistics.median(rec["overhead"]),
            "net_us_per_nfe": 1e6 * statistics.median(rec["net"]),
            "seconds_per_run": statistics.median(rec["seconds"]),
        })
    sw2, ratio, se = ratio_and_se(exact_row["sq"], floor_mean_sq)
    return {
        "dim": target.dim, "floor": floor, "floor_values": len(floor_sq),
        "exact": {"sw2": sw2, "ratio": ratio, "ratio_se": se,
                  "weight_tv": statistics.fmean(exact_row["tv"]),
                  "spread": statistics.fmean(exact_row["spread"])},
        "rows": rows,
    }


# ----------------------------------------------------------------------------- reporting
def check_targets(ring: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets on ``ring2d``: ratios to the floor and per-NFE overhead."""
    rows = ring["rows"]
    checks = []
    for label, series, budget, limit in RATIO_TARGETS:
        cand = [r for r in rows if r["series"] == series and r["budget"] == budget]
        if series == "ode/dopri5":
            cand = sorted(cand, key=lambda r: r["options"]["rtol"])[:1]  # tightest tolerance
        if not cand:
            continue
        r = cand[0]
        checks.append({"target": f"{label}: SW2 <= {limit} x floor", "value": r["ratio"],
                       "value_se": r["ratio_se"], "limit": limit, "nfe": r["nfe"],
                       "passed": r["ratio"] <= limit})
    for sampler in ("ddim", "ancestral"):
        # the default grid: logsnr / karras grids add a one-off set-up (the inverse
        # SDE.t_of_log_snr) that the docs report separately
        cand = [r for r in rows if r["sampler"] == sampler and r["overhead_us"] is not None
                and r["options"].get("spacing", "uniform") == "uniform"
                and not r["options"].get("eta") and "variance" not in r["options"]]
        if cand:
            worst = max(cand, key=lambda r: r["overhead_us"])
            checks.append({
                "target": f"{sampler} overhead < {OVERHEAD_TARGET_US:g} us/NFE, uniform grid "
                          f"(worst: {worst['label']})",
                "value": worst["overhead_us"], "limit": OVERHEAD_TARGET_US, "nfe": worst["nfe"],
                "passed": worst["overhead_us"] < OVERHEAD_TARGET_US})
    return checks


def _is_ours(r: dict[str, Any]) -> bool:
    return r["sampler"] != "peer"


def solver_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 8's comparison: best scoregen row vs best peer row at each budget and target,
    the accuracy targets, and the per-NFE overhead of each solver vs its diffusers match."""
    per_budget, checks = [], []
    for name, res in result["targets"].items():
        rows = [r for r in res["rows"] if r["budget"] is not None]
        for b in sorted({r["budget"] for r in rows}):
            ours = [r for r in rows if r["budget"] == b and _is_ours(r)]
            peer = [r for r in rows if r["budget"] == b and not _is_ours(r)]
            if not ours:
                continue
            best = min(ours, key=lambda r: r["ratio"])
            entry = {"target": name, "budget": b, "ours": best["label"],
                     "ours_ratio": best["ratio"], "ours_se": best["ratio_se"],
                     "ours_nfe": best["nfe"], "ours_spread": best["spread"],
                     "ours_tv": best["weight_tv"]}
            if peer:
                bp = min(peer, key=lambda r: r["ratio"])
                entry.update({"peer": bp["series"], "peer_ratio": bp["ratio"],
                              "peer_se": bp["ratio_se"], "peer_nfe": bp["nfe"],
                              "ours_over_peer": best["ratio"] / bp["ratio"]})
                if b in (5, 10, 20):
                    ex_o, ex_p = best["ratio"] - 1, bp["ratio"] - 1
                    se = math.hypot(best["ratio_se"], bp["ratio_se"])
                    ok = ex_o <= 0.5 * ex_p or (ex_o - 0.5 * ex_p) <= 2 * se
                    checks.append({"target": f"{name}, {b} NFE: excess over floor <= half the "
                                   "best peer's (within 2 SE)",
                                   "value": ex_o, "limit": 0.5 * ex_p, "value_se": se,
                                   "nfe": best["nfe"], "passed": ok})
            limit = SOLVER_TARGETS.get(b, {}).get(name)
            if limit is not None:
                checks.append({"target": f"{name}, {b} NFE: best scoregen row <= {limit} x floor",
                               "value": best["ratio"], "value_se": best["ratio_se"],
                               "limit": limit, "nfe": best["nfe"],
                               "passed": best["ratio"] <= limit})
            per_budget.append(entry)
    overhead = []
    ring = result["targets"].get("ring2d")
    if ring is not None:
        for ours, peer in OVERHEAD_PEER.items():
            mine = [r for r in ring["rows"] if r["sampler"] == ours and _is_ours(r)
                    and r["overhead_us"] is not None]
            theirs = [r for r in ring["rows"] if r["series"] == f"peer:{peer}"
                      and r["overhead_us"] is not None]
            for b in sorted({r["budget"] for r in mine}):
                m = [r["overhead_us"] for r in mine if r["budget"] == b]
                t = [r["overhead_us"] for r in theirs if r["budget"] == b]
                overhead.append({"solver": ours, "peer": peer, "budget": b,
                                 "ours_us": max(m), "peer_us": t[0] if t else None,
                                 "passed": (max(m) <= t[0]) if t else None})
    return {"per_budget": per_budget, "checks": checks, "overhead": overhead}


def solver_markdown(summary: dict[str, Any]) -> list[str]:
    if not summary["per_budget"]:
        return []
    lines = ["## Fast solvers vs peers (issue 8)", "",
             "| target | NFE budget | best scoregen row | ratio | spread | best peer row | "
             "ratio | ours / peer |", "|---|---:|---|---:|---:|---|---:|---:|"]
    for e in summary["per_budget"]:
        peer = (f"{e['peer']} | {e['peer_ratio']:.3f} ± {e['peer_se']:.3f} | "
                f"{e['ours_over_peer']:.3f}") if "peer" in e else "(peers skipped) | – | –"
        lines.append(f"| {e['target']} | {e['budget']} | {e['ours']} | {e['ours_ratio']:.3f} ± "
                     f"{e['ours_se']:.3f} | {e['ours_spread']:.3f} | {peer} |")
    lines += ["", "| check | value | limit | status |", "|---|---:|---:|---|"]
    for c in summary["checks"]:
        lines.append(f"| {c['target']} | {c['value']:.3f} ± {c['value_se']:.3f} | "
                     f"{c['limit']:.3f} | {_status(c)} |")
    if summary["overhead"]:
        lines += ["", "Warm overhead per NFE on ring2d (us), worst grid of ours vs the diffusers "
                  "scheduler:", "", "| solver | NFE | ours | diffusers | status |",
                  "|---|---:|---:|---:|---|"]
        for o in summary["overhead"]:
            peer = "–" if o["peer_us"] is None else f"{o['peer_us']:.0f}"
            st = "–" if o["passed"] is None else ("met" if o["passed"] else "**missed**")
            lines.append(f"| {o['solver']} vs {o['peer']} | {o['budget']} | {o['ours_us']:.0f} "
                         f"| {peer} | {st} |")
    return lines + [""]


def plot_solvers(result: dict[str, Any], path: Path) -> Path:
    """SW2 / floor vs NFE: each scoregen solver on its (current) default grid, peers dashed
    grey."""
    import inspect

    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    from scoregen.plotting import new_figure, save_png

    defaults = {name: inspect.signature(sg.SAMPLERS[name]).parameters["spacing"].default
                for name in ("ddim", *SOLVERS)}
    names = list(result["targets"])
    fig = new_figure(4.5 * len(names) + 2.0, 3.5)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        curves: dict[str, list[tuple[float, float]]] = {}
        for r in result["targets"][name]["rows"]:
            if r["budget"] is None or not math.isfinite(r["ratio"]):
                continue
            if _is_ours(r):
                solver, _, sp = r["series"].partition("/")
                if solver not in defaults or sp != defaults[solver]:
                    continue
            curves.setdefault(r["series"], []).append((r["nfe"], r["ratio"]))
        for series, pts in sorted(curves.items()):
            pts.sort()
            peer = series.startswith("peer:")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--" if peer else "-",
                    marker="x" if peer else "o", ms=3, lw=1, label=series,
                    color="0.6" if peer else None)
        ax.axhline(1.0, color="black", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.9, PLOT_MAX_RATIO)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{name} ({result['meta']['sde']})")
        ax.set_xlabel("NFE")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("SW2 / noise floor")
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_png(fig, path)


def _status(check: dict[str, Any]) -> str:
    """met / missed, flagged when the limit is within two standard errors of the value."""
    word = "met" if check["passed"] else "**missed**"
    se = check.get("value_se")
    if se is not None and math.isfinite(se) and abs(check["value"] - check["limit"]) < 2 * se:
        word += " (within 2 SE: more repeats needed)"
    return word


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _fmt_nfe(r: dict[str, Any]) -> str:
    nfe = r["nfe"]
    return f"{nfe:.0f}" if nfe == r["nfe_max"] else f"{nfe:.1f} (max {r['nfe_max']})"


def markdown(result: dict[str, Any]) -> str:
    """The markdown report of one SDE's run."""
    m = result["meta"]
    lines = [
        f"# Sampler accuracy vs NFE — SDE `{m['sde']}`", "",
        f"`{m['command']}`  ", f"commit {m.get('commit', 'not recorded')}; "
        f"{m['date']}, {m['cpu']}, torch {m['torch']}, "
        f"{m['threads']} thread(s); N = {m['n']}, {m['repeats']} repeats, "
        f"{m['projections']} directions, {m['refs']} references x {m['floor_samples']} "
        f"floor samples per repeat; state dtype {m['dtype']}; total {m['seconds']:.0f} s.", "",
        "SW2 = RMS over repeats of the sliced W2 to exact samples; ratio = SW2 / floor (± "
        "standard error); TV = mode-weight error; spread = RMS of (x - mu_k)/s_k (1 = right); "
        "overhead = (wall - net time) / NFE: warm (min of back-to-back runs; ring2d only) "
        "and in situ (min / median over the accuracy runs).", "",
    ]
    if result.get("checks"):
        lines += ["## Targets (ring2d)", "", "| target | value | NFE | status |",
                  "|---|---|---|---|"]
        for c in result["checks"]:
            se = f" ± {c['value_se']:.3f}" if "value_se" in c else " us"
            lines.append(f"| {c['target']} | {c['value']:.3f}{se} | {c['nfe']:.0f} | "
                         f"{_status(c)} |")
        lines.append("")
    lines += solver_markdown(result.get("solvers") or {"per_budget": []})
    for name, res in result["targets"].items():
        e = res["exact"]
        lines += [
            f"## {name}: {res['description']}", "",
            f"noise floor SW2 = {res['floor']:.5f}; exact samples through the same estimator: "
            f"ratio {e['ratio']:.3f} ± {e['ratio_se']:.3f}, TV {e['weight_tv']:.4f}, "
            f"spread {e['spread']:.3f}.", "",
            "| sampler | options | NFE | SW2 | ratio | TV | spread | overhead us/NFE: warm "
            "/ in situ min / median |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            lines.append(
                f"| {r['series']} | {opts} | {_fmt_nfe(r)} | {r['sw2']:.5f} | "
                f"{r['ratio']:.3f} ± {r['ratio_se']:.3f} | {r['weight_tv']:.4f} | "
                f"{r['spread']:.3f} | {_us(r['overhead_us'])} / "
                f"{_us(r['overhead_us_insitu_min'])} / {_us(r['overhead_us_insitu_median'])} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """SW2 vs NFE, one panel per target, the floor as a dashed line."""
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    floors = {}
    for name, res in result["targets"].items():
        panel: dict[str, tuple[list[float], list[float]]] = {}
        for r in res["rows"]:
            if math.isfinite(r["sw2"]):
                xs, ys = panel.setdefault(r["series"], ([], []))
                xs.append(r["nfe"])
                ys.append(r["sw2"])
        series[f"{name} ({result['meta']['sde']})"] = panel
        floors[f"{name} ({result['meta']['sde']})"] = res["floor"]
    return plot_sampler_accuracy(series, floors, path, max_ratio=PLOT_MAX_RATIO)


def _cpu_name() -> str:
    return devices.device_name("cpu")


# ----------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    head, _, body = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=body,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="8 repeats, main cases (~18 min on 2 cores)")
    p.add_argument("--sde", nargs="+", default=["ddpm"],
                   help=f"SDEs to run: {', '.join(SDE_FACTORIES)} or 'all' (default ddpm)")
    p.add_argument("--targets", nargs="+", default=None, help="subset of: ring2d mix64")
    p.add_argument("--n", type=int, default=4096, help="samples per run (default 4096)")
    p.add_argument("--repeats", type=int, default=None, help="default 8 (quick) / 32")
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    p.add_argument("--projections", type=int, default=256)
    p.add_argument("--refs", type=int, default=4, help="reference samples per repeat")
    p.add_argument("--floor-samples", type=int, default=4, help="extra exact samples/repeat")
    p.add_argument("--only", default=None, help="regex on the case label, e.g. 'ddim|ode'")
    p.add_argument("--float64", action="store_true", help="integrate in float64")
    p.add_argument("--timing-repeats", type=int, default=5,
                   help="back-to-back runs per case for the warm overhead on ring2d (0: off)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs"
                   / "benchmarks", help="output folder (default runs/benchmarks/; the "
                   "committed results are benchmarks/results/: pass it on purpose)")
    p.add_argument("--tag", default="", help="suffix of the output names, e.g. 'solvers'")
    p.add_argument("--peers", action="store_true",
                   help="also run diffusers' and k-diffusion's samplers (the [bench] extra)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--replot", type=Path, nargs="+", default=None, metavar="JSON",
                   help="only rewrite the markdown and PNG of earlier runs from their JSON")
    args = p.parse_args(argv)
    if args.sde == ["all"]:
        args.sde = list(SDE_FACTORIES)
    bad = [s for s in args.sde if s not in SDE_FACTORIES]
    if bad:
        p.error(f"unknown --sde {bad}; choose from {list(SDE_FACTORIES)} or 'all'")
    if args.repeats is None:
        args.repeats = 8 if args.quick else 32
    if args.repeats < 2 or args.n < 16 or args.refs < 1 or args.floor_samples < 1:
        p.error("need --repeats >= 2, --n >= 16, --refs >= 1, --floor-samples >= 1")
    if any(b < 2 for b in args.budgets):
        p.error("budgets must be >= 2")
    return args


def replot(json_path: Path) -> list[Path]:
    """Rewrite the markdown table and the PNG of a run from its JSON."""
    result = _revive(json.loads(json_path.read_text()))
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(result) + "\n")
    written = [md_path, plot(result, json_path.with_suffix(".png"))]
    if any(r["sampler"] in (*SOLVERS, "peer") for res in result["targets"].values()
           for r in res["rows"]):
        stem = json_path.with_suffix("")
        written.append(plot_solvers(result, stem.with_name(stem.name + "_solvers.png")))
    return written


def _revive(obj: Any) -> Any:
    """Undo :func:`_finite`: the strings "inf" / "nan" back to floats."""
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _revive(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_revive(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.replot:
        written = [p for path in args.replot for p in replot(path)]
        for path in written:
            print(f"wrote {path}")
        return written
    torch.set_num_threads(args.threads)
    all_targets = targets()
    names = args.targets or list(all_targets)
    unknown = [t for t in names if t not in all_targets]
    if unknown:
        raise SystemExit(f"unknown --targets {unknown}; choose from {list(all_targets)}")
    peer_rows = False
    if args.peers:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from peers import available

        missing = {lib: why for lib, why in available().items() if why}
        for lib, why in missing.items():
            print(f"skipped peer rows of {lib}: {why} (pip install -e '.[bench]')")
        peer_rows = not missing
    else:
        print("peer rows skipped (run with --peers and the [bench] extra to add them)")
    cases = build_cases(args.budgets, full=not args.quick, peers=peer_rows)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.label)]
        if not cases:
            raise SystemExit(f"--only {args.only!r} matches no case")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for sde_name in args.sde:
        sde = SDE_FACTORIES[sde_name]()
        t0 = time.perf_counter()
        result: dict[str, Any] = {"targets": {}}
        for name in names:
            mixture, description = all_targets[name]
            print(f"[{sde_name}] {name}: {len(cases)} cases x {args.repeats} repeats, "
                  f"N = {args.n}", flush=True)
            res = run_target(name, mixture, sde, cases, n=args.n, repeats=args.repeats,
                             projections=args.projections, refs=args.refs,
                             floor_samples=args.floor_samples,
                             dtype=torch.float64 if args.float64 else None,
                             timing_repeats=args.timing_repeats if name == "ring2d" else 0,
                             log=lambda msg: print(msg, flush=True))
            res["description"] = description
            result["targets"][name] = res
        result["meta"] = {
            "command": "OMP_NUM_THREADS=1 python benchmarks/samplers.py "
                       + " ".join(sys.argv[1:] if argv is None else argv),
            "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "cpu": _cpu_name(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "commit": git_commit(__file__),
            "sde": sde_name, "sde_config": sde.to_dict(), "n": args.n,
            "repeats": args.repeats, "projections": args.projections, "refs": args.refs,
            "floor_samples": args.floor_samples, "quick": args.quick,
            "timing_repeats": args.timing_repeats,
            "dtype": "float64" if args.float64 else "float32",
            "seconds": time.perf_counter() - t0,
            "langevin_plan": {str(k): v for k, v in LANGEVIN_PLAN.items()},
        }
        if "ring2d" in result["targets"]:
            result["checks"] = check_targets(result["targets"]["ring2d"])
        result["solvers"] = solver_summary(result)
        tag = f"_{args.tag}" if args.tag else ""
        stem = args.out / f"samplers{tag}_{sde_name}{'_quick' if args.quick else ''}"
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
        md_path = stem.with_suffix(".md")
        md_path.write_text(markdown(result) + "\n")
        png_path = plot(result, stem.with_suffix(".png"))
        written += [json_path, md_path, png_path]
        if any(r["sampler"] in (*SOLVERS, "peer") for res in result["targets"].values()
               for r in res["rows"]):
            written.append(plot_solvers(result, stem.with_name(stem.name + "_solvers.png")))
        for c in result.get("checks", []):
            print(f"  {_status(c).replace('**', '')}: {c['target']}: {c['value']:.3f}")
    for path in written:
        print(f"wrote {path}")
    return written


def _finite(obj: Any) -> Any:
    """Strict JSON: non-finite floats (a diverged sampler) become the strings "inf"/"nan"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
