"""DPM-Solver++ 2M / 3M and 2M-SDE (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
Sampling of Diffusion Probabilistic Models", arXiv:2211.01095, Alg. 2 and eq. 18).

Multistep exponential integrators of the probability-flow ODE (or, for ``2M-SDE``, of the
reverse SDE with the noise of DDPM's posterior, eta = 1) in the data prediction
``x0_hat``, in ``lambda = log(alpha / sigma)``, with ``h_i = lambda_{i+1} - lambda_i``:

    2M:     x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) D,
            D = (1 + 1/(2 r)) x0_i - 1/(2 r) x0_{i-1},   r = h_{i-1} / h_i
    3M:     x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} (-phi_1 x0_i + phi_2 d1 - phi_3 d2)
    2M-SDE: x_{i+1} = (sigma_{i+1}/sigma_i) e^{-h} x_i + alpha_{i+1} (1 - e^{-2h}) D
                      + sigma_{i+1} sqrt(1 - e^{-2h}) z

(:func:`scoregen.samplers.exponential.dpmpp_coefficients` has every coefficient). One
network call per step. Lower order at the ends: the first steps warm up (order ``i + 1``),
a step to ``sigma = 0`` returns ``x0_hat`` (the final denoising step), and with
``lower_order_final`` (default) grids of fewer than 15 steps end at order 1 / 2 as in
diffusers. Written against ``(alpha, sigma, lambda)`` only: VP, sub-VP and VE alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun
from scoregen.samplers.exponential import combine, dpmpp_coefficients, step_orders

__all__ = ["dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde"]


def _dpmpp(run: SamplingRun, order: int, eta: float, lower_order_final: bool,
           denoise: bool) -> Tensor:
    """The shared multistep loop; coefficients precomputed for the whole grid."""
    orders = step_orders(run.num_steps, order, lower_order_final=lower_order_final,
                         sigma=run.sigma)
    coeffs = [dpmpp_coefficients(run.lam, run.alpha, run.sigma, i, k, eta=eta)
              for i, k in enumerate(orders)]
    noise = [run.sigma[i + 1] * math.sqrt(-math.expm1(-2.0 * (run.lam[i + 1] - run.lam[i])))
             if eta and run.sigma[i + 1] > 0 else 0.0 for i in range(run.num_steps)]
    x = run.x_init
    history: list[Tensor] = []  # x0_hat_i, x0_hat_{i-1}, ...
    for i in run.steps():
        _, x0 = run.denoise(x, i)
        history.insert(0, x0)
        del history[order:]
        a, b = coeffs[i]
        x = combine(x, a, list(zip(b, history, strict=False)))
        if noise[i]:
            x.add_(run.randn_like(x), alpha=noise[i])
        run.report(i, x, x0)
    return run.finish(run.final_denoise(x) if denoise else x)


def _make(name: str, order: int, eta: float, default_spacing: str, doc: str):  # noqa: ANN202
    @torch.no_grad()
    def solver(
        model: ScoreModel,
        x: Tensor | tuple[int, ...],
        *,
        steps: int = 20,
        spacing: str = default_spacing,
        grid: Tensor | None = None,
        t_end: float = 0.0,
        lower_order_final: bool = True,
        denoise: bool = True,
        cond: Tensor | None = None,
        generator: Generators = None,
        callback: Callback | None = None,
        progress: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        run = SamplingRun(model, x, name=name, steps=steps, spacing=spacing, t_end=t_end,
                          grid=grid, cond=cond, generator=generator, callback=callback,
                          progress=progress, dtype=dtype, device=device)
        return _dpmpp(run, order, eta, bool(lower_order_final), denoise)

    solver.__name__ = solver.__qualname__ = name
    solver.__doc__ = doc + """

    Args:
        steps: grid steps = network calls (default 20).
        spacing: grid spacing (:mod:`scoregen.samplers.grids`); ``grid`` overrides it. The
            default is the solver's measured best at 20 NFE (docs/benchmarks.md).
        t_end: last grid time; 0 (default) makes the last step the denoising step
            ``x0_hat``.
        lower_order_final: on grids of fewer than 15 steps, last step first order and the
            one before at most second order (diffusers' rule). Default True.
        denoise: when ``t_end > 0``, finish with Tweedie's ``x0_hat`` (one NFE).
        dtype: integration dtype (e.g. ``torch.float64``); the net keeps its own.
    Returns:
        samples of x_T's shape and dtype (NFE and grid: :func:`scoregen.sample_with_info`).
    """
    return solver


dpmpp_2m = _make("dpmpp_2m", 2, 0.0, "logsnr",
                 "DPM-Solver++(2M): second-order multistep, data prediction (Lu et al. "
                 "2022, Alg. 2).")
dpmpp_3m = _make("dpmpp_3m", 3, 0.0, "logsnr",
                 "DPM-Solver++(3M): third-order multistep, data prediction (Lu et al. 2022), "
                 "with the Taylor-exact second difference (see dpmpp_coefficients: the peers' "
                 "3M is second order).")
dpmpp_2m_sde = _make("dpmpp_2m_sde", 2, 1.0, "karras",
                     "DPM-Solver++(2M) SDE: the 2M step with DDPM-like noise, eta = 1 (Lu et "
                     "al. 2022, eq. 18). Noise from ``generator`` (a list: one per sample).")
