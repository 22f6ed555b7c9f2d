"""Predictor–corrector sampling (Song et al. 2021, sec. 4.2, Algorithms 2–3).

At each grid time ``t_i``: the corrector (Langevin MCMC targeting ``p_{t_i}``, step size
set by a target signal-to-noise ratio) refines ``x``, then the predictor (any one-step
reverse-time solver) moves it to ``t_{i+1}``. Predictors: ``"euler_maruyama"``,
``"ancestral"`` (Song's reverse diffusion), ``"ddim"`` (eta option) or ``"none"``
(corrector only); correctors: ``"langevin"`` or ``"none"`` (predictor only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.ancestral import ancestral_step
from scoregen.samplers.base import Callback, Generators, SamplingRun, check_nonnegative
from scoregen.samplers.ddim import ddim_step
from scoregen.samplers.euler_maruyama import euler_maruyama_step
from scoregen.samplers.langevin import langevin_correct

__all__ = ["pc", "PREDICTORS", "CORRECTORS"]

PredictorStep = Callable[[SamplingRun, Tensor, int], tuple[Tensor, Tensor]]

PREDICTORS: dict[str, PredictorStep | None] = {
    "euler_maruyama": euler_maruyama_step,
    "ancestral": ancestral_step,
    "ddim": ddim_step,
    "none": None,
}
CORRECTORS = ("langevin", "none")


@torch.no_grad()
def pc(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int = 1000,
    predictor: str = "euler_maruyama",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_corrector: int = 1,
    eta: float = 0.0,
    spacing: str = "uniform",
    grid: Tensor | None = None,
    t_end: float | None = None,
    denoise: bool = True,
    cond: Tensor | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Predictor–corrector sampler; NFE = ``steps * (1 + n_corrector)`` (+1 for ``denoise``).

    Args:
        predictor: one of ``PREDICTORS``; ``eta`` is passed to ``"ddim"``.
        corrector: ``"langevin"`` or ``"none"``.
        snr: the corrector's target signal-to-noise ratio (0.16 in Song et al. for VE on
            CIFAR-10; smaller is gentler).
        n_corrector: Langevin steps per grid time.
        t_end: last grid time; default the SDE's ``t_eps``.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {sorted(PREDICTORS)}, got {predictor!r}")
    if corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {CORRECTORS}, got {corrector!r}")
    if not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an integer >= 0, got {n_corrector!r}")
    snr = check_nonnegative("snr", snr)
    eta = check_nonnegative("eta", eta)
    t_end = model.sde.t_eps if t_end is None else t_end
    run = SamplingRun(model, x, name=f"pc[{predictor}+{corrector}]", steps=steps,
                      spacing=spacing, t_end=t_end, grid=grid, cond=cond,
                      generator=generator, callback=callback, progress=progress,
                      dtype=dtype, device=device)
    step = PREDICTORS[predictor]
    x = run.x_init
    for i in run.steps():
        x0 = None
        if corrector == "langevin" and n_corrector > 0:
            x, x0 = langevin_correct(run, x, i, n_corrector, snr=snr)
        if step is ddim_step:
            x, x0 = ddim_step(run, x, i, eta)
        elif step is not None:
            x, x0 = step(run, x, i)
        run.report(i, x, x0)
    if step is None and corrector == "langevin":  # corrector-only ends at t_{S-1}
        x, _ = langevin_correct(run, x, run.num_steps, n_corrector, snr=snr)
    return run.finish(run.final_denoise(x) if denoise else x)
