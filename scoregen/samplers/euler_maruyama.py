"""Reverse-time SDE by Euler–Maruyama (Song et al. 2021, eq. 6 and sec. 4.1).

The reverse of ``dx = f(t) x dt + g(t) dw`` is (Anderson 1982)

    dx = [f(t) x - g(t)^2 grad log p_t(x)] dt + g(t) dw_bar,

integrated backwards from ``T`` to ``t_end`` with steps ``h = t_i - t_{i+1}``:

    x_{i+1} = x_i - h [f(t_i) x_i - g(t_i)^2 score(x_i, t_i)] + g(t_i) sqrt(h) z_i.

The drift is :meth:`scoregen.ScoreModel.reverse_drift` with ``noise = 1``, the same one
the torchsde sampler and the probability-flow ODE (``noise = 0``) integrate.

The residual noise at ``t_end`` is removed by Tweedie's formula (``denoise=True``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun

__all__ = ["euler_maruyama", "euler_maruyama_step"]


def euler_maruyama_step(run: SamplingRun, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
    """One reverse-SDE Euler–Maruyama step ``t_i -> t_{i+1}``; returns ``(x_next, x0_hat)``."""
    drift, x0 = run.reverse_drift(x, i, noise=1.0)
    h = run.t[i] - run.t[i + 1]
    x_next = torch.add(x, drift, alpha=-h)
    return x_next.add_(run.randn_like(x), alpha=math.sqrt(run.g2[i] * h)), x0


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
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
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
    return run.finish(run.final_denoise(x) if denoise else x)
