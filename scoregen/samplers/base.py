"""What every sampler shares: input validation, the schedule on a grid, model calls.

A :class:`SamplingRun` is created once per sampler call and owns all the plumbing, so a
sampler is a short update loop over ``run.steps()``:

* validation of the public inputs, once (shape or x_T, ``cond`` against the batch and
  the net, grid, generator, callback);
* the time grid from ``steps`` / ``spacing`` / ``t_end`` or an explicit ``grid``;
* the schedule on the grid as Python floats (``t``, ``alpha``, ``sigma``, ``lam`` =
  log(alpha/sigma), ``f``, ``g2``; float64 arithmetic, computed once, so the loop does
  scalar arithmetic with no tensor allocation and no host syncs);
* network calls (:meth:`SamplingRun.denoise`, :meth:`SamplingRun.reverse_drift`) and
  the NFE count; a self-conditioned model (``model.self_condition``) gets the ``x0_hat``
  of the run's previous call as ``x_self`` (zeros at the first; Chen et al. 2022);
* noise, drawn only through the caller's generator(s): one ``torch.Generator`` for the
  batch, or a list of B generators, one per sample, so that sample ``i`` depends only on
  ``generator[i]`` (not on the batch size or the other samples; as EDM and diffusers);
* the tqdm bar and the callback, called after every grid step with the same keys for
  every sampler: ``{"i", "t", "t_next", "x", "x0_hat", "nfe"}`` (k-diffusion's
  convention);
* the result: :meth:`SamplingRun.finish` returns the samples as a tensor in x_T's dtype;
  :func:`scoregen.sample_with_info` reads NFE and grid off the run (:class:`SampleResult`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.model import ScoreModel
from scoregen.samplers.grids import check_grid, time_grid

__all__ = ["SamplingRun", "SampleResult", "Callback", "Generators", "record_runs",
           "check_nonnegative"]

Callback = Callable[[dict[str, Any]], None]
#: One generator for the whole batch, or one per sample.
Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class SampleResult:
    """What :func:`scoregen.sample_with_info` returns.

    Attributes:
        x: the samples, (B, *D), in x_T's dtype.
        nfe: network evaluations actually used (adaptive solvers: what they took).
        grid: the float64 time grid ``t_0 = T > ... > t_S`` the sampler stepped over
            (for an adaptive ODE: the points it was forced to stop at).
    """

    x: Tensor
    nfe: int
    grid: Tensor


_RUNS: ContextVar[list[SamplingRun] | None] = ContextVar("scoregen_sampling_runs", default=None)


@contextlib.contextmanager
def record_runs() -> Iterator[list[SamplingRun]]:
    """Collect every :class:`SamplingRun` created inside the ``with`` block (in order)."""
    runs: list[SamplingRun] = []
    token = _RUNS.set(runs)
    try:
        yield runs
    finally:
        _RUNS.reset(token)


def _shape_probe(model: ScoreModel, x: Tensor | tuple[int, ...] | list[int] | torch.Size
                 ) -> Tensor:
    """Validate x_T or its shape; return a ``meta`` tensor of that shape (nothing drawn)."""
    if torch.is_tensor(x):
        if x.ndim < 2:
            raise ValueError(f"x_T must have shape (B, *D) with a batch dim, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x_T must be a floating-point tensor, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x_T contains non-finite values (nan or inf)")
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
    if isinstance(x, (tuple, list, torch.Size)) and len(x) >= 2 and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in x
    ):
        return torch.empty(tuple(x), dtype=model.dtype, device="meta")
    raise TypeError(
        "expected the initial noise x_T as a tensor (B, *D) or a shape tuple of positive "
        f"ints with a batch dim, e.g. (16, 1, 64, 64); got {x!r}"
    )


def _check_generators(generator: Generators, batch: int) -> list[torch.Generator] | None:
    """``None`` for one (or no) generator; the list of B generators otherwise."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if isinstance(generator, (list, tuple)) and all(
        isinstance(g, torch.Generator) for g in generator
    ):
        if len(generator) != batch:
            raise ValueError(
                f"a list of generators needs one per sample: got {len(generator)} for a "
                f"batch of {batch}"
            )
        return list(generator)
    raise TypeError(
        "generator must be a torch.Generator, a list of B torch.Generators (one per "
        f"sample) or None; got {type(generator).__name__}"
    )


