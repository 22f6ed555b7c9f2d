"""Denoising score matching (Vincent 2011) for any SDE and any parametrisation.

For ``x_t = alpha(t) x_0 + sigma(t) eps`` the minimiser of

    E_{t, x_0, eps} [ lambda(t) || net(x_t, t) - target(x_0, eps, t) ||^2 ]

is the conditional expectation of the target given ``x_t``; for ``target = -eps/sigma``
that is the score ``grad log p_t(x_t)`` (Song & Ermon 2019, eq. 2; Song et al. 2021,
eq. 7), for ``eps`` it is ``-sigma * score`` (Ho et al. 2020, L_simple, eq. 14).

Weightings ``lambda``:

* ``"simple"`` — unit weight on the net's own output (DDPM's L_simple for eps; the
  usual choice for x0 and v).
* ``"sigma2"`` — ``lambda = sigma^2`` on the score (NCSN's choice for VE, Song & Ermon
  2019 sec. 4.2): identical to L_simple on eps, written for score-parametrised nets.
* a callable ``(alpha, sigma) -> lambda`` of shape (B,), for anything else.

Auxiliary loss for binary data (segmentation masks in {-1, +1}): ``aux="dice_bce"`` adds
``aux_weight * w(t) * (soft Dice + BCE)(x0_hat, x0)`` to each sample's loss, where
``x0_hat`` is the net's denoised estimate (any parametrisation) mapped to [0, 1] — the
mask-space terms of diffusion segmenters (Diff-UNet, Xing et al. 2023; MedSegDiff-V2,
Wu et al. 2023), weighted by ``w(t) = alpha(t)^2`` by default.

Times: continuous ``t ~ U[t_eps, T]``, or, for a discretised schedule
(``VPSDE.ddpm``), DDPM's ``t = i / N`` with ``i ~ U{1..N}``.

Self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits", arXiv:2208.04202, Sec. 3),
for a model whose net reads its previous estimate (``model.self_condition``): on a
random half of the samples (``p_self_cond``) the net first runs without gradient on
``(x_t, t, cond, 0)``; its ``x0_hat`` is then the ``x_self`` input of the call that is
trained (the other samples get zeros). The net learns both to start from nothing and
to refine an estimate, which is what a sampler gives it at its first and later steps.

The random part of one training batch — ``t``, ``eps``, the classifier-free-guidance
condition dropout and the self-conditioning rows — is drawn in one place,
:func:`draw_training_batch`, in a fixed order (t, eps, dropout mask, self-conditioning
mask) from one generator. :func:`dsm_loss` draws what it
is not given through it; the trainer draws a whole global batch through it and keeps
each process's rows (:meth:`TrainingDraw.shard`), then hands ``t`` and ``eps`` to
:func:`dsm_loss`. The dropout is applied by :func:`drop_condition` in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from scoregen.broadcast import append_dims
from scoregen.model import ScoreModel

__all__ = ["dsm_loss", "sample_times", "draw_training_batch", "drop_condition", "TrainingDraw",
           "WEIGHTINGS", "AUX_LOSSES", "AUX_WEIGHTINGS", "binary_mask_loss",
           "SELF_COND_P"]

WEIGHTINGS = ("simple", "sigma2")
#: Auxiliary losses on ``x0_hat`` (see :func:`binary_mask_loss`).
AUX_LOSSES = ("dice_bce",)
#: Their weight over t: ``alpha2`` = alpha(t)^2 (VP: alpha_bar_t, ~1 at low noise and ~0 at
#: high noise, so the sampler's x0_hat stays the posterior mean where the data is unseen);
#: ``uniform`` = 1.
AUX_WEIGHTINGS = ("alpha2", "uniform")
#: Share of a batch trained on its own previous estimate (Chen et al. 2022 use 0.5).
SELF_COND_P = 0.5
Weighting = str | Callable[[Tensor, Tensor], Tensor]


def sample_times(
    model: ScoreModel,
    batch: int,
    *,
    discrete: bool | None = None,
    power: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training times (B,) in float32: continuous on ``[t_eps, T]`` or DDPM's ``i/N``.

    ``discrete=None`` picks discrete times exactly when the SDE has ``num_steps``.
    ``power = k`` draws ``t = t_eps + (T - t_eps) u^(1/k)`` with ``u ~ U[0, 1)`` (discrete:
    ``i = ceil(N u^(1/k))``), i.e. density ``∝ (t - t_eps)^(k-1)``: ``k = 1`` is uniform,
    ``k = 2`` a linear ramp towards ``T``, where a 1–2-step sampler reads the net.
    """
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
        raise ValueError(f"power must be a finite number > 0, got {power!r}")
    sde = model.sde
    if discrete is None:
        discrete = sde.num_steps is not None
    if discrete:
        if sde.num_steps is None:
            raise ValueError(
                "discrete=True needs an SDE with num_steps (e.g. VPSDE.ddpm(1000)); "
                f"got {sde!r}"
            )
        if power == 1:  # the integer draw of every earlier run, kept bit-exact
            i = torch.randint(1, sde.num_steps + 1, (batch,), generator=generator,
                              device=device)
        else:
            u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
            i = (u ** (1 / power) * sde.num_steps).ceil().clamp(1, sde.num_steps)
        return i.to(torch.float32) / sde.num_steps * sde.T
    u = torch.rand(batch, generator=generator, device=device)
    if power != 1:
        u = u ** (1 / power)
    return sde.t_eps + u * (sde.T - sde.t_eps)


