"""Reverse-time SDE by Euler–Maruyama (Song et al. 2021, eq. 6 and sec. 4.1).

The reverse of ``dx = f(t) x dt + g(t) dw`` is (Anderson 1982)

    dx = [f(t) x - g(t)^2 grad log p_t(x)] dt + g(t) dw_bar,

integrated backwards from ``T`` to ``t_end`` with steps ``h = t_i - t_{i+1}``:

    x_{i+1} = x_i - h [f(t_i) x_i - g(t_i)^2 score(x_i, t_i)] + g(t_i) sqrt(h) z_i.

The residual noise at ``t_end`` is removed by Tweedie's formula (``denoise=True``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, SamplingRun

__all__ = ["euler_maruyama", "euler_maruyama_step"]


def euler_maruyama_step(run: SamplingRun, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
    """One reverse-SDE Euler–Maruyama step ``t_i -> t_{i+1}``; returns ``(x_next, x0_hat)``."""
    score, x0 = run.score(x, i)
    h = run.t[i] - run.t[i + 1]
    f, g2 = run.f[i], run.g2[i]
    x_mean = (1.0 - h * f) * x + (h * g2) * score
    return x_mean + math.sqrt(g2 * h) * run.randn_like(x), x0


@torch.no_grad()
def euler_maruyama(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int = 1000,
    spacing: str = "uniform",
    grid: Tensor | None = None,
    t_end: float | None = None,
    denoise: bool = True,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_nfe: bool = False,
) -> Tensor | tuple[Tensor, int]:
    """Integrate the reverse SDE with our own Euler–Maruyama loop.

    Args:
        steps: number of EM steps (model calls), plus one for the final denoising.
        t_end: where integration stops; default the SDE's ``t_eps``.
        denoise: apply Tweedie's x0_hat at ``t_end`` (one extra NFE).
        Other options as in :func:`scoregen.samplers.ddim`.
    """
    t_end = model.sde.t_eps if t_end is None else t_end
    run = SamplingRun(model, x, name="euler_maruyama", steps=steps, spacing=spacing,
                      t_end=t_end, grid=grid, cond=cond, generator=generator,
                      callback=callback, progress=progress, dtype=dtype, device=device)
    x = run.x_init
    for i in run.steps():
        x, x0 = euler_maruyama_step(run, x, i)
        run.report(i, x, x0)
    return run.finish(run.final_denoise(x) if denoise else x, return_nfe)
