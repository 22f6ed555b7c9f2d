#!/usr/bin/env python
"""Every sampler on a 2-D ring of eight Gaussians, driven by the exact score.

The data is ``ring_mixture(8, radius=1, std=0.05)``; its score under any SDE is known in
closed form (``GaussianMixture.model``), so no training is needed and every panel shows
only what the sampler itself does. One PNG: a panel of true samples, then one per sampler.

    python examples/toy_2d.py                      # N = 2000, about 10-20 s on one CPU core
    python examples/toy_2d.py --quick --out /tmp/toy.png
    python examples/toy_2d.py --sde ve             # the same on the VE SDE
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import scoregen as sg
from scoregen import plotting

SDES = {"ddpm": sg.VPSDE.ddpm, "vp": sg.VPSDE, "subvp": sg.SubVPSDE, "ve": sg.VESDE}

#: panel title -> (sampler, options); (full run, --quick run).
RUNS: dict[str, tuple[str, dict, dict]] = {
    "ddim, uniform grid": ("ddim", {"steps": 50, "spacing": "uniform"},
                           {"steps": 20, "spacing": "uniform"}),
    "ddim, quadratic grid": ("ddim", {"steps": 50, "spacing": "quadratic"},
                             {"steps": 20, "spacing": "quadratic"}),
    "ancestral": ("ancestral", {"steps": 1000}, {"steps": 100}),
    "euler_maruyama": ("euler_maruyama", {"steps": 500}, {"steps": 100}),
    "torchsde": ("torchsde", {"steps": 500}, {"steps": 50}),
    "ode (dopri5)": ("ode", {}, {"rtol": 1e-3, "atol": 1e-3}),
    "langevin": ("langevin", {}, {"steps": 20, "n_steps_each": 3, "step_size": 1.0}),
    "pc": ("pc", {"steps": 500}, {"steps": 50}),
    "dpmpp_2m, 10 NFE": ("dpmpp_2m", {"steps": 10}, {"steps": 10}),
    "unipc, 10 NFE": ("unipc", {"steps": 10}, {"steps": 10}),
    "ipndm, 10 NFE": ("ipndm", {"steps": 10}, {"steps": 10}),
    "dpmpp_3m, 10 NFE": ("dpmpp_3m", {"steps": 10}, {"steps": 10}),
    "dpmpp_2m_sde, 20 NFE": ("dpmpp_2m_sde", {"steps": 20}, {"steps": 20}),
    "heun, 19 NFE": ("heun", {"steps": 10}, {"steps": 10}),
}


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/toy_2d.png"), help="PNG to write")
    parser.add_argument("--n", type=int, default=None, help="samples per panel (2000)")
    parser.add_argument("--sde", choices=sorted(SDES), default="ddpm")
    parser.add_argument("--quick", action="store_true", help="300 samples, fewer steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 2000)
    if n < 2:
        parser.error("--n must be at least 2")

    target = sg.ring_mixture(8, radius=1.0, std=0.05)
    sde = SDES[args.sde]()
    model = target.model(sde)  # a ScoreModel whose net is the exact eps(x, t)
    panels = {"true samples": target.sample(n, torch.Generator().manual_seed(args.seed))}
    for title, (name, full, quick) in RUNS.items():
        options = quick if args.quick else full
        gen = torch.Generator().manual_seed(args.seed)  # the same x_T for every sampler
        t0 = time.perf_counter()
        res = sg.sample_with_info(model, (n, 2), name, generator=gen, **options)
        x, nfe = res.x, res.nfe
        seconds = time.perf_counter() - t0
        panels[f"{title}\nNFE {nfe}, {seconds:.1f} s"] = x
        print(f"{title:22s} NFE {nfe:5d}  {seconds:5.1f} s")
    path = plotting.scatter_panels(panels, args.out, ncols=3, lim=1.5)
    print(f"saved {path.resolve()}")
    return path


if __name__ == "__main__":
    main()