@dataclass(frozen=True)
class TrainingDraw:
    """The random part of one DSM batch of ``B`` samples.

    Attributes:
        t: times (B,) in [0, T], float32.
        noise: ``eps`` (B, *D) ~ N(0, I).
        keep: (B,) bool, True where the condition is kept (False: replaced by zeros, the
            unconditional input of classifier-free guidance); None when nothing is dropped.
        self_cond: (B,) bool, True where a self-conditioned net is trained on its own
            first estimate; None when the model is not self-conditioned.
    """

    t: Tensor
    noise: Tensor
    keep: Tensor | None = None
    self_cond: Tensor | None = None

    def shard(self, rank: int, world_size: int) -> TrainingDraw:
        """The rows ``[rank::world_size]`` (the rows ``DistributedSampler`` gives a rank),
        so that a global batch drawn once is split identically for any number of ranks."""
        rows = slice(rank, None, world_size)
        keep = None if self.keep is None else self.keep[rows]
        self_cond = None if self.self_cond is None else self.self_cond[rows]
        return TrainingDraw(self.t[rows], self.noise[rows], keep, self_cond)


def drop_condition(cond: Tensor | None, keep: Tensor | None) -> Tensor | None:
    """Condition dropout for classifier-free guidance (Ho & Salimans 2022): ``cond`` with
    the rows where ``keep`` (B,) is False replaced by zeros. ``keep=None``: unchanged."""
    if cond is None or keep is None:
        return cond
    if keep.shape != (cond.shape[0],):
        raise ValueError(f"keep must have shape ({cond.shape[0]},), got {tuple(keep.shape)}")
    return cond * append_dims(keep.to(cond.dtype), cond.ndim)


