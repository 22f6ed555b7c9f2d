"""Probability-flow ODE through ``torchdiffeq.odeint`` (Song et al. 2021, eq. 13; Chen
et al. 2018).

The deterministic process with the same marginals as the forward SDE is

    dx/dt = f(t) x - 1/2 g(t)^2 score(x, t) = f(t) x + g(t)^2 eps_hat(x, t) / (2 sigma(t)),

the ``noise = 0`` member of :meth:`scoregen.ScoreModel.reverse_drift` (shared with the
reverse SDE samplers and :mod:`scoregen.likelihood`),

integrated from ``T`` down to ``t_end`` (adaptive ``dopri5`` by default, or any fixed-grid
torchdiffeq method, one step per grid interval), then denoised by Tweedie's formula.
torchdiffeq does not report the number of function evaluations; :class:`ProbabilityFlow`
counts them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun

__all__ = ["ode", "ProbabilityFlow", "ADAPTIVE_METHODS", "FIXED_GRID_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")


class ProbabilityFlow(nn.Module):
    """``dx/dt`` of the probability-flow ODE as a torchdiffeq function ``(t, x) -> dx/dt``.

    The drift is :meth:`scoregen.ScoreModel.reverse_drift` with ``noise = 0``.

    Args:
        model: the ScoreModel.
        cond: condition passed to the net unchanged (validated by the caller, once).
        net_dtype: dtype the net is called in (the state may be float64).
        t_min: times below this are clamped to it. Adaptive solvers probe beyond the
            interval (initial step selection, overshoot then interpolation); at t = 0,
            sigma = 0 and the ODE is singular, so the caller's ``t_end`` belongs here.
        self_conditioning: feed a self-conditioned net the last evaluation's ``x0_hat``
            (the ``ode`` sampler). Off, the net reads zeros and the velocity is a function
            of ``(t, x)`` alone, as the change of variables of a likelihood needs.

    ``nfe`` counts evaluations; ``x0_hat`` is the last evaluation's x0 estimate.
    """

    def __init__(
        self,
        model: ScoreModel,
        cond: Tensor | None = None,
        net_dtype: torch.dtype | None = None,
        t_min: float = 0.0,
        self_conditioning: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.cond = cond
        self.net_dtype = net_dtype
        self.t_min = t_min
        self.self_conditioning = self_conditioning and model.self_condition
        self.nfe = 0
        self.x0_hat: Tensor | None = None

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        sde = self.model.sde
        t64 = t.detach().to(torch.float64).reshape(1).clamp(self.t_min, sde.T)
        alpha, sigma = (v.to(x.dtype) for v in sde.alpha_sigma(t64, check=False))
        f, g2 = (v.to(x.dtype) for v in sde.f_g2(t64, check=False))
        t_vec = t64.to(self.net_dtype or x.dtype).expand(x.shape[0])
        prev = self.x0_hat
        x_self = (prev.detach() if self.self_conditioning and prev is not None
                  and prev.shape == x.shape else None)
        drift, self.x0_hat = self.model.reverse_drift(
            x, t_vec, self.cond, noise=0.0, coeffs=(alpha, sigma, f, g2),
            net_dtype=self.net_dtype, x_self=x_self)
        self.nfe += 1
        return drift


@torch.no_grad()
def ode(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
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
    """Sample by integrating the probability-flow ODE from ``T`` to ``t_end``.

    Args:
        method: adaptive (``"dopri5"`` default, ``"bosh3"``, ...) using ``rtol``/``atol``,
            or fixed-grid (``"euler"``, ``"midpoint"``, ``"heun2"``, ``"rk4"``, ...), one
            solver step per grid interval.
        steps, spacing, grid: the time grid, as for every sampler. Fixed-grid methods
            need one (``steps`` or ``grid``). An adaptive method integrates each grid
            interval with its own step control; with no ``steps``/``grid`` its grid is
            the single interval ``[T, t_end]``.
        t_end: where integration stops; default the SDE's ``t_eps``.
        denoise: apply Tweedie's x0_hat at ``t_end`` (one extra NFE).
        callback: called after every grid interval, with the usual keys.
    """
    if method not in ADAPTIVE_METHODS + FIXED_GRID_METHODS:
        raise ValueError(
            f"method must be one of {ADAPTIVE_METHODS + FIXED_GRID_METHODS}, got {method!r}"
        )
    adaptive = method in ADAPTIVE_METHODS
    if not adaptive and steps is None and grid is None:
        raise ValueError(f"fixed-grid method {method!r} needs steps (an integer >= 1) or a grid")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not tol > 0:
            raise ValueError(f"{name} must be > 0, got {tol}")
    t_end = model.sde.t_eps if t_end is None else t_end
    run = SamplingRun(model, x, name="ode", steps=steps or 1, spacing=spacing, t_end=t_end,
                      grid=grid, cond=cond, generator=generator, callback=callback,
                      progress=progress, dtype=dtype, device=device)
    func = ProbabilityFlow(model, run.cond, run.net_dtype, t_min=run.t[-1],
                           self_conditioning=True)
    x = run.x_init
    grid_x = torch.tensor(run.t, dtype=x.dtype, device=x.device)
    for i in run.steps():
        span = grid_x[i:i + 2]
        if adaptive:
            x = odeint(func, x, span, method=method, rtol=rtol, atol=atol,
                       options={"step_t": span[1:]})[-1]
        else:
            x = odeint(func, x, span, method=method,
                       options={"grid_constructor": lambda *_, s=span: s})[-1]
        run.nfe += func.nfe
        func.nfe = 0
        run.report(i, x, func.x0_hat)
    if func.x0_hat is not None:
        run.remember(func.x0_hat)  # the final denoise reads the flow's last estimate
    return run.finish(run.final_denoise(x) if denoise else x)
