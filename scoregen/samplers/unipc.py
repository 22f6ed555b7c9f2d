"""UniPC: unified predictor-corrector (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
Framework for Fast Sampling of Diffusion Models", arXiv:2302.04867), data prediction, B(h) =
e^{-h} - 1 ("bh2").

In ``lambda = log(alpha/sigma)``, ``h = lambda_{i+1} - lambda_i``, with the stored estimates
``x0_{i-k}`` at ``r_k = (lambda_{i-k} - lambda_i) / h`` (k = 1..p-1, negative) and
``D_k = (x0_{i-k} - x0_i) / r_k``:

    UniP-p (Alg. 2):  x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} phi_1 x0_i
                                 - alpha_{i+1} B(h) sum_k rho^p_k D_k
    UniC-p (Alg. 1):  x^c_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} phi_1 x0_i
                                 - alpha_{i+1} B(h) [sum_k rho^c_k D_k + rho^c_p (x0_{i+1} - x0_i)]

``phi_1 = e^{-h} - 1`` and the rho solve ``R rho = g`` with ``R_jk = r_k^{j-1}`` (r_p = 1)
and ``g_j = (j-1)! phi_{j+1}(-h) / B(h)`` (the recursion ``phi_{k+1} = phi_k / (-h) - 1/k!``
starting from ``phi_1 / (-h) - 1``, eq. 8 of the paper); UniP-2 uses ``rho = 1/2`` (it is
then DPM-Solver++(2M)), UniC-1 ``rho = 1/2``. The corrector reuses the network call at
the predicted ``x_{i+1}``, which is also the next step's ``x0_{i+1}``: it raises the order
by one at no extra NFE. The last step is not corrected (that would cost a call at its end),
a step to ``sigma = 0`` returns ``x0_hat``, and ``lower_order_final`` works as in
:func:`scoregen.samplers.exponential.step_orders`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun
from scoregen.samplers.exponential import combine, step_orders

__all__ = ["unipc", "unipc_coefficients"]


def unipc_coefficients(
    lam: Sequence[float], alpha: Sequence[float], sigma: Sequence[float], i: int, order: int
) -> tuple[float, list[float], list[float], float]:
    """Coefficients of step ``i -> i+1`` at order ``order``.

    Returns ``(a, b_pred, b_corr, b_new)``: the predictor is ``a x_i + sum_k b_pred[k]
    x0_{i-k}``, the corrector ``a x_i + sum_k b_corr[k] x0_{i-k} + b_new x0_{i+1}``.
    """
    c = alpha[i + 1]
    if sigma[i + 1] == 0.0:
        return 0.0, [c], [c], 0.0
    h = lam[i + 1] - lam[i]
    hh = -h
    a = sigma[i + 1] / sigma[i]
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1  # bh2
    rks = [(lam[i - k] - lam[i]) / h for k in range(1, order)] + [1.0]
    g, h_phi_k, fact = [], h_phi_1 / hh - 1.0, 1
    for j in range(1, order + 1):
        g.append(h_phi_k * fact / b_h)
        fact *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    big_r = torch.tensor([[r ** (j - 1) for r in rks] for j in range(1, order + 1)],
                         dtype=torch.float64)
    g_t = torch.tensor(g, dtype=torch.float64)
    # predictor
    if order == 1:
        rho_p: list[float] = []
    elif order == 2:
        rho_p = [0.5]
    else:
        rho_p = torch.linalg.solve(big_r[:-1, :-1], g_t[:-1]).tolist()
    rho_c = [0.5] if order == 1 else torch.linalg.solve(big_r, g_t).tolist()

    def on_history(rhos: Sequence[float], last: float) -> list[float]:
        # -c phi_1 x0_i - c B sum_k rho_k (x0_{i-k} - x0_i) / r_k - c B last (x0_{i+1} - x0_i)
        b = [-c * h_phi_1] + [0.0] * (order - 1)
        for k, rho in enumerate(rhos, start=1):
            w = c * b_h * rho / rks[k - 1]
            b[0] += w
            b[k] -= w
        b[0] += c * b_h * last
        return b

    return a, on_history(rho_p, 0.0), on_history(rho_c[:-1], rho_c[-1]), -c * b_h * rho_c[-1]


@torch.no_grad()
def unipc(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int = 20,
    order: int = 2,
    corrector: bool = True,
    spacing: str = "logsnr",
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
    """UniPC (bh2, data prediction) from ``x`` = x_T (B, *D) or a shape; ``steps`` NFE.

    Args:
        order: predictor order 1, 2 or 3 (diffusers' default 2, with the corrector the
            update is of order ``order + 1``).
        corrector: apply UniC after every step but the last (no extra NFE).
        Other options as in :func:`scoregen.samplers.dpm_solver.dpmpp_2m`.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order!r}")
    run = SamplingRun(model, x, name="unipc", steps=steps, spacing=spacing, t_end=t_end,
                      grid=grid, cond=cond, generator=generator, callback=callback,
                      progress=progress, dtype=dtype, device=device)
    orders = step_orders(run.num_steps, order, lower_order_final=bool(lower_order_final),
                         sigma=run.sigma)
    coeffs = [unipc_coefficients(run.lam, run.alpha, run.sigma, i, k)
              for i, k in enumerate(orders)]
    x = run.x_init
    x_prev: Tensor | None = None
    history: list[Tensor] = []  # x0_hat_i, x0_hat_{i-1}, ... (evaluated before correction)
    for i in run.steps():
        _, x0 = run.denoise(x, i)
        if corrector and x_prev is not None:
            a, _, b_corr, b_new = coeffs[i - 1]
            x = combine(x_prev, a, [*zip(b_corr, history, strict=False), (b_new, x0)])
        history.insert(0, x0)
        del history[order:]
        a, b_pred, _, _ = coeffs[i]
        x_prev = x
        x = combine(x, a, list(zip(b_pred, history, strict=False)))
        run.report(i, x, x0)
    return run.finish(run.final_denoise(x) if denoise else x)
