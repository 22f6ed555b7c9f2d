"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, sec. 4.3 and
appendix D.2; the instantaneous change of variables of Chen et al. 2018, FFJORD
(Grathwohl et al. 2019) for the trace estimator).

For the ODE ``dx/dt = v(x, t)`` (see :class:`scoregen.samplers.ProbabilityFlow`),

    log p_0(x_0) = log p_T(x_T) + int_0^T div v(x_t, t) dt,

integrated forward from ``t_eps`` to ``T`` on the joint state ``(x, int div v)``. The
divergence is exact (one vector–Jacobian product per dimension) for small data, or
Hutchinson's unbiased estimate ``E_z[z^T (dv/dx) z]`` with one fixed probe ``z``
(Rademacher or Gaussian) per integration.

Units: :func:`log_prob` returns nats per sample; :func:`log_likelihood` bits per
dimension. For 8-bit data mapped to [-1, 1] by :func:`dequantize` (uniform noise,
``x = 2 (k + u) / 256 - 1``) pass ``num_bins=256``: the density on the integer grid is
``p_x * (2/256)^D``, which adds ``log2(256 / 2) = 7`` bits/dim (score_sde's offset; it
holds only for this mapping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from scoregen.model import ScoreModel
from scoregen.samplers.probability_flow import ADAPTIVE_METHODS, ProbabilityFlow

__all__ = ["log_prob", "log_prob_with_info", "LogProbResult", "log_likelihood", "dequantize",
           "bits_per_dim"]

#: Dimension up to which the divergence is computed exactly by default.
EXACT_TRACE_MAX_DIM = 32


def dequantize(
    x: Tensor, num_bins: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """Integer data ``k`` in ``{0..num_bins-1}`` → ``2 (k + u) / num_bins - 1``, ``u ~ U[0, 1)``."""
    k = x.to(torch.float32)
    if bool(((k < 0) | (k > num_bins - 1) | (k != k.round())).any()):
        raise ValueError(f"dequantize expects integers in [0, {num_bins - 1}]")
    u = torch.rand(k.shape, generator=generator, device=k.device)
    return 2 * (k + u) / num_bins - 1


def _divergence(v: Tensor, x: Tensor, probe: Tensor | None) -> Tensor:
    """Divergence of ``v(x)`` per sample: exact when ``probe`` is None, else Hutchinson."""
    if probe is not None:
        (vjp,) = torch.autograd.grad(v, x, probe, create_graph=False)
        return (vjp * probe).flatten(1).sum(1)
    v_flat = v.flatten(1)
    div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
    for i in range(v_flat.shape[1]):
        (g,) = torch.autograd.grad(v_flat[:, i].sum(), x, retain_graph=True)
        div = div + g.flatten(1)[:, i]
    return div


@dataclass(frozen=True)
class LogProbResult:
    """What :func:`log_prob_with_info` returns: ``logp`` (B,) in nats and the NFE used."""

    logp: Tensor
    nfe: int


def log_prob(
    model: ScoreModel,
    x0: Tensor,
    cond: Tensor | None = None,
    *,
    exact: bool | None = None,
    probe: str = "rademacher",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eps: float | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``log p(x0)`` in nats per sample, (B,); options as in :func:`log_prob_with_info`,
    which also reports the NFE."""
    return log_prob_with_info(model, x0, cond, exact=exact, probe=probe, method=method,
                              rtol=rtol, atol=atol, t_eps=t_eps, dtype=dtype,
                              generator=generator).logp


def log_prob_with_info(
    model: ScoreModel,
    x0: Tensor,
    cond: Tensor | None = None,
    *,
    exact: bool | None = None,
    probe: str = "rademacher",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eps: float | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> LogProbResult:
    """``log p(x0)`` in nats per sample, (B,), by the probability-flow ODE, and the NFE.

    The ODE's velocity is :class:`~scoregen.samplers.ProbabilityFlow`, i.e.
    :meth:`scoregen.ScoreModel.reverse_drift` with ``noise = 0`` (the samplers' drift).

    Args:
        x0: data (B, *D) in the model's data space.
        exact: exact divergence (D vector–Jacobian products per evaluation); default
            exact when ``D <= 32``, Hutchinson's estimator otherwise.
        probe: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        method, rtol, atol: adaptive torchdiffeq solver and tolerances.
        t_eps: the ODE starts at ``t_eps`` (default the SDE's) where ``p_{t_eps} ~ p_0``.
        dtype: integration dtype (e.g. ``torch.float64``).
        generator: seeds the Hutchinson probe.
    """
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
    if not torch.is_tensor(x0) or x0.ndim < 2 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a float tensor (B, *D), got {getattr(x0, 'shape', x0)}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains non-finite values")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    if method not in ADAPTIVE_METHODS:
        raise ValueError(f"method must be an adaptive torchdiffeq method {ADAPTIVE_METHODS}")
    model.check_cond(x0, cond)
    sde = model.sde
    t_eps = sde.t_eps if t_eps is None else float(t_eps)
    if not 0 < t_eps < sde.T:
        raise ValueError(f"t_eps must lie in (0, T={sde.T}), got {t_eps}")
    dim = x0[0].numel()
    exact = dim <= EXACT_TRACE_MAX_DIM if exact is None else exact
    state_dtype = dtype or x0.dtype
    x = x0.detach().to(state_dtype)
    z = None
    if not exact:
        gen_device = generator.device if generator is not None else x.device
        if probe == "gaussian":
            z = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype)
        else:
            z = torch.randint(0, 2, x.shape, generator=generator, device=gen_device).to(x.dtype)
            z = 2 * z - 1
        z = z.to(x.device)
    flow = ProbabilityFlow(model, cond, net_dtype=x0.dtype)

    def joint(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x_t = state[0]
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            v = flow(t, x_t)
            div = _divergence(v, x_t, z)
        return v.detach(), div.detach()

    ts = torch.tensor([t_eps, sde.T], dtype=state_dtype, device=x.device)
    delta0 = torch.zeros(x.shape[0], dtype=state_dtype, device=x.device)
    x_T, delta = (s[-1] for s in odeint(joint, (x, delta0), ts, method=method,
                                        rtol=rtol, atol=atol))
    logp = sde.prior_logp(x_T) + delta
    return LogProbResult(logp=logp, nfe=flow.nfe)


def log_likelihood(
    model: ScoreModel,
    x0: Tensor,
    cond: Tensor | None = None,
    *,
    num_bins: int | None = None,
    **kwargs: object,
) -> Tensor:
    """Bits per dimension ``-log2 p(x0) / D`` per sample, (B,), via :func:`log_prob`.

    ``num_bins``: for data dequantised from ``num_bins`` levels onto [-1, 1] (see
    :func:`dequantize`), report bits/dim of the discrete data: adds ``log2(num_bins / 2)``.
    Other keyword arguments go to :func:`log_prob`.
    """
    if num_bins is not None and (not isinstance(num_bins, int) or num_bins < 2):
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    logp = log_prob(model, x0, cond, **kwargs)  # type: ignore[arg-type]
    return bits_per_dim(logp, x0[0].numel(), num_bins)


def bits_per_dim(logp: Tensor, dim: int, num_bins: int | None = None) -> Tensor:
    """``-log2 p / D`` from ``logp`` in nats, plus ``log2(num_bins / 2)`` for data dequantised
    from ``num_bins`` levels onto [-1, 1] (see :func:`log_likelihood`)."""
    bpd = -logp / (dim * math.log(2))
    return bpd if num_bins is None else bpd + math.log2(num_bins / 2)
