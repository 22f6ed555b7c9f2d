"""Probability-flow ODE through ``torchdiffeq.odeint`` (Song et al. 2021, eq. 13; Chen
et al. 2018).

The deterministic process with the same marginals as the forward SDE is

    dx/dt = f(t) x - 1/2 g(t)^2 score(x, t) = f(t) x + g(t)^2 eps_hat(x, t) / (2 sigma(t)),

integrated from ``T`` down to ``t_end`` (adaptive ``dopri5`` by default, or any fixed-grid
torchdiffeq method on a grid of ``steps`` steps), then denoised by Tweedie's formula.
torchdiffeq does not report the number of function evaluations; :class:`ProbabilityFlow`
counts them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint
from tqdm.auto import tqdm

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, SamplingRun

__all__ = ["ode", "ProbabilityFlow", "ADAPTIVE_METHODS", "FIXED_GRID_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")


class ProbabilityFlow(nn.Module):
    """``dx/dt`` of the probability-flow ODE as a torchdiffeq function ``(t, x) -> dx/dt``.

    Args:
        model: the ScoreModel.
        cond: condition passed to the net unchanged.
        net_dtype: dtype the net is called in (the state may be float64).
        on_eval: optional hook ``(t, x, x0_hat)`` after each evaluation.
        t_min: times below this are clamped to it. Adaptive solvers probe beyond the
            interval (initial step selection, overshoot then interpolation); at t = 0,
            sigma = 0 and the ODE is singular, so the caller's ``t_end`` belongs here.
    """

    def __init__(
        self,
        model: ScoreModel,
        cond: Tensor | None = None,
        net_dtype: torch.dtype | None = None,
        on_eval: Any = None,
        t_min: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.cond = cond
        self.net_dtype = net_dtype
        self.on_eval = on_eval
        self.t_min = t_min
        self.nfe = 0

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        sde = self.model.sde
        t64 = t.detach().to(torch.float64).reshape(1).clamp(self.t_min, sde.T)
        alpha, sigma = (v.to(x.dtype) for v in sde._alpha_sigma(t64))
        f, g2 = (v.to(x.dtype) for v in sde._f_g2(t64))
        net_dtype = self.net_dtype or x.dtype
        t_vec = t64.to(net_dtype).expand(x.shape[0])
        out = self.model(x.to(net_dtype), t_vec, self.cond).to(x.dtype)
        eps, x0 = self.model.convert(out, x, alpha, sigma)
        self.nfe += 1
        if self.on_eval is not None:
            self.on_eval(t64, x, x0)
        return f * x + (0.5 * g2 / sigma) * eps


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
    """Sample by integrating the probability-flow ODE from ``T`` to ``t_end``.

    Args:
        method: adaptive (``"dopri5"`` default, ``"bosh3"``, ...) using ``rtol``/``atol``,
            or fixed-grid (``"euler"``, ``"midpoint"``, ``"heun2"``, ``"rk4"``, ...) on a
            grid of ``steps`` steps with ``spacing``.
        t_end: where integration stops; default the SDE's ``t_eps``.
        denoise: apply Tweedie's x0_hat at ``t_end`` (one extra NFE).
        callback: called after every function evaluation with ``{"i", "t", "x",
            "x0_hat", "nfe"}`` (adaptive solvers also evaluate at rejected trial points).
        return_nfe: also return the number of function evaluations actually used.
    """
    if method not in ADAPTIVE_METHODS + FIXED_GRID_METHODS:
        raise ValueError(
            f"method must be one of {ADAPTIVE_METHODS + FIXED_GRID_METHODS}, got {method!r}"
        )
    adaptive = method in ADAPTIVE_METHODS
    if adaptive and steps is not None:
        raise ValueError(f"steps is for fixed-grid methods; {method!r} adapts its own steps "
                         "(set rtol/atol, or choose e.g. method='rk4')")
    if not adaptive and steps is None:
        raise ValueError(f"fixed-grid method {method!r} needs steps (an integer >= 1)")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not tol > 0:
            raise ValueError(f"{name} must be > 0, got {tol}")
    t_end = model.sde.t_eps if t_end is None else t_end
    run = SamplingRun(model, x, name="ode", steps=steps or 1, spacing=spacing, t_end=t_end,
                      cond=cond, generator=generator, dtype=dtype, device=device)
    bar = tqdm(desc="ode", unit="nfe", disable=not progress, leave=False)

    def on_eval(t64: Tensor, x_t: Tensor, x0: Tensor) -> None:
        bar.update(1)
        if callback is not None:
            callback({"i": func.nfe - 1, "t": float(t64), "t_next": None, "x": x_t,
                      "x0_hat": x0, "nfe": run.nfe + func.nfe})

    func = ProbabilityFlow(model, run.cond, run.net_dtype, on_eval, t_min=run.t[-1])
    x = run.x_init
    grid = torch.tensor(run.t, dtype=x.dtype, device=x.device)
    try:
        if adaptive:
            x = odeint(func, x, grid[[0, -1]], method=method, rtol=rtol, atol=atol,
                       options={"step_t": grid[[-1]]})[-1]
        else:
            x = odeint(func, x, grid[[0, -1]], method=method,
                       options={"grid_constructor": lambda *_: grid})[-1]
    finally:
        bar.close()
    run.nfe += func.nfe
    return run.finish(run.final_denoise(x) if denoise else x, return_nfe)
