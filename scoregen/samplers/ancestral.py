"""Ancestral sampling (Ho et al. 2020, Algorithm 2; the "reverse diffusion" predictor of
Song et al. 2021, sec. 4.2), written for any Gaussian perturbation.

From ``t`` to ``s < t`` draw from the Gaussian posterior ``q(x_s | x_t, x_0 = x0_hat)``:

    mean = (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x0_hat
    var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2        ("small": the true posterior, DDPM's
                                                       beta_tilde)
    var  = sigma_{t|s}^2                              ("large": DDPM's beta_t)

with ``alpha_{t|s} = alpha_t / alpha_s``, ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``.
On ``VPSDE.ddpm(1000)`` with 1000 steps this is exactly DDPM's sampler; the last step
(to ``s = 0``) returns the mean, ``x0_hat``, without noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun

__all__ = ["ancestral", "ancestral_step", "VARIANCES"]

VARIANCES = ("small", "large")


def ancestral_step(
    run: SamplingRun,
    x: Tensor,
    i: int,
    variance: str = "small",
    clip_x0: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One ancestral step ``t_i -> t_{i+1}``; returns ``(x_next, x0_hat)``."""
    _, x0 = run.denoise(x, i)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    a_ts, s2_ts = run.transition(i)
    s2_t, s2_s = run.sigma[i] ** 2, run.sigma[i + 1] ** 2
    # mean = c_x x + c_0 x0_hat; fused multiply-adds (fewer kernels per step, same math)
    mean = torch.add(x * (a_ts * s2_s / s2_t), x0, alpha=run.alpha[i + 1] * s2_ts / s2_t)
    if s2_s == 0.0:  # the last step lands on clean data: no noise
        return mean, x0
    var = s2_ts * s2_s / s2_t if variance == "small" else s2_ts
    return mean.add_(run.randn_like(x), alpha=math.sqrt(var)), x0


@torch.no_grad()
def ancestral(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int | None = None,
    variance: str = "small",
    spacing: str = "uniform",
    grid: Tensor | None = None,
    t_end: float = 0.0,
    clip_x0: float | None = None,
    denoise: bool = True,
    cond: Tensor | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """DDPM ancestral sampling from ``x`` = x_T (B, *D) or a shape.

    Args:
        steps: number of steps; default the SDE's ``num_steps`` (DDPM: 1000) or 1000.
        variance: ``"small"`` (posterior variance) or ``"large"`` (sigma_{t|s}^2).
        clip_x0: clamp x0_hat each step (DDPM's ``clip_denoised`` for data in [-1, 1]).
        Other options as in :func:`scoregen.samplers.ddim`.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if steps is None and grid is None:
        steps = model.sde.num_steps or 1000
    run = SamplingRun(model, x, name="ancestral", steps=steps, spacing=spacing, t_end=t_end,
                      grid=grid, cond=cond, generator=generator, callback=callback,
                      progress=progress, dtype=dtype, device=device)
    x = run.x_init
    for i in run.steps():
        x, x0 = ancestral_step(run, x, i, variance, clip_x0)
        run.report(i, x, x0)
    return run.finish(run.final_denoise(x) if denoise else x)
