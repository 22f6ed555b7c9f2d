"""EDM's Heun sampler with stochastic churn (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", Alg. 2), for any SDE of this toolkit.

EDM's variables are ``x~ = x / alpha`` and the noise level ``sigma~ = sigma / alpha =
e^{-lambda}``; in them the probability-flow ODE of every ``x_t = alpha x_0 + sigma eps``
process is the same (Karras et al. 2022, eq. 4 with s = 1):

    dx~ / dsigma~ = (x~ - x0_hat(x~, sigma~)) / sigma~ = d(x~, sigma~).

Step ``i``: churn raises the noise level to ``sigma^ = sigma~_i (1 + gamma_i)`` with
``gamma_i = min(S_churn / S, sqrt(2) - 1)`` when ``S_tmin <= sigma~_i <= S_tmax`` (else 0),
by adding noise ``sqrt(sigma^2 - sigma~_i^2) S_noise z``; then Heun's step to
``sigma~_{i+1}``:

    x'      = x^ + (sigma~_{i+1} - sigma^) d(x^, sigma^)
    x~_{i+1} = x^ + (sigma~_{i+1} - sigma^) (d(x^, sigma^) + d(x', sigma~_{i+1})) / 2

except that a step to ``sigma~ = 0`` stays Euler (the denoising step, ``x~_{i+1} =
x0_hat``). NFE: 2 per step, 1 for a step to zero noise (``2 S - 1`` on a grid ending at 0).
The raised level is evaluated at the time ``t^ = t_of_log_snr(-log sigma^)``; it is capped
at the grid's first level (``t^ <= T``), so churn never leaves the SDE's time range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun, check_nonnegative

__all__ = ["heun", "noise_levels", "denoised"]


def noise_levels(run: SamplingRun) -> list[float]:
    """EDM's noise level ``sigma~_i = sigma_i / alpha_i`` on the run's grid."""
    return [s / a for a, s in zip(run.alpha, run.sigma, strict=True)]


def denoised(run: SamplingRun, x_tilde: Tensor, i: int) -> Tensor:
    """``x0_hat`` at grid point ``i`` for the EDM state ``x~`` (one NFE)."""
    return run.denoise(x_tilde * run.alpha[i], i)[1]


@torch.no_grad()
def heun(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int = 10,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    spacing: str = "quadratic",
    grid: Tensor | None = None,
    t_end: float = 0.0,
    denoise: bool = True,
    cond: Tensor | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """EDM Heun (2nd order) with churn from ``x`` = x_T (B, *D) or a shape.

    Args:
        steps: grid steps; NFE = 2 per step, 1 for the last step to t = 0.
        s_churn, s_tmin, s_tmax, s_noise: EDM's churn (Alg. 2); ``s_churn = 0`` (default)
            is the deterministic sampler. ``s_tmin``/``s_tmax`` are noise levels
            ``sigma/alpha``. Churn noise comes from ``generator`` (a list: one per sample).
        Other options as in :func:`scoregen.samplers.ddim`.
    """
    s_churn = check_nonnegative("s_churn", s_churn)
    s_noise = check_nonnegative("s_noise", s_noise)
    s_tmin = check_nonnegative("s_tmin", s_tmin)
    if not isinstance(s_tmax, (int, float)) or isinstance(s_tmax, bool) or s_tmax < s_tmin:
        raise ValueError(f"s_tmax must be a number >= s_tmin={s_tmin}, got {s_tmax!r}")
    run = SamplingRun(model, x, name="heun", steps=steps, spacing=spacing, t_end=t_end,
                      grid=grid, cond=cond, generator=generator, callback=callback,
                      progress=progress, dtype=dtype, device=device)
    lv = noise_levels(run)
    n = run.num_steps
    # churn, precomputed for the grid: raised level, its time, and the added noise's std
    raised: list[tuple[float, Tensor, float, float] | None] = []
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= lv[i] <= s_tmax else 0.0
        s_hat = min(lv[i] * (1.0 + gamma), lv[0])
        if s_hat <= lv[i] or s_churn == 0.0:
            raised.append(None)
            continue
        t_hat = run.sde.t_of_log_snr(torch.tensor([-math.log(s_hat)], dtype=torch.float64))
        alpha_hat = float(run.sde.alpha_sigma(t_hat, check=False)[0])
        t_vec = t_hat.to(run.x_init.device, run.net_dtype).expand(run.x_init.shape[0])
        raised.append((s_hat, t_vec, alpha_hat, s_noise * math.sqrt(s_hat**2 - lv[i] ** 2)))
    x = run.x_init / run.alpha[0]  # x~
    for i in run.steps():
        if raised[i] is None:
            s_hat = lv[i]
            x0 = denoised(run, x, i)
        else:
            s_hat, t_vec, alpha_hat, std = raised[i]
            x = x + std * run.randn_like(x)
            x0 = run.denoise_at(x * alpha_hat, t_vec, alpha_hat, alpha_hat * s_hat)[1]
        d = (x - x0) / s_hat
        dt = lv[i + 1] - s_hat
        x_next = torch.add(x, d, alpha=dt)
        if lv[i + 1] > 0:
            x0_next = denoised(run, x_next, i + 1)
            d_next = (x_next - x0_next) / lv[i + 1]
            x_next = x.add(d + d_next, alpha=0.5 * dt)
            x0 = x0_next
        x = x_next
        run.report(i, x * run.alpha[i + 1], x0)
    x = x * run.alpha[-1]
    return run.finish(run.final_denoise(x) if denoise else x)
