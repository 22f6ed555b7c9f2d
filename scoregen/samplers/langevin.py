"""Annealed Langevin dynamics (Song & Ermon 2019, NCSN, Algorithm 1) and the Langevin
corrector of predictor–corrector sampling (Song et al. 2021, Algorithm 4–5).

At each noise level ``t_i`` (descending), ``n`` Langevin updates target ``p_{t_i}``:

    x <- x + delta_i score(x, t_i) + sqrt(2 delta_i) z,    z ~ N(0, I)

Step sizes, two rules:

* NCSN: ``delta_i = step_size * sigma_i^2``. NCSN writes ``eps (sigma_i / sigma_L)^2``;
  that is ``step_size = eps / sigma_L^2`` (NCSN's eps = 2e-5, sigma_L = 0.01 → 0.2).
* Signal-to-noise (``snr``): ``delta_i = 2 a_i (snr ||z|| / ||score||)^2`` with
  ``a_i = alpha(t_{i-1})^2 / alpha(t_i)^2`` (DDPM's ``1 - beta_i`` on this grid; 1 for VE).
  As in the reference implementation (score_sde), the norms are averaged over the batch:
  per-sample norms are too noisy in low dimension (where ``||score||`` can vanish). With
  one generator per sample (batch-invariant sampling) the norms are per sample, so that a
  sample does not depend on the rest of its batch.

Between levels the state is rescaled, ``x <- x alpha(t_i) / alpha(t_{i-1})``: with
``y = x / alpha`` every SDE here is a VE process in ``y`` with noise ``sigma/alpha``, and
annealed Langevin is NCSN's algorithm run on ``y`` (a no-op for VE, where alpha = 1).
Without it, on VP the chains would have to transport the mean ``alpha(t) mu`` by
diffusion alone at every level, which the small steps at low noise cannot do.

The sampler finishes with Tweedie's denoising step ``x0_hat(x, t_L)`` (``denoise=True``),
which removes the residual noise of the last level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.broadcast import append_dims
from scoregen.model import ScoreModel
from scoregen.samplers.base import Callback, Generators, SamplingRun, check_nonnegative

__all__ = ["langevin", "langevin_correct"]

#: NCSN's smallest noise level (Song & Ermon 2019): the default last level, in sigma/alpha.
NCSN_SIGMA_MIN = 0.01


def langevin_correct(
    run: SamplingRun,
    x: Tensor,
    i: int,
    n_steps: int,
    *,
    step_size: float | None = None,
    snr: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``n_steps`` Langevin updates targeting ``p_{t_i}``; returns ``(x, x0_hat)``.

    Exactly one of ``step_size`` (NCSN rule) and ``snr`` (signal-to-noise rule) is used;
    ``snr`` wins when both are given.
    """
    x0 = x
    if snr is not None:
        j = i - 1 if i > 0 else i + 1
        a_i = (run.alpha[min(i, j)] / run.alpha[max(i, j)]) ** 2
    for _ in range(n_steps):
        score, x0 = run.score(x, i)
        z = run.randn_like(x)
        if snr is not None:
            z_norm = z.flatten(1).norm(dim=1)
            s_norm = score.flatten(1).norm(dim=1)
            if run.per_sample_noise:  # one generator per sample: no batch statistics either
                z_norm, s_norm = append_dims(z_norm, x.ndim), append_dims(s_norm, x.ndim)
            else:
                z_norm, s_norm = z_norm.mean(), s_norm.mean()
            delta = 2 * a_i * (snr * z_norm / s_norm.clamp_min(1e-30)) ** 2  # no host sync
            x = x + delta * score + (2 * delta).sqrt() * z
        else:
            delta = step_size * run.sigma[i] ** 2
            x = x + delta * score + math.sqrt(2 * delta) * z
    return x, x0


@torch.no_grad()
def langevin(
    model: ScoreModel,
    x: Tensor | tuple[int, ...],
    *,
    steps: int = 100,
    n_steps_each: int = 10,
    step_size: float = 0.2,
    snr: float | None = None,
    spacing: str = "logsnr",
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
    """Annealed Langevin dynamics over ``steps`` noise levels below T.

    Args:
        steps: number of noise levels ``t_1 > ... > t_L = t_end`` (the grid's t_0 = T is
            where x_T starts); NFE = ``steps * n_steps_each`` (+1 for ``denoise``).
        n_steps_each: Langevin updates per level.
        step_size: NCSN rule, ``delta_i = step_size * sigma_i^2``.
        snr: use the signal-to-noise rule instead (Song et al. 2021 use 0.16 for VE).
        spacing: level spacing; ``"logsnr"`` (default) is geometric in sigma/alpha like NCSN.
        t_end: the last level; default where ``sigma / alpha = 0.01`` (NCSN's sigma_L),
            or the SDE's ``t_eps`` if that is later.

    Defaults follow NCSN's budget (1000 network calls, step 0.2 sigma_i^2). The chains
    must re-equilibrate at every level; when the data's scale is much larger than the
    noise, use more levels or steps (accuracy improves as ``n_steps_each * step_size``
    grows relative to the change in noise between levels).
    """
    if not isinstance(n_steps_each, int) or n_steps_each < 1:
        raise ValueError(f"n_steps_each must be an integer >= 1, got {n_steps_each!r}")
    step_size = check_nonnegative("step_size", step_size)
    if snr is not None:
        snr = check_nonnegative("snr", snr)
    if t_end is None:
        lam = torch.tensor(-math.log(NCSN_SIGMA_MIN), dtype=torch.float64)  # sigma/alpha = e^-lam
        t_ncsn = float(model.sde.t_of_log_snr(lam))
        t_end = max(model.sde.t_eps, t_ncsn)
    run = SamplingRun(model, x, name="langevin", steps=steps, spacing=spacing, t_end=t_end,
                      grid=grid, cond=cond, generator=generator, callback=callback,
                      progress=progress, dtype=dtype, device=device)
    x = run.x_init
    for i in run.steps():
        x = x * (run.alpha[i + 1] / run.alpha[i])  # keep y = x / alpha fixed across levels
        x, x0 = langevin_correct(run, x, i + 1, n_steps_each, step_size=step_size, snr=snr)
        run.report(i, x, x0)
    return run.finish(run.final_denoise(x) if denoise else x)
