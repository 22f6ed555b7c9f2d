"""Samplers: plain functions ``fn(model, x_T_or_shape, *, steps, cond, generator, ...)``.

| name             | method                                             | paper                    |
|------------------|----------------------------------------------------|--------------------------|
| ancestral        | DDPM ancestral sampling / reverse diffusion        | Ho et al. 2020           |
| ddim             | DDIM, ``eta`` from deterministic (0) to DDPM (1)   | Song, Meng, Ermon 2020   |
| langevin         | annealed Langevin dynamics                         | Song & Ermon 2019        |
| euler_maruyama   | reverse-time SDE, own Euler–Maruyama loop          | Song et al. 2021         |
| torchsde         | reverse-time SDE through ``torchsde.sdeint``       | Song et al. 2021         |
| ode              | probability-flow ODE through ``torchdiffeq.odeint`` | Song et al. 2021        |
| pc               | predictor–corrector (any predictor + Langevin)     | Song et al. 2021         |
| dpmpp_2m         | DPM-Solver++(2M), multistep, data prediction       | Lu et al. 2022           |
| dpmpp_3m         | DPM-Solver++(3M), third-order multistep            | Lu et al. 2022           |
| dpmpp_2m_sde     | DPM-Solver++(2M) SDE variant (eta = 1)             | Lu et al. 2022           |
| unipc            | UniPC: bh2 predictor + UniC corrector              | Zhao et al. 2023         |
| heun             | EDM's Heun 2nd order with stochastic churn         | Karras et al. 2022       |
| ipndm            | iPNDM, Adams–Bashforth up to 4th order in sigma/alpha | Zhang & Chen 2023     |

:func:`sample` dispatches by name through the plain dict :data:`SAMPLERS` and returns
the samples as a tensor; :func:`sample_with_info` takes the same arguments and returns a
:class:`SampleResult` ``(x, nfe, grid)``. Every sampler function returns a tensor. The
name ``"sde"`` is a deprecated alias of ``"torchsde"`` (removed in the next release).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.samplers.ancestral import ancestral
from scoregen.samplers.base import Generators, SampleResult, SamplingRun, record_runs
from scoregen.samplers.ddim import ddim
from scoregen.samplers.dpm_solver import dpmpp_2m, dpmpp_2m_sde, dpmpp_3m
from scoregen.samplers.edm import heun
from scoregen.samplers.euler_maruyama import euler_maruyama
from scoregen.samplers.grids import SPACINGS, time_grid
from scoregen.samplers.ipndm import ipndm
from scoregen.samplers.langevin import langevin
from scoregen.samplers.predictor_corrector import pc
from scoregen.samplers.probability_flow import ProbabilityFlow, ode
from scoregen.samplers.torchsde_sampler import torchsde_sampler
from scoregen.samplers.unipc import unipc

__all__ = [
    "SAMPLERS", "DEFAULT_SAMPLER", "sample", "sample_with_info", "SampleResult", "SamplingRun",
    "ancestral",
    "ddim", "langevin", "euler_maruyama", "torchsde_sampler", "ode", "pc", "time_grid",
    "SPACINGS", "ProbabilityFlow", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "heun",
    "ipndm",
]

SAMPLERS: dict[str, Callable[..., Any]] = {
    "ancestral": ancestral,
    "ddim": ddim,
    "langevin": langevin,
    "euler_maruyama": euler_maruyama,
    "torchsde": torchsde_sampler,
    "ode": ode,
    "pc": pc,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "unipc": unipc,
    "heun": heun,
    "ipndm": ipndm,
}


@functools.lru_cache(maxsize=64)
def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """A sampler's parameters, looked up once (``inspect.signature`` costs ~60 us a call)."""
    return inspect.signature(fn).parameters


#: What ``sg.sample(model, x)`` runs with no ``sampler``: on its own default grid and step
#: count, the best row of the solver benchmark at that NFE (docs/benchmarks.md, "Fast
#: solvers"). Before 0.2 the default was ``"ddim"`` (50 uniform steps).
DEFAULT_SAMPLER = "ipndm"

#: Old sampler names still accepted for one release, with a DeprecationWarning.
DEPRECATED_NAMES: dict[str, str] = {"sde": "torchsde"}


def __getattr__(name: str) -> Any:
    if name == "sde":  # the old function name, which shadowed scoregen.sde
        warnings.warn("scoregen.samplers.sde is deprecated; use torchsde_sampler "
                      "(sampler name 'torchsde')", DeprecationWarning, stacklevel=2)
        return torchsde_sampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve(sampler: str) -> Callable[..., Tensor]:
    if sampler in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[sampler]
        warnings.warn(f"sampler name {sampler!r} is deprecated and will be removed in the "
                      f"next release; use {new!r}", DeprecationWarning, stacklevel=3)
        sampler = new
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid names: {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def sample(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    sampler: str | None = None,
    *,
    steps: int | None = None,
    cond: Tensor | None = None,
    generator: Generators = None,
    progress: bool = False,
    **options: Any,
) -> Tensor:
    """Draw samples with the sampler called ``sampler``.

    Args:
        model: a :class:`~scoregen.ScoreModel`.
        x: the shape ``(B, *D)`` to sample (x_T drawn from the SDE's prior with
            ``generator``), or x_T itself as a tensor.
        sampler: one of ``SAMPLERS``; ``None`` uses :data:`DEFAULT_SAMPLER` (the solver, grid
            and step count the benchmark measures best at that step count).
        steps: grid steps (noise levels for ``langevin``); ``None`` uses the sampler's
            default (``ode`` adapts its own steps over one interval unless given a grid).
        cond: condition passed to the net unchanged, (B, ...); validated once here.
        generator: a ``torch.Generator`` for the batch, or a list of B generators (one per
            sample: sample ``i`` then depends only on ``generator[i]``, for x_T and every
            step's noise). The same seeds give the same samples.
        progress: show a tqdm progress bar.
        **options: the sampler's own options; every sampler takes ``spacing``, ``grid``,
            ``t_end``, ``callback``, ``dtype``, ``device`` (see each function).
    Returns:
        the samples, ``(B, *D)`` in x_T's dtype. :func:`sample_with_info` also gives the
        NFE and the grid.
    """
    fn = _resolve(DEFAULT_SAMPLER if sampler is None else sampler)
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


def sample_with_info(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    sampler: str | None = None,
    **kwargs: Any,
) -> SampleResult:
    """:func:`sample` (same arguments), returning ``SampleResult(x, nfe, grid)``."""
    with record_runs() as runs:
        x_out = sample(model, x, sampler, **kwargs)
    run = runs[-1]
    return SampleResult(x=x_out, nfe=run.nfe, grid=run.grid)
