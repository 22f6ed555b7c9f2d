"""Time grids for discrete-step samplers.

A grid is a float64 tensor ``t_0 = T > t_1 > ... > t_S = t_end >= 0``. The model is
evaluated at ``t_0 .. t_{S-1}``; a step that lands on ``t = 0`` returns the x0 estimate.

Spacings (all generic over the SDE: they use only ``log_snr`` and its inverse):

* ``"uniform"``   — equal steps in t (DDIM's default; Song et al. 2020).
* ``"quadratic"`` — ``t_i = t_end + (T - t_end)(1 - i/S)^2``, dense at low noise (the
  DDIM paper's CIFAR-10 choice).
* ``"logsnr"``    — equal steps in ``lambda = log(alpha/sigma)`` (geometric in sigma/alpha;
  DPM-Solver's "logSNR" grid).
* ``"karras"``    — Karras et al. 2022 (EDM, eq. 5), rho = 7, in the noise level
  ``sigma/alpha``.

For ``"logsnr"`` and ``"karras"`` a grid ending at ``t_end = 0`` (infinite SNR) is built
down to the SDE's ``t_eps`` with ``S - 1`` steps and closed by a last step to 0: the
**final denoising step** (every sampler's step to ``sigma = 0`` returns ``x0_hat``, so the
last network call is at ``t_eps``, near zero noise). ``denoise_step`` switches this on or
off for any spacing: ``True`` builds ``uniform``/``quadratic`` grids to ``t_eps`` too and
closes them the same way; ``False`` lets the spacing run all ``S`` steps by itself —
``uniform``/``quadratic`` reach t = 0 on their own (their last call is at ``t_{S-1}``, far
above zero noise at small S), ``logsnr``/``karras`` then end at ``t_eps`` (samplers finish
with a Tweedie call if ``denoise=True``). ``None`` keeps each spacing's default.
For a discretised SDE (``VPSDE.ddpm``) the grid is snapped to DDPM's integer steps
``i / N`` unless ``snap=False``; where a dense spacing puts two points on one step they
merge, so the grid may have fewer than ``steps`` steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.sde import SDE

__all__ = ["SPACINGS", "time_grid", "check_grid"]

SPACINGS = ("uniform", "quadratic", "logsnr", "karras")


def time_grid(
    sde: SDE,
    steps: int,
    spacing: str = "uniform",
    *,
    t_end: float = 0.0,
    t_start: float | None = None,
    rho: float = 7.0,
    snap: bool = True,
    denoise_step: bool | None = None,
) -> Tensor:
    """Descending float64 grid of ``steps + 1`` times from ``t_start`` (default T) to ``t_end``.

    ``denoise_step`` (only with ``t_end = 0``): ``True`` = ``steps - 1`` steps to the SDE's
    ``t_eps``, then the final denoising step to 0; ``False`` = all steps by the spacing alone
    (``uniform``/``quadratic`` reach 0, ``logsnr``/``karras`` end at ``t_eps``); ``None`` = the
    spacing's default (True for ``logsnr``/``karras``, False for ``uniform``/``quadratic``).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; expected one of {SPACINGS}")
    t_start = sde.T if t_start is None else float(t_start)
    if not 0.0 <= t_end < t_start <= sde.T:
        raise ValueError(
            f"need 0 <= t_end < t_start <= T={sde.T}; got t_end={t_end}, t_start={t_start}"
        )
    if denoise_step is not None and not isinstance(denoise_step, bool):
        raise TypeError(f"denoise_step must be True, False or None, got {denoise_step!r}")
    log_spaced = spacing in ("logsnr", "karras")
    if t_end == 0.0 and denoise_step is not None and denoise_step != log_spaced:
        lo = max(sde.t_eps, 1e-12)
        if denoise_step:  # S - 1 steps to t_eps with this spacing, then the step to 0
            if steps < 2:
                raise ValueError("denoise_step=True needs steps >= 2")
            head = time_grid(sde, steps - 1, spacing, t_end=lo, t_start=t_start, rho=rho,
                             snap=snap)
            return torch.cat([head, torch.zeros(1, dtype=head.dtype)])
        return time_grid(sde, steps, spacing, t_end=lo, t_start=t_start, rho=rho, snap=snap)
    f64 = torch.float64
    if spacing == "uniform":
        grid = torch.linspace(t_start, t_end, steps + 1, dtype=f64)
    elif spacing == "quadratic":
        u = torch.linspace(0.0, 1.0, steps + 1, dtype=f64)
        grid = t_end + (t_start - t_end) * (1 - u) ** 2
    else:
        closes_at_zero = t_end == 0.0
        lo = max(sde.t_eps, 1e-12) if closes_at_zero else t_end
        if closes_at_zero and lo >= t_start:
            raise ValueError(f"t_start={t_start} must exceed the SDE's t_eps={sde.t_eps}")
        n = steps - 1 if closes_at_zero else steps
        ends = sde.log_snr(torch.tensor([t_start, lo], dtype=f64))
        u = torch.linspace(0.0, 1.0, n + 1, dtype=f64)
        if spacing == "logsnr":
            lam = ends[0] + u * (ends[1] - ends[0])
        else:  # karras: sigma/alpha = exp(-lambda), interpolated in sigma^(1/rho)
            s_max, s_min = (-ends).exp()
            s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            lam = -s.log()
        grid = sde.t_of_log_snr(lam) if n > 0 else torch.tensor([t_start], dtype=f64)
        grid[0], grid[-1] = t_start, lo  # exact ends despite inversion round-off
        if closes_at_zero:
            grid = torch.cat([grid, torch.zeros(1, dtype=f64)])
    if snap and sde.num_steps is not None:
        if steps > sde.num_steps:
            raise ValueError(
                f"{steps} steps do not fit on the SDE's {sde.num_steps} discrete steps; "
                "use at most that many, or snap=False"
            )
        grid = (grid * sde.num_steps / sde.T).round() * sde.T / sde.num_steps
        grid = torch.unique_consecutive(grid)  # dense spacings may merge at one step
    return grid


def check_grid(sde: SDE, grid: Tensor) -> Tensor:
    """Validate a user-supplied grid: 1-D, at least 2 points, strictly decreasing, in [0, T]."""
    if not torch.is_tensor(grid) or grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(
            "grid must be a 1-D tensor of at least 2 decreasing times, "
            f"got {getattr(grid, 'shape', grid)}"
        )
    grid = sde.check_times(grid, name="grid")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"grid must be strictly decreasing, got {grid.tolist()}")
    return grid
