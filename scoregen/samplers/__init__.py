"""Samplers: plain functions ``fn(model, x_T_or_shape, *, steps, cond, generator, ...)``.

| name             | method                                             | paper                    |
|------------------|----------------------------------------------------|--------------------------|
| ancestral        | DDPM ancestral sampling / reverse diffusion        | Ho et al. 2020           |
| ddim             | DDIM, ``eta`` from deterministic (0) to DDPM (1)   | Song, Meng, Ermon 2020   |
| langevin         | annealed Langevin dynamics                         | Song & Ermon 2019        |
| euler_maruyama   | reverse-time SDE, own Euler–Maruyama loop          | Song et al. 2021         |
| sde              | reverse-time SDE through ``torchsde.sdeint``       | Song et al. 2021         |
| ode              | probability-flow ODE through ``torchdiffeq.odeint`` | Song et al. 2021        |
| pc               | predictor–corrector (any predictor + Langevin)     | Song et al. 2021         |

:func:`sample` dispatches by name through the plain dict :data:`SAMPLERS`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.ancestral import ancestral
from scoregen.samplers.ddim import ddim
from scoregen.samplers.euler_maruyama import euler_maruyama
from scoregen.samplers.grids import SPACINGS, time_grid
from scoregen.samplers.langevin import langevin
from scoregen.samplers.predictor_corrector import pc
from scoregen.samplers.probability_flow import ProbabilityFlow, ode
from scoregen.samplers.reverse_sde import sde

__all__ = [
    "SAMPLERS", "sample", "ancestral", "ddim", "langevin", "euler_maruyama", "sde", "ode",
    "pc", "time_grid", "SPACINGS", "ProbabilityFlow",
]

SAMPLERS: dict[str, Callable[..., Any]] = {
    "ancestral": ancestral,
    "ddim": ddim,
    "langevin": langevin,
    "euler_maruyama": euler_maruyama,
    "sde": sde,
    "ode": ode,
    "pc": pc,
}


@functools.lru_cache(maxsize=64)
def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """A sampler's parameters, looked up once (``inspect.signature`` costs ~60 us a call)."""
    return inspect.signature(fn).parameters


def sample(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    sampler: str = "ddim",
    *,
    steps: int | None = None,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    **options: Any,
) -> Tensor | tuple[Tensor, int]:
    """Draw samples with the sampler called ``sampler``.

    Args:
        model: a :class:`~scoregen.ScoreModel`.
        x: the shape ``(B, *D)`` to sample (x_T drawn from the SDE's prior with
            ``generator``), or x_T itself as a tensor.
        sampler: one of ``SAMPLERS``.
        steps: grid steps (noise levels for ``langevin``); ``None`` uses the sampler's
            default (``ode`` adapts its own steps unless a fixed-grid ``method`` is given).
        cond: condition passed to the net unchanged, (B, ...).
        generator: a ``torch.Generator``; the same seed gives the same samples.
        progress: show a tqdm progress bar.
        **options: the sampler's own options (e.g. ``eta`` for ddim; see each function).
    Returns:
        samples ``(B, *D)``, or ``(samples, nfe)`` with ``return_nfe=True``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid names: {', '.join(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    params = _parameters(fn)
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = [p for p in params if p not in ("model", "x")]
        raise TypeError(f"sampler {sampler!r} has no option(s) {unknown}; valid: {valid}")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        options["steps"] = steps
    return fn(model, x, cond=cond, generator=generator, progress=progress, **options)
