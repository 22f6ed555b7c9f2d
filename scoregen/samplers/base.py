"""What every sampler shares: input validation, the schedule on a grid, model calls.

A :class:`SamplingRun` is created once per sampler call. It validates the public inputs
(shape or initial noise, ``cond``, grid, generator), precomputes the schedule on the
grid as Python floats (``t``, ``alpha``, ``sigma``, ``f``, ``g^2``; float64 arithmetic, no
host syncs inside the loop), counts network evaluations (NFE), draws noise only through
the caller's ``torch.Generator``, drives the tqdm bar and the per-step callback.

The callback receives a dict ``{"i", "t", "t_next", "x", "x0_hat", "nfe"}`` after
every step (k-diffusion's convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.model import ScoreModel
from scoregen.samplers.grids import check_grid, time_grid

__all__ = ["SamplingRun", "Callback"]

Callback = Callable[[dict[str, Any]], None]


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


def _initial_state(
    model: ScoreModel,
    x: Tensor | tuple[int, ...] | list[int] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> Tensor:
    """x_T itself, or a draw from the SDE's prior with the caller's generator."""
    if torch.is_tensor(x):
        return x
    device = device if device is not None else model.device
    z = torch.randn(tuple(x), generator=generator, device=_gen_device(generator, device),
                    dtype=model.dtype)
    return (z * model.sde.prior_std).to(device)


def _gen_device(generator: torch.Generator | None, fallback: torch.device | str) -> torch.device:
    return generator.device if generator is not None else torch.device(fallback)


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
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        progress: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(model, ScoreModel):
            raise TypeError(
                f"model must be a scoregen.ScoreModel (net + SDE), got {type(model).__name__}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable as callback(info: dict)")
        self.model = model
        self.sde = model.sde
        self.name = name
        self.generator = generator
        self.callback = callback
        # Validate shapes and the condition before any noise is drawn: a bad call fails
        # before the first step and leaves the caller's generator untouched.
        model.check_cond(_shape_probe(model, x), cond)
        if grid is not None:
            self.grid = check_grid(self.sde, grid.detach().to("cpu"))
        elif steps is None:
            raise ValueError(f"{name}: give steps (an integer >= 1) or an explicit grid")
        else:
            self.grid = time_grid(self.sde, steps, spacing, t_end=t_end)
        x_init = _initial_state(model, x, generator, device)
        self.cond = cond
        self.out_dtype = x_init.dtype
        self.net_dtype = x_init.dtype
        self.state_dtype = dtype if dtype is not None else x_init.dtype
        self.x_init = x_init.to(self.state_dtype)
        g = self.grid
        alpha, sigma = self.sde._alpha_sigma(g)
        f, g2 = self.sde._f_g2(g)
        # Python floats: the hot loop does scalar arithmetic only, no tensors, no syncs.
        self.t: list[float] = g.tolist()
        self.alpha: list[float] = alpha.tolist()
        self.sigma: list[float] = sigma.tolist()
        self.f: list[float] = f.tolist()
        self.g2: list[float] = g2.tolist()
        batch = x_init.shape[0]
        self._t_vecs = g.to(x_init.device, self.net_dtype)[:, None].expand(-1, batch)
        self.nfe = 0
        self._bar = tqdm(total=len(self.t) - 1, desc=name, disable=not progress, leave=False)

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

    def finish(self, x: Tensor, return_nfe: bool) -> Tensor | tuple[Tensor, int]:
        x = x.to(self.out_dtype)
        return (x, self.nfe) if return_nfe else x

    # ------------------------------------------------------------------ model and noise
    def denoise(self, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """``(eps_hat, x0_hat)`` at grid point ``i`` (one network evaluation)."""
        return self.denoise_at(x, self._t_vecs[i], self.alpha[i], self.sigma[i])

    def denoise_at(
        self, x: Tensor, t_vec: Tensor, alpha: float | Tensor, sigma: float | Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(eps_hat, x0_hat)`` at arbitrary times ``t_vec``: (B,), in the state dtype."""
        self.nfe += 1
        x_in = x if x.dtype == self.net_dtype else x.to(self.net_dtype)
        out = self.model(x_in, t_vec, self.cond)
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return self.model.convert(out, x, alpha, sigma)

    def score(self, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """``(score, x0_hat)`` at grid point ``i``; ``score = -eps_hat / sigma``."""
        eps, x0 = self.denoise(x, i)
        return eps * (-1.0 / self.sigma[i]), x0

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise of ``x``'s shape, drawn from the run's generator."""
        gen = self.generator
        if gen is None or gen.device == x.device:
            return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)

    def seed(self) -> int:
        """An integer seed drawn from the generator (for libraries with their own RNG)."""
        gen = self.generator
        return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device if gen else None))

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
