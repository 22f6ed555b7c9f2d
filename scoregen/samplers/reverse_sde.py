"""Reverse-time SDE through ``torchsde.sdeint`` (Li et al. 2020; Kidger et al. 2021).

torchsde integrates forward in time over a 2-D state ``(batch, d)``. The reverse SDE
``dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dw_bar`` on ``t: T -> t_end`` is therefore
written in negated time ``u = -t`` (increasing), with ``y(u) = x(-u)`` flattened:

    dy = -[f(-u) y - g(-u)^2 score(y, -u)] du + g(-u) dw_u      (Ito, diagonal noise)

as in torchsde's own ``examples/cont_ddpm.py``. Any data shape works: images are
flattened inside ``f`` and ``g``. The Brownian motion is seeded from the caller's
generator, so runs are reproducible.
"""

from __future__ import annotations

from typing import Any

import torch
import torchsde
from torch import Tensor, nn
from tqdm.auto import tqdm

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, SamplingRun

__all__ = ["sde", "TORCHSDE_METHODS"]

#: Ito solvers of torchsde valid for diagonal noise.
TORCHSDE_METHODS = ("euler", "milstein", "srk")


class _ReverseSDE(nn.Module):
    """The reverse SDE in negated time, in torchsde's ``f``/``g`` contract."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, run: SamplingRun, shape: tuple[int, ...], on_eval: Any = None) -> None:
        super().__init__()
        self.run = run
        self.shape = shape
        self.sde = run.sde
        self.on_eval = on_eval
        self._memo: tuple[Any, Tensor] | None = None

    def _coefficients(self, u: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t64 = (-u).detach().to(torch.float64).reshape(1).clamp(0.0, self.sde.T)
        alpha, sigma = self.sde._alpha_sigma(t64)
        f, g2 = self.sde._f_g2(t64)
        return tuple(v.to(like.dtype) for v in (alpha, sigma, f, g2))  # type: ignore[return-value]

    def f(self, u: Tensor, y: Tensor) -> Tensor:
        # torchsde calls f(t0, y0) once to check shapes and the solver then calls it again
        # with the same arguments: answer the repeat from a one-entry memo (no wasted NFE).
        key = (float(u), y.data_ptr(), y._version)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        x = y.reshape(self.shape)
        alpha, sigma, f, g2 = self._coefficients(u, y)
        t_vec = (-u).to(self.run.net_dtype).reshape(1).expand(x.shape[0])
        eps, x0 = self.run.denoise_at(x, t_vec, alpha, sigma)
        drift = (-(f * x + (g2 / sigma) * eps)).flatten(1)
        self._memo = (key, drift)
        if self.on_eval is not None:
            self.on_eval(x, x0)
        return drift

    def g(self, u: Tensor, y: Tensor) -> Tensor:
        _, _, _, g2 = self._coefficients(u, y)
        return g2.sqrt().expand_as(y)


@torch.no_grad()
def sde(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int = 1000,
    method: str = "euler",
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
    """Integrate the reverse SDE with ``torchsde.sdeint`` at a fixed step.

    Args:
        steps: number of solver steps of size ``(T - t_end) / steps``.
        method: ``"euler"`` (Euler–Maruyama), ``"milstein"`` or ``"srk"`` (strong order 1.5
            for diagonal noise; 2+ drift evaluations per step).
        t_end: where integration stops; default the SDE's ``t_eps``.
        denoise: apply Tweedie's x0_hat at ``t_end`` (one extra NFE).
        callback: called after every drift evaluation (torchsde owns the step loop).
    """
    if method not in TORCHSDE_METHODS:
        raise ValueError(f"method must be one of {TORCHSDE_METHODS}, got {method!r}")
    t_end = model.sde.t_eps if t_end is None else t_end
    run = SamplingRun(model, x, name="sde", steps=steps, spacing="uniform", t_end=t_end,
                      cond=cond, generator=generator, dtype=dtype, device=device)
    x = run.x_init
    shape = tuple(x.shape)
    y0 = x.flatten(1)
    u0, u1 = -run.t[0], -run.t[-1]
    bm = torchsde.BrownianInterval(
        t0=u0, t1=u1, size=y0.shape, dtype=y0.dtype, device=y0.device, entropy=run.seed(),
        levy_area_approximation="space-time" if method == "srk" else "none",
    )
    bar = tqdm(desc="sde", unit="nfe", disable=not progress, leave=False)

    def on_eval(x_t: Tensor, x0: Tensor) -> None:
        bar.update(1)
        if callback is not None:
            callback({"i": run.nfe - 1, "t": None, "t_next": None, "x": x_t, "x0_hat": x0,
                      "nfe": run.nfe})

    ts = torch.tensor([u0, u1], dtype=torch.float64, device=y0.device)
    # A hair more than the step: torchsde clips the last step to ts[-1], so float
    # round-off never adds a spurious tiny step (and a degenerate Brownian tree).
    dt = (u1 - u0) / steps * (1 + 1e-6)
    try:
        ys = torchsde.sdeint(_ReverseSDE(run, shape, on_eval), y0, ts, bm=bm, method=method, dt=dt)
    finally:
        bar.close()
    x = ys[-1].reshape(shape)
    return run.finish(run.final_denoise(x) if denoise else x, return_nfe)