def _randn(shape: tuple[int, ...], generator: torch.Generator | None,
           per_sample: list[torch.Generator] | None, device: torch.device,
           dtype: torch.dtype) -> Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn batch-wise or per sample."""
    if per_sample is not None:
        one = (1, *shape[1:])
        return torch.cat([torch.randn(one, generator=g, device=g.device, dtype=dtype)
                          for g in per_sample]).to(device)
    if generator is None or generator.device == device:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


class SamplingRun:
    """State shared by one sampler call: grid, schedule tables, NFE, noise, progress."""

    def __init__(
        self,
        model: ScoreModel,
        x: Tensor | tuple[int, ...],
        *,
        name: str,
        steps: int | None = None,
        spacing: str = "uniform",
        t_end: float = 0.0,
        grid: Tensor | None = None,
        cond: Tensor | None = None,
        generator: Generators = None,
        callback: Callback | None = None,
        progress: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(model, ScoreModel):
            raise TypeError(
                f"model must be a scoregen.ScoreModel (net + SDE), got {type(model).__name__}"
            )
        probe = _shape_probe(model, x)
        self.generators = _check_generators(generator, probe.shape[0])
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable as callback(info: dict)")
        self.model = model
        self.sde = model.sde
        self.name = name
        self.generator = generator if self.generators is None else None
        self.callback = callback
        # Validate shapes and the condition before any noise is drawn: a bad call fails
        # before the first step and leaves the caller's generator untouched.
        model.check_cond(probe, cond)
        if grid is not None:
            if not torch.is_tensor(grid):
                raise TypeError(f"grid must be a 1-D tensor of times, got {type(grid).__name__}")
            self.grid = check_grid(self.sde, grid.detach().to("cpu", torch.float64))
        elif steps is None:
            raise ValueError(f"{name}: give steps (an integer >= 1) or an explicit grid")
        else:
            self.grid = time_grid(self.sde, steps, spacing, t_end=t_end)
        if torch.is_tensor(x):
            x_init = x
        else:
            dev = torch.device(device) if device is not None else model.device
            x_init = _randn(tuple(x), self.generator, self.generators, dev, model.dtype)
            x_init = x_init * self.sde.prior_std
        self.cond = cond
        self.out_dtype = x_init.dtype
        self.net_dtype = x_init.dtype
        self.state_dtype = dtype if dtype is not None else x_init.dtype
        self.x_init = x_init.to(self.state_dtype)
        g = self.grid
        alpha, sigma = self.sde.alpha_sigma(g, check=False)  # g was validated above
        f, g2 = self.sde.f_g2(g, check=False)
        # Python floats: the hot loop does scalar arithmetic only, no tensors, no syncs.
        #: grid times t_0 = T > ... > t_S, and the schedule at them (all length S + 1)
        self.t: list[float] = g.tolist()
        self.alpha: list[float] = alpha.tolist()
        self.sigma: list[float] = sigma.tolist()
        #: lambda_i = log(alpha_i / sigma_i) (DPM-Solver's lambda; +inf where sigma = 0)
        self.lam: list[float] = self.sde.log_snr(g, check=False).tolist()
        self.f: list[float] = f.tolist()
        self.g2: list[float] = g2.tolist()
        batch = x_init.shape[0]
        self._t_vecs = g.to(x_init.device, self.net_dtype)[:, None].expand(-1, batch)
        self.nfe = 0
        #: the last x0_hat, fed to a self-conditioned net at the next call (else None)
        self.x0_prev: Tensor | None = None
        self._bar = tqdm(total=len(self.t) - 1, desc=name, disable=not progress, leave=False)
        runs = _RUNS.get()
        if runs is not None:
            runs.append(self)

    # ------------------------------------------------------------------ loop
    @property
    def num_steps(self) -> int:
        return len(self.t) - 1

    def steps(self) -> Iterator[int]:
        """Indices ``i`` of the steps ``t_i -> t_{i+1}``, with the progress bar."""
        try:
            for i in range(self.num_steps):
                yield i
                self._bar.update(1)
        finally:
            self._bar.close()

    def report(self, i: int, x: Tensor, x0_hat: Tensor | None) -> None:
        """Call the user's callback after step ``i``."""
        if self.callback is not None:
            self.callback({"i": i, "t": self.t[i], "t_next": self.t[i + 1], "x": x,
                           "x0_hat": x0_hat, "nfe": self.nfe})

    def finish(self, x: Tensor) -> Tensor:
        """The samples in x_T's dtype (the one return convention of every sampler)."""
        return x.to(self.out_dtype)

    # ------------------------------------------------------------------ model and noise
    def previous_estimate(self, x: Tensor) -> Tensor | None:
        """``x_self`` for the next call on ``x``: the last ``x0_hat`` when the model is
        self-conditioned and it has ``x``'s shape, else None (the net reads zeros)."""
        prev = self.x0_prev
        if not self.model.self_condition or prev is None or prev.shape != x.shape:
            return None
        return prev

    def remember(self, x0_hat: Tensor) -> Tensor:
        """Keep ``x0_hat`` as the next call's ``x_self`` (self-conditioned models only)."""
        if self.model.self_condition:
            self.x0_prev = x0_hat.detach()
        return x0_hat

    def denoise(self, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """``(eps_hat, x0_hat)`` at grid point ``i`` (one network evaluation)."""
        return self.denoise_at(x, self._t_vecs[i], self.alpha[i], self.sigma[i])

    def denoise_at(
        self, x: Tensor, t_vec: Tensor, alpha: float | Tensor, sigma: float | Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(eps_hat, x0_hat)`` at arbitrary times ``t_vec``: (B,) in the net dtype."""
        self.nfe += 1
        eps, x0 = self.model.denoise(x, t_vec, self.cond, alpha=alpha, sigma=sigma,
                                     net_dtype=self.net_dtype,
                                     x_self=self.previous_estimate(x))
        return eps, self.remember(x0)

    def reverse_drift(self, x: Tensor, i: int, noise: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(drift, x0_hat)`` of the reverse dynamics at grid point ``i`` (one NFE).

        See :meth:`scoregen.ScoreModel.reverse_drift`: ``noise = 1`` reverse SDE,
        ``noise = 0`` probability-flow ODE.
        """
        self.nfe += 1
        drift, x0 = self.model.reverse_drift(
            x, self._t_vecs[i], self.cond, noise=noise,
            coeffs=(self.alpha[i], self.sigma[i], self.f[i], self.g2[i]),
            net_dtype=self.net_dtype, x_self=self.previous_estimate(x))
        return drift, self.remember(x0)

    def score(self, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """``(score, x0_hat)`` at grid point ``i``; ``score = -eps_hat / sigma``."""
        eps, x0 = self.denoise(x, i)
        return eps * (-1.0 / self.sigma[i]), x0

    @property
    def per_sample_noise(self) -> bool:
        """True when the caller gave one generator per sample."""
        return self.generators is not None

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise of ``x``'s shape from the run's generator(s)."""
        return _randn(tuple(x.shape), self.generator, self.generators, x.device, x.dtype)

    def seed(self, i: int | None = None) -> int:
        """An integer seed for libraries with their own RNG, drawn from the generator
        (or from sample ``i``'s generator when there is one per sample)."""
        gen = self.generator if self.generators is None else self.generators[i or 0]
        return int(torch.randint(0, 2**62, (1,), generator=gen,
                                 device=gen.device if gen is not None else None))

    # ------------------------------------------------------------------ schedule helpers
    def transition(self, i: int) -> tuple[float, float]:
        """``(alpha_{t|s}, sigma_{t|s}^2)`` of the forward kernel ``x_t | x_s``.

        With t = t_i and s = t_{i+1}: ``alpha_{t|s} = alpha_t / alpha_s`` and
        ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``.
        """
        a_ts = self.alpha[i] / self.alpha[i + 1]
        s2_ts = max(self.sigma[i] ** 2 - a_ts**2 * self.sigma[i + 1] ** 2, 0.0)
        return a_ts, s2_ts

    def final_denoise(self, x: Tensor) -> Tensor:
        """Tweedie's formula at the last grid time: ``x0_hat(x, t_S)`` (one NFE)."""
        last = self.num_steps
        if self.sigma[last] == 0.0:
            return x
        return self.denoise(x, last)[1]


def check_nonnegative(name: str, value: float) -> float:
    """Validate a non-negative finite float option (eta, snr, ...)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)
