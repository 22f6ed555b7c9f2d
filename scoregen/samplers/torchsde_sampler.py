"""Reverse-time SDE through ``torchsde.sdeint`` (Li et al. 2020; Kidger et al. 2021).

torchsde integrates forward in time over a 2-D state ``(batch, d)``. The reverse SDE
``dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dw_bar`` on ``t: T -> t_end`` is therefore
written in negated time ``u = -t`` (increasing), with ``y(u) = x(-u)`` flattened:

    dy = -[f(-u) y - g(-u)^2 score(y, -u)] du + g(-u) dw_u      (Ito, diagonal noise)

as in torchsde's own ``examples/cont_ddpm.py``; the drift is
:meth:`scoregen.ScoreModel.reverse_drift` with ``noise = 1``, the one the other samplers
use. Any data shape works: images are flattened inside ``f`` and ``g``. The grid is the
sampler core's (``steps`` / ``spacing`` / ``grid``): ``sdeint`` takes one solver step
per grid interval. The Brownian motion is seeded from the caller's generator; with one
generator per sample, each sample gets its own Brownian motion, so a sample does not
depend on its batch.

The sampler was called ``"sde"`` until 0.1, a name that shadowed :mod:`scoregen.sde`;
``"sde"`` still works for one release and warns.
"""

from __future__ import annotations

from typing import Any

import torch
import torchsde
from torch import Tensor, nn
from torchsde._brownian.brownian_base import BaseBrownian

from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun

__all__ = ["torchsde_sampler", "TORCHSDE_METHODS"]

#: Ito solvers of torchsde valid for diagonal noise.
TORCHSDE_METHODS = ("euler", "milstein", "srk")


class _ReverseSDE(nn.Module):
    """The reverse SDE in negated time, in torchsde's ``f``/``g`` contract."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, run: SamplingRun, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.run = run
        self.shape = shape
        self.sde = run.sde
        self.x0_hat: Tensor | None = None
        self._memo: tuple[Any, Tensor] | None = None
        self._g_memo: tuple[float, Tensor] | None = None

    def _coefficients(self, u: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t64 = (-u).detach().to(torch.float64).reshape(1).clamp(0.0, self.sde.T)
        alpha, sigma = self.sde.alpha_sigma(t64, check=False)
        f, g2 = self.sde.f_g2(t64, check=False)
        return tuple(v.to(like.dtype) for v in (alpha, sigma, f, g2))  # type: ignore[return-value]

    def f(self, u: Tensor, y: Tensor) -> Tensor:
        # torchsde calls f(t0, y0) once to check shapes and the solver then calls it again
        # with the same arguments: answer the repeat from a one-entry memo (no wasted NFE).
        key = (float(u), y.data_ptr(), y._version)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        x = y.reshape(self.shape)
        coeffs = self._coefficients(u, y)
        t_vec = (-u).to(self.run.net_dtype).reshape(1).expand(x.shape[0])
        self.run.nfe += 1
        drift, x0 = self.run.model.reverse_drift(
            x, t_vec, self.run.cond, noise=1.0, coeffs=coeffs, net_dtype=self.run.net_dtype,
            x_self=self.run.previous_estimate(x))
        self.x0_hat = self.run.remember(x0)
        drift = (-drift).flatten(1)
        self._memo = (key, drift)
        return drift

    def g(self, u: Tensor, y: Tensor) -> Tensor:
        # g depends on u only; torchsde asks twice per step (shape check, then the step)
        key = float(u)
        if self._g_memo is None or self._g_memo[0] != key:
            _, _, _, g2 = self._coefficients(u, y)
            self._g_memo = (key, g2.sqrt())
        return self._g_memo[1].expand_as(y)


class _PerSampleBrownian(BaseBrownian):
    """B independent Brownian motions of shape (1, d), one per sample, stacked to (B, d)."""

    def __init__(self, parts: list[torchsde.BrownianInterval]) -> None:
        self.parts = parts

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False,
                 return_A: bool = False) -> Any:
        outs = [bm(ta, tb, return_U=return_U, return_A=return_A) for bm in self.parts]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
        return torch.cat(outs)

    def __repr__(self) -> str:
        return f"_PerSampleBrownian({len(self.parts)} x {self.parts[0]!r})"

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.parts), *self.parts[0].shape[1:]))

    @property
    def levy_area_approximation(self) -> str:
        return self.parts[0].levy_area_approximation


@torch.no_grad()
def torchsde_sampler(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int | None = 1000,
    method: str = "euler",
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
    """Integrate the reverse SDE with ``torchsde.sdeint``, one solver step per grid interval.

    Args:
        steps, spacing, grid: the time grid, as for every sampler.
        method: ``"euler"`` (Euler–Maruyama), ``"milstein"`` or ``"srk"`` (strong order 1.5
            for diagonal noise; 2+ drift evaluations per step).
        t_end: where integration stops; default the SDE's ``t_eps``.
        denoise: apply Tweedie's x0_hat at ``t_end`` (one extra NFE).
    """
    if method not in TORCHSDE_METHODS:
        raise ValueError(f"method must be one of {TORCHSDE_METHODS}, got {method!r}")
    t_end = model.sde.t_eps if t_end is None else t_end
    run = SamplingRun(model, x, name="torchsde", steps=steps, spacing=spacing, t_end=t_end,
                      grid=grid, cond=cond, generator=generator, callback=callback,
                      progress=progress, dtype=dtype, device=device)
    x = run.x_init
    shape = tuple(x.shape)
    y = x.flatten(1)
    u = [-t for t in run.t]  # increasing
    levy = "space-time" if method == "srk" else "none"

    def interval(size: tuple[int, ...], seed: int) -> torchsde.BrownianInterval:
        return torchsde.BrownianInterval(t0=u[0], t1=u[-1], size=size, dtype=y.dtype,
                                         device=y.device, entropy=seed,
                                         levy_area_approximation=levy)

    if run.per_sample_noise:
        bm: BaseBrownian = _PerSampleBrownian(
            [interval((1, y.shape[1]), run.seed(b)) for b in range(y.shape[0])])
    else:
        bm = interval(tuple(y.shape), run.seed())
    func = _ReverseSDE(run, shape)
    ts = torch.tensor(u, dtype=torch.float64, device=y.device)
    for i in run.steps():
        # dt a hair above the interval: one solver step, clipped to ts[i + 1] exactly, so
        # float round-off never adds a spurious tiny step (and a degenerate Brownian tree).
        dt = (u[i + 1] - u[i]) * (1 + 1e-6)
        y = torchsde.sdeint(func, y, ts[i:i + 2], bm=bm, method=method, dt=dt)[-1]
        run.report(i, y.reshape(shape), func.x0_hat)
    x = y.reshape(shape)
    return run.finish(run.final_denoise(x) if denoise else x)
