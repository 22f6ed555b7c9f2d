"""Exponential integrators in data prediction: what DPM-Solver++ and UniPC share.

In ``lambda = log(alpha / sigma)`` the probability-flow ODE for ``x_t = alpha x_0 +
sigma eps`` is, with the data prediction ``x0_hat`` (Lu et al. 2022, arXiv:2211.01095,
eq. 9),

    x_s = (sigma_s / sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^{lambda} x0_hat d lambda.

Expanding ``x0_hat`` in powers of ``lambda - lambda_t`` with ``h = lambda_s - lambda_t > 0``
gives the phi functions (``phi_1 = e^{-h} - 1 < 0``; Lu et al. 2022, eq. 13; Hochbruck &
Ostermann 2010):

    phi_1(h) = expm1(-h),  phi_2(h) = phi_1 / h + 1,  phi_3(h) = phi_2 / h - 1/2,
    x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 x0 + alpha_s phi_2 h x0' - alpha_s phi_3 h^2 x0''

Every multistep solver on this page is then linear in its stored estimates: one step is

    x_{i+1} = a_i x_i + sum_j b_ij x0_hat_{i-j}   (+ c_i z for the SDE variant)

with coefficients that depend only on the grid, so they are computed once per grid, in
float64 Python arithmetic, before the loop (no per-step tensor allocation or host sync).

A step to ``sigma = 0`` (``lambda = +inf``) is the limit ``h -> inf`` of the first-order
step, ``x_{i+1} = x0_hat_i``: the final denoising step. The higher-order terms have no
limit there (their divided differences divide by ``h``), so every exponential integrator
takes its last step to zero noise at first order. ``lower_order_final`` (diffusers'
rule) additionally lowers the order of the last steps on short grids: see
:func:`step_orders`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["phi", "step_orders", "combine", "dpmpp_coefficients", "LOWER_ORDER_FINAL_STEPS"]

#: diffusers' threshold: ``lower_order_final`` acts on grids of fewer than this many steps.
LOWER_ORDER_FINAL_STEPS = 15


def phi(h: float) -> tuple[float, float, float]:
    """``(phi_1, phi_2, phi_3)`` at ``h = lambda_s - lambda_t > 0`` (see the module doc).

    Small ``h`` uses the Taylor series (the closed forms cancel catastrophically).
    """
    if h < 1e-4:
        # phi_1 = -h + h^2/2 - h^3/6 + ..., phi_2 = h/2 - h^2/6 + ..., phi_3 = -h/6 + h^2/24
        return -h + h * h / 2 - h**3 / 6, h / 2 - h * h / 6 + h**3 / 24, -h / 6 + h * h / 24
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return phi_1, phi_2, phi_3


def step_orders(num_steps: int, order: int, *, lower_order_final: bool,
                sigma: Sequence[float], first_order_to_zero: bool = True) -> list[int]:
    """Order used at each step ``i -> i+1`` of a multistep solver of order ``order``.

    * warm start: step ``i`` has at most ``i + 1`` stored estimates, so order ``<= i + 1``;
    * a step to ``sigma = 0`` is first order (the denoising step ``x_{i+1} = x0_hat_i``);
      exponential integrators have no other choice; a solver in ``sigma/alpha`` (iPNDM) may
      pass ``first_order_to_zero=False`` and extrapolate to zero noise at full order;
    * ``lower_order_final`` and fewer than :data:`LOWER_ORDER_FINAL_STEPS` steps: the last
      step is first order and the one before at most second order (diffusers'
      ``lower_order_final``; it keeps short grids stable).
    """
    orders = []
    for i in range(num_steps):
        k = min(order, i + 1)
        if lower_order_final and num_steps < LOWER_ORDER_FINAL_STEPS:
            k = min(k, num_steps - i)
        if first_order_to_zero and sigma[i + 1] == 0.0:
            k = 1
        orders.append(k)
    return orders


def combine(x: Tensor, a: float, terms: Sequence[tuple[float, Tensor]]) -> Tensor:
    """``a x + sum_j b_j y_j`` with fused multiply-adds (one new tensor)."""
    out = x * a if a != 0.0 else None
    for b, y in terms:
        if b == 0.0:
            continue
        out = y * b if out is None else out.add_(y, alpha=b)
    return out if out is not None else torch.zeros_like(x)


def dpmpp_coefficients(lam: Sequence[float], alpha: Sequence[float], sigma: Sequence[float],
                       i: int, order: int, *, eta: float = 0.0) -> tuple[float, list[float]]:
    """``(a_i, [b_i0, b_i1, ...])`` of the DPM-Solver++ step ``i -> i+1`` (data prediction).

    ``b_ij`` multiplies ``x0_hat_{i-j}``. Orders (Lu et al. 2022, Alg. 2 "2M"; the 3M step
    is the Taylor form of k-diffusion's ``sample_dpmpp_3m_sde`` at eta = 0):

    * 1: ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} phi_1 x0_i`` (DDIM);
    * 2: ``D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}``, ``r = h_{i-1} / h_i`` (2M);
    * 3: ``r0 = h_{i-1}/h``, ``r1 = h_{i-2}/h``, ``d1_0 = (x0_i - x0_{i-1})/r0``,
      ``d1_1 = (x0_{i-1} - x0_{i-2})/r1``, ``d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1)``
      (``~ h x0'``), ``d2 = 2 (d1_0 - d1_1)/(r0 + r1)`` (``~ h^2 x0''``);
      ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} (-phi_1 x0_i + phi_2 d1 - phi_3 d2)``.

      This is the Taylor expansion of the module docstring term by term. diffusers,
      k-diffusion (``sample_dpmpp_3m_sde``) and the DPM-Solver reference code use ``d2``
      without the factor 2 (``d1_0 - d1_1 ~ h^2 x0'' (r0 + r1) / 2``), which halves the
      ``x0''`` term: that update is second order (measured slope -2.0 on a Gaussian, against
      -3 and better with the factor; ``tests/test_solvers_order.py``).

    ``eta = 1`` gives the SDE variant (DPM-Solver++(2M) SDE, Lu et al. 2022, eq. 18 / diffusers'
    ``sde-dpmsolver++``): ``a = (sigma_{i+1}/sigma_i) e^{-h}``, ``phi_1`` replaced by
    ``expm1(-2h)``; the noise ``sigma_{i+1} sqrt(-expm1(-2h)) z`` is the caller's. A step to
    ``sigma = 0`` returns ``x0_hat_i`` (``order`` must be 1 there).
    """
    if sigma[i + 1] == 0.0:
        if order != 1:
            raise ValueError("a step to sigma = 0 must be first order")
        return 0.0, [alpha[i + 1]]
    h = lam[i + 1] - lam[i]
    ratio = sigma[i + 1] / sigma[i]
    if eta:
        # 2M-SDE: x_{i+1} = ratio e^{-h} x + alpha_{i+1} (1 - e^{-2h}) D + noise
        if order > 2:
            raise ValueError("the SDE variant is implemented up to order 2")
        one_minus = -math.expm1(-2.0 * h)
        a = ratio * math.exp(-h)
        if order == 1:
            return a, [alpha[i + 1] * one_minus]
        r = (lam[i] - lam[i - 1]) / h
        c = alpha[i + 1] * one_minus
        return a, [c * (1.0 + 0.5 / r), -c * 0.5 / r]
    phi_1, phi_2, phi_3 = phi(h)
    c = alpha[i + 1]
    if order == 1:
        return ratio, [-c * phi_1]
    if order == 2:
        r = (lam[i] - lam[i - 1]) / h
        return ratio, [-c * phi_1 * (1.0 + 0.5 / r), c * phi_1 * 0.5 / r]
    if order == 3:
        r0 = (lam[i] - lam[i - 1]) / h
        r1 = (lam[i - 1] - lam[i - 2]) / h
        # d1_0 = (m0 - m1)/r0, d1_1 = (m1 - m2)/r1 as vectors of (m0, m1, m2) coefficients
        d10 = (1 / r0, -1 / r0, 0.0)
        d11 = (0.0, 1 / r1, -1 / r1)
        diff = tuple(p - q for p, q in zip(d10, d11, strict=True))
        d1 = tuple(p + q * r0 / (r0 + r1) for p, q in zip(d10, diff, strict=True))
        d2 = tuple(2.0 * q / (r0 + r1) for q in diff)
        b = [c * (phi_2 * d1[k] - phi_3 * d2[k]) for k in range(3)]
        b[0] -= c * phi_1
        return ratio, b
    raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}")
