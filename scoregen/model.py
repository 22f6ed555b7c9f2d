"""``ScoreModel``: a network plus an SDE, converting between eps, score, x0 and v.

With ``x_t = alpha x_0 + sigma eps`` (see :mod:`scoregen.sde`) the four common
parametrisations are affine in one another given ``(x_t, alpha, sigma)``:

    score = -eps / sigma                                  (Song & Ermon 2019; Vincent 2011)
    x0    = (x_t - sigma eps) / alpha                     (Ho et al. 2020, eq. 15)
    v     = (alpha eps - sigma x0) / n,  n = sqrt(alpha^2 + sigma^2)
    x0    = (alpha x_t / n - sigma v) / n                 (solving the two lines above)
    eps   = (sigma x_t / n + alpha v) / n

so a sampler asks for what it needs and never cares what the network was trained on.

``v`` is Salimans & Ho's velocity (2022, sec. 4) of the variance-preserving process
``x_t / n``, whose coefficients ``(alpha / n, sigma / n)`` lie on the unit circle: on VP
SDEs ``n = 1`` and it is their ``alpha eps - sigma x0`` exactly. On VE (``alpha = 1``) it is
the preconditioning of Karras et al. 2022 (EDM, eq. 7, sigma_data = 1): ``x0_hat =
x_t / (1 + sigma^2) - sigma v / sqrt(1 + sigma^2)``, the identity at small sigma and
``-v`` at large sigma, so the target has unit scale at every noise level. The unnormalised
``alpha eps - sigma x0`` grows like ``sigma`` under VE (50 at ``sigma_max``); a raw x0
target cannot represent the identity at small sigma (a trained VE x0 net leaves x0 errors
of ~0.08 at sigma = 1e-4, an eps error of ~600, and a probability-flow density ~1e5
bits/dim off); eps is ``sigma`` times too coarse at large sigma.
Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and unconditional
outputs, ``out = out_u + w (out_c - out_u)``; because every conversion is affine in the
network output, guiding the raw output is the same as guiding eps, score, x0 or v.
The unconditional output is the network evaluated with an all-zeros condition.

Self-conditioning (Chen, Zhang & Hinton 2022, arXiv:2208.04202, Sec. 3): a net built to
read its own previous estimate is called ``net(x, t, cond, x_self)``, ``x_self`` the
last ``x0_hat`` (None: zeros, "no estimate yet"). ``denoise`` and ``reverse_drift``
take it as ``x_self``; a sampler passes the estimate of its previous network call
(:class:`scoregen.samplers.base.SamplingRun`), the loss trains both inputs
(:func:`scoregen.dsm_loss`). Without ``x_self`` such a model is a plain function of
``(x_t, t)``, which is what an ODE likelihood needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from scoregen.broadcast import append_dims, as_batch_times
from scoregen.nn.conditioning import EncodedCondition
from scoregen.sde import SDE

__all__ = ["ScoreModel", "PREDICTIONS", "Prediction", "velocity"]

Prediction = Literal["eps", "score", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "score", "x0", "v")

#: A network: ``(x: (B, *D), t: (B,), cond) -> (B, *D)``.
Net = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def velocity(eps: Tensor, x0: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """The v target ``(alpha eps - sigma x0) / sqrt(alpha^2 + sigma^2)``: Salimans & Ho's v of
    the variance-preserving ``x_t / sqrt(alpha^2 + sigma^2)`` (EDM's preconditioning on VE)."""
    return (alpha * eps - sigma * x0) / (alpha * alpha + sigma * sigma) ** 0.5


def _reads_previous_estimate(net: object) -> bool:
    """``net.self_condition`` of the innermost net under DDP (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers; False when it has no such attribute."""
    for _ in range(4):
        flag = getattr(net, "self_condition", None)
        if isinstance(flag, bool):
            return flag
        inner = getattr(net, "module", None) or getattr(net, "_orig_mod", None)
        if inner is None:
            return False
        net = inner
    return False


def _check_guidance_scale(w: object) -> None:
    if w is None:
        return
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"guidance_scale must be a number or None, got {w!r}")
    if not math.isfinite(w):
        raise ValueError(f"guidance_scale must be finite (or None), got {w!r}")