def draw_training_batch(
    model: ScoreModel,
    shape: Sequence[int],
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    p_uncond: float = 0.0,
    discrete: bool | None = None,
    time_power: float = 1.0,
    p_self_cond: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TrainingDraw:
    """Draw ``t``, ``eps`` and the condition-dropout mask of a batch of ``shape = (B, *D)``.

    Draws, in this order and from ``generator``, what is not given: ``t`` by
    :func:`sample_times` (``discrete``, and ``time_power`` as its ``power``), ``noise`` ~
    N(0, I) of ``shape`` in ``dtype``, when ``p_uncond > 0``
    ``keep = U[0, 1) >= p_uncond``, and, when ``p_self_cond`` is not None (a
    self-conditioned model), ``self_cond = U[0, 1) < p_self_cond``. A given ``t`` (B,) or
    ``noise`` (B, *D) is checked and returned as is.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (B, *D) with at least one data dimension, got {shape}")
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    if p_self_cond is not None and not 0.0 <= p_self_cond <= 1.0:
        raise ValueError(f"p_self_cond must be None or in [0, 1], got {p_self_cond}")
    batch = shape[0]
    if t is None:
        t = sample_times(model, batch, discrete=discrete, power=time_power,
                         generator=generator, device=device)
    else:
        model.sde.check_times(t)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have the shape of x0 {shape}, got {tuple(noise.shape)}")
    keep = None
    if p_uncond > 0:
        keep = torch.rand(batch, generator=generator, device=device) >= p_uncond
    self_cond = None
    if p_self_cond is not None:
        self_cond = torch.rand(batch, generator=generator, device=device) < p_self_cond
    return TrainingDraw(t, noise, keep, self_cond)


def dsm_loss(
    model: ScoreModel,
    x0: Tensor,
    cond: Tensor | None = None,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    weighting: Weighting | None = None,
    discrete: bool | None = None,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    aux: str | None = None,
    aux_weight: float = 1.0,
    aux_weighting: str = "alpha2",
    p_self_cond: float = SELF_COND_P,
    self_cond: Tensor | None = None,
) -> Tensor:
    """Denoising score-matching loss of ``model`` on a batch ``x0``: (B, *D).

    Args:
        cond: condition passed to the net unchanged, (B, ...) or None.
        t: times (B,) in [0, T]; drawn by :func:`sample_times` when None.
        noise: ``eps`` (B, *D); drawn from N(0, I) when None. Whatever is not given is
            drawn by :func:`draw_training_batch` (t, eps, dropout mask, in that order).
        weighting: ``"simple"``, ``"sigma2"`` or a callable ``(alpha, sigma) -> (B,)``;
            default ``"sigma2"`` for score-parametrised nets, ``"simple"`` otherwise.
        discrete: DDPM-style integer times; default: when the SDE is discretised.
        p_uncond: probability of replacing a sample's condition by zeros (the
            unconditional input of classifier-free guidance, Ho & Salimans 2022).
        generator: makes t, eps and the condition dropout reproducible.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-sample, shape (B,)).
        aux: ``None`` or ``"dice_bce"``: add :func:`binary_mask_loss` of ``x0_hat``
            (for x0 in {-1, +1}), times ``aux_weight`` and ``alpha(t)^2``
            (``aux_weighting="alpha2"``) or 1 (``"uniform"``).
        p_self_cond: for a self-conditioned model, the share of samples trained on the
            net's own first estimate (module docstring); ignored by other models.
        self_cond: (B,) bool, those samples, given (the trainer draws them for the
            global batch); drawn with ``p_self_cond`` when None.

    The per-sample loss is the mean over the data dimensions of the weighted squared error.
    """
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
    if not torch.is_tensor(x0) or x0.ndim < 2:
        raise ValueError(f"x0 must be a tensor of shape (B, *D), got {getattr(x0, 'shape', x0)}")
    if x0.shape[0] == 0 or x0[0].numel() == 0:
        raise ValueError(
            f"x0 must hold at least one sample with at least one value, got shape "
            f"{tuple(x0.shape)}: the loss of an empty batch is undefined (a mean over nothing)"
        )
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if aux is not None and aux not in AUX_LOSSES:
        raise ValueError(f"aux must be None or one of {AUX_LOSSES}, got {aux!r}")
    if aux_weighting not in AUX_WEIGHTINGS:
        raise ValueError(f"aux_weighting must be one of {AUX_WEIGHTINGS}, got {aux_weighting!r}")
    model.check_cond(x0, cond)
    self_conditioned = model.self_condition
    if self_cond is not None and (not self_conditioned or self_cond.shape != x0.shape[:1]
                                  or self_cond.dtype != torch.bool):
        raise ValueError(f"self_cond must be a ({x0.shape[0]},) bool tensor for a "
                         f"self-conditioned model; got {getattr(self_cond, 'shape', self_cond)} "
                         f"for a model with self_condition={self_conditioned}")
    draw = draw_training_batch(
        model, x0.shape, t=t, noise=noise, p_uncond=p_uncond if cond is not None else 0.0,
        discrete=discrete, generator=generator, device=x0.device, dtype=x0.dtype,
        p_self_cond=p_self_cond if self_conditioned and self_cond is None else None,
    )
    t, noise, cond = draw.t, draw.noise, drop_condition(cond, draw.keep)

    alpha, sigma = model.coeffs(t, x0)
    x_t = alpha * x0 + sigma * noise
    if self_conditioned:
        rows = self_cond if self_cond is not None else draw.self_cond
        x_self = _first_estimate(model, x_t, t.to(x0.dtype), cond, alpha, sigma, rows)
        out = model.net(x_t, t.to(x0.dtype), cond, x_self)
    else:
        out = model.net(x_t, t.to(x0.dtype), cond)
    if out.shape != x0.shape:
        raise ValueError(
            f"the net returned shape {tuple(out.shape)}; expected the shape of x0 {tuple(x0.shape)}"
        )
    target = model.target(x0, noise, alpha, sigma)
    per_sample = (out.float() - target.float()).pow(2).flatten(1).mean(1)

    if weighting is None:
        weighting = "sigma2" if model.prediction == "score" else "simple"
    if callable(weighting):
        a64, s64 = model.sde.alpha_sigma(t.detach().to(torch.float64), check=False)
        lam = weighting(a64, s64).to(per_sample.dtype)
    elif weighting == "simple":
        lam = None
    elif weighting == "sigma2":
        lam = sigma.flatten(1)[:, 0].float() ** 2
    else:
        raise ValueError(f"weighting must be one of {WEIGHTINGS} or a callable, got {weighting!r}")
    if lam is not None:
        per_sample = per_sample * lam
    if aux is not None and aux_weight != 0:
        _, x0_hat = model.convert(out.float(), x_t.float(), alpha.float(), sigma.float())
        w = alpha.flatten(1)[:, 0].float() ** 2 if aux_weighting == "alpha2" else 1.0
        per_sample = per_sample + aux_weight * w * binary_mask_loss(x0_hat, x0.float())
    return per_sample.mean() if reduction == "mean" else per_sample


def _first_estimate(model: ScoreModel, x_t: Tensor, t: Tensor, cond: Tensor | None,
                    alpha: Tensor, sigma: Tensor, rows: Tensor) -> Tensor:
    """``x_self`` of a self-conditioning step: zeros, and on ``rows`` (B,) the ``x0_hat`` of
    a gradient-free call on ``(x_t, t, cond, 0)``. Only those rows are evaluated; under
    DDP the first call bypasses the wrapper (no gradient, nothing to synchronise)."""
    x_self = torch.zeros_like(x_t)
    idx = rows.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x_self
    net = model.net.module if isinstance(model.net, DistributedDataParallel) else model.net
    with torch.no_grad():
        out = net(x_t[idx], t[idx], None if cond is None else cond[idx], None)
        _, est = model.convert(out.to(x_t.dtype), x_t[idx], alpha[idx], sigma[idx])
    return x_self.index_copy(0, idx, est.to(x_t.dtype))


def binary_mask_loss(x0_hat: Tensor, x0: Tensor, *, eps: float = 1e-4) -> Tensor:
    """Soft Dice + binary cross-entropy per sample (B,) for masks in {-1, +1}.

    ``p = clamp((x0_hat + 1) / 2, eps, 1 - eps)`` and ``m = (x0 + 1) / 2``;
    ``1 - (2 sum p m + 1) / (sum p + sum m + 1)`` (Milletari et al. 2016, V-Net, with a
    +1 that makes an empty mask predicted empty cost 0) plus the mean BCE over pixels.
    """
    if x0_hat.shape != x0.shape:
        raise ValueError(f"x0_hat {tuple(x0_hat.shape)} and x0 {tuple(x0.shape)} differ")
    p = ((x0_hat + 1) / 2).clamp(eps, 1 - eps).flatten(1)
    m = ((x0 + 1) / 2).flatten(1)
    dice = 1 - (2 * (p * m).sum(1) + 1) / (p.sum(1) + m.sum(1) + 1)
    bce = -(m * p.log() + (1 - m) * (1 - p).log()).mean(1)
    return dice + bce