def _refuse_encoded_guidance(w: float) -> None:
    """Guidance evaluates the net on the zeros image; an encoded condition cannot give it."""
    raise ValueError(
        f"classifier-free guidance (guidance_scale={w}) needs the raw condition image for "
        f"its unconditional branch (the net on zeros); an EncodedCondition holds only "
        f"G(cond): pass cond as a tensor"
    )


class ScoreModel(nn.Module):
    """Wrap ``net`` (any callable ``(x, t, cond) -> tensor``) with an ``sde``.

    Args:
        net: an ``nn.Module`` or plain function; ``t`` is a float tensor of shape (B,).
        sde: the forward process the net was (or will be) trained for.
        prediction: what the net outputs: ``"eps"``, ``"score"``, ``"x0"`` or ``"v"``.
        guidance_scale: classifier-free guidance weight ``w`` used when a ``cond`` is
            given: ``None`` (or 1) = plain conditional, 0 = unconditional.
        self_condition: the net takes the previous ``x0_hat`` as a fourth argument
            (module docstring); ``None`` reads ``net.self_condition`` (through DDP and
            ``torch.compile`` wrappers), False when it has none.
    """

    def __init__(
        self,
        net: Net,
        sde: SDE,
        prediction: Prediction = "eps",
        guidance_scale: float | None = None,
        self_condition: bool | None = None,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t, cond), got {type(net).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoregen SDE, got {type(sde).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        _check_guidance_scale(guidance_scale)
        if self_condition is None:
            self_condition = _reads_previous_estimate(net)
        if not isinstance(self_condition, bool):
            raise TypeError(f"self_condition must be a bool or None, got {self_condition!r}")
        self.self_condition = self_condition
        self.net = net  # registered as a submodule when it is an nn.Module
        self.sde = sde
        self.prediction: Prediction = prediction
        self.guidance_scale = guidance_scale

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        """Device of the net's first parameter, or CPU for parameter-free callables."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the net's first floating parameter (float32 for plain functions)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def check_cond(self, x: Tensor, cond: Tensor | None) -> None:
        """Raise a clear error if ``cond`` cannot belong to the batch ``x``.

        ``x`` may live on the ``meta`` device (only its shape is used). Nets that define
        ``check_cond(x, cond)`` (the U-Net does) validate the full shapes here too. Also
        rejects a non-finite ``cond`` or ``guidance_scale`` (once per :func:`scoregen.sample`
        call: one host sync, not one per network call).
        """
        _check_guidance_scale(self.guidance_scale)  # may have been set after __init__
        if isinstance(cond, EncodedCondition) and self.guidance_scale not in (None, 1):
            _refuse_encoded_guidance(self.guidance_scale)
        if cond is not None:
            tensor = cond.features if isinstance(cond, EncodedCondition) else cond
            if not torch.is_tensor(tensor):
                raise TypeError(f"cond must be a tensor, an EncodedCondition or None, got "
                                f"{type(cond).__name__}")
            if cond.ndim == 0 or cond.shape[0] != x.shape[0]:
                raise ValueError(
                    f"cond must have the batch size of x ({x.shape[0]}) in its first dim; "
                    f"got cond of shape {tuple(cond.shape)} for x of shape {tuple(x.shape)}"
                )
            if (tensor.is_floating_point() or tensor.is_complex()) and not bool(
                    torch.isfinite(tensor).all()):
                raise ValueError("cond contains non-finite values (nan or inf); a condition "
                                 "must be finite (it would turn every sample into nan)")
        net_check = getattr(self.net, "check_cond", None)
        if callable(net_check):
            net_check(x, cond)

    # ------------------------------------------------------------------ network output
    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None,
                x_self: Tensor | None = None) -> Tensor:
        """Raw network output (in the net's own parametrisation), guidance applied."""
        return self._guided(x, as_batch_times(t, x.shape[0], x), cond, x_self)

    def _call(self, x: Tensor, t: Tensor, cond: Tensor | None, x_self: Tensor | None
              ) -> Tensor:
        """The net on one batch; ``x_self`` only reaches a self-conditioned net."""
        if self.self_condition:
            return self.net(x, t, cond, x_self)
        if x_self is not None:
            raise ValueError("x_self (the previous x0 estimate) was given to a model whose "
                             "net is not self-conditioned (ScoreModel.self_condition=False)")
        return self.net(x, t, cond)

    def _guided(self, x: Tensor, t: Tensor, cond: Tensor | None,
                x_self: Tensor | None = None) -> Tensor:
        """One (guided) network evaluation; ``t``: (B,) already on ``x``'s device."""
        w = self.guidance_scale
        if cond is None or w is None or w == 1:
            return self._call(x, t, cond, x_self)
        if isinstance(cond, EncodedCondition):
            _refuse_encoded_guidance(w)
        uncond = torch.zeros_like(cond)
        if w == 0:
            return self._call(x, t, uncond, x_self)
        both = None if x_self is None else torch.cat([x_self, x_self])
        out = self._call(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]), both)
        out_c, out_u = out.chunk(2)
        return out_u + w * (out_c - out_u)

    def coeffs(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` at ``t``: (B,), broadcast to ``x``'s rank and dtype."""
        alpha, sigma = self.sde.alpha_sigma(t.detach().to(torch.float64))
        return append_dims(alpha.to(x.dtype), x.ndim), append_dims(sigma.to(x.dtype), x.ndim)

    def denoise(
        self,
        x: Tensor,
        t: Tensor | float,
        cond: Tensor | None = None,
        *,
        alpha: Tensor | float | None = None,
        sigma: Tensor | float | None = None,
        net_dtype: torch.dtype | None = None,
        x_self: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(eps_hat, x0_hat)`` at ``x_t = x`` from exactly one (guided) network call.

        ``x``: (B, *D) in any float dtype (the integration state); ``t``: (B,) tensor (or a
        number / 0-d tensor, broadcast). The net is called on ``x`` cast to ``net_dtype``
        (default: ``x``'s dtype) and its output is cast back before the conversion, so
        ``eps_hat`` and ``x0_hat`` have ``x``'s dtype. Samplers that precomputed the
        schedule pass ``alpha``/``sigma`` (numbers or tensors broadcastable to ``x``);
        otherwise they are computed (and ``t`` range-checked) here. ``cond`` is not
        validated here: :func:`scoregen.sample` checks it once per call
        (:meth:`check_cond`). ``x_self``: the previous ``x0_hat`` (B, *D) for a
        self-conditioned net (None: zeros); refused by other nets.
        """
        if not (torch.is_tensor(t) and t.shape == x.shape[:1] and t.device == x.device):
            t = as_batch_times(t, x.shape[0], x)
        if alpha is None or sigma is None:
            alpha, sigma = self.coeffs(t, x)
        cast = net_dtype is not None and net_dtype != x.dtype
        x_in = x.to(net_dtype) if cast else x
        if cast and x_self is not None:
            x_self = x_self.to(net_dtype)
        out = self._guided(x_in, t, cond, x_self)
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return self.convert(out, x, alpha, sigma)

    def reverse_drift(
        self,
        x: Tensor,
        t: Tensor | float,
        cond: Tensor | None = None,
        *,
        noise: float = 1.0,
        coeffs: tuple[Tensor | float, Tensor | float, Tensor | float, Tensor | float]
        | None = None,
        net_dtype: torch.dtype | None = None,
        x_self: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Drift of the reverse-time dynamics, and the ``x0_hat`` of its one network call.

        score_sde's ``SDE.reverse`` (Song et al. 2021, eqs. 6 and 13) as one family
        (Zhang & Chen 2022, gDDIM, eq. 4), integrated from T down to 0:

            dx = [f(t) x - (1 + noise^2)/2 g(t)^2 score(x, t)] dt + noise g(t) dw_bar
               = [f(t) x + (1 + noise^2)/2 g(t)^2 eps_hat / sigma(t)] dt + noise g(t) dw_bar

        ``noise = 1`` is the reverse SDE, ``noise = 0`` the probability-flow ODE; every
        ``noise`` has the forward process's marginals. Returns ``(drift, x0_hat)``, both
        (B, *D) in ``x``'s dtype; the diffusion is ``noise * g(t)``.

        ``coeffs``: precomputed ``(alpha, sigma, f, g2)`` at ``t`` (numbers, or tensors
        broadcastable to ``x``); by default computed from ``t`` (then a (B,) tensor or a
        number). ``x_self``: as in :meth:`denoise`.
        """
        if coeffs is None:
            t = as_batch_times(t, x.shape[0], x)
            t64 = t.detach().to(torch.float64)
            alpha, sigma = (append_dims(v.to(x.dtype), x.ndim) for v in self.sde.alpha_sigma(t64))
            f, g2 = (append_dims(v.to(x.dtype), x.ndim) for v in self.sde.f_g2(t64))
        else:
            alpha, sigma, f, g2 = coeffs
        eps, x0 = self.denoise(x, t, cond, alpha=alpha, sigma=sigma, net_dtype=net_dtype,
                               x_self=x_self)
        c = (0.5 * (1.0 + noise * noise)) * g2 / sigma
        if isinstance(f, float) and isinstance(c, float):
            return torch.add(x * f, eps, alpha=c), x0
        return f * x + c * eps, x0

    def convert(
        self, out: Tensor, x: Tensor, alpha: Tensor | float, sigma: Tensor | float
    ) -> tuple[Tensor, Tensor]:
        """Net output in ``self.prediction`` → ``(eps_hat, x0_hat)`` at ``x_t = x``."""
        kind = self.prediction
        if kind == "eps":
            eps = out
            x0 = (x - sigma * eps) / alpha
        elif kind == "x0":
            x0 = out
            eps = (x - alpha * x0) / sigma
        elif kind == "score":
            eps = -sigma * out
            x0 = (x - sigma * eps) / alpha
        else:  # "v", normalised by n = sqrt(alpha^2 + sigma^2) (module docstring)
            n = (alpha * alpha + sigma * sigma) ** 0.5
            x_n = x / n
            x0 = (alpha * x_n - sigma * out) / n
            eps = (sigma * x_n + alpha * out) / n
        return eps, x0

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The regression target of ``self.prediction`` for ``x_t = alpha x0 + sigma eps``."""
        kind = self.prediction
        if kind == "eps":
            return eps
        if kind == "x0":
            return x0
        if kind == "score":
            return -eps / sigma
        return velocity(eps, x0, alpha, sigma)

    # ------------------------------------------------------------------ conveniences
    def eps(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predicted noise ``eps_hat(x_t, t)``."""
        return self.denoise(x, t, cond)[0]

    def x0(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predicted clean data ``x0_hat(x_t, t) = E[x_0 | x_t]`` (Tweedie)."""
        return self.denoise(x, t, cond)[1]

    def score(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Score ``grad_x log p_t(x) = -eps_hat / sigma(t)``."""
        t = as_batch_times(t, x.shape[0], x)
        alpha, sigma = self.coeffs(t, x)
        eps, _ = self.denoise(x, t, cond, alpha=alpha, sigma=sigma)
        return -eps / sigma

    def v(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Velocity ``v = (alpha eps - sigma x0) / sqrt(alpha^2 + sigma^2)`` (see
        :func:`velocity`)."""
        t = as_batch_times(t, x.shape[0], x)
        alpha, sigma = self.coeffs(t, x)
        eps, x0 = self.denoise(x, t, cond, alpha=alpha, sigma=sigma)
        return velocity(eps, x0, alpha, sigma)
