"""Forward SDEs as Gaussian perturbations ``x_t = alpha(t) x_0 + sigma(t) eps``.

Every SDE here has a linear drift, ``dx = f(t) x dt + g(t) dw`` (Song et al. 2021,
"Score-Based Generative Modeling through Stochastic Differential Equations",
arXiv:2011.13456, eqs. 5-6, 9-11, 25-34), so its marginals given ``x_0`` are Gaussian:

    x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I),
    f(t) = d log alpha / dt,      g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2.

Samplers, losses and likelihoods only use (alpha, sigma) and (f, g); nothing outside
this module knows which SDE it is driving.

| class      | alpha(t)          | sigma(t)                                  | paper            |
|------------|-------------------|-------------------------------------------|------------------|
| VPSDE      | exp(-B(t)/2)      | sqrt(1 - exp(-B(t)))                      | DDPM, Ho 2020    |
| SubVPSDE   | exp(-B(t)/2)      | 1 - exp(-B(t))      (= 1 - alpha^2)       | Song 2021 eq. 11 |
| VESDE      | 1                 | s_min sqrt((s_max/s_min)^(2t) - 1)        | NCSN, Song 2019  |

``B(t) = int_0^t beta(s) ds``. All schedule arithmetic is done in float64 and cast to
the dtype of ``t`` on return.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE"]


class SDE(ABC):
    """A forward SDE ``dx = f(t) x dt + g(t) dw`` on ``t in [0, T]`` with Gaussian marginals.

    Subclasses implement two private float64 primitives, :meth:`_alpha_sigma` and
    :meth:`_f_g2` (no validation), and may override :meth:`t_of_log_snr` with a closed
    form; the public schedule API (:meth:`alpha_sigma`, :meth:`f_g2`, :meth:`log_snr`,
    :meth:`t_of_log_snr`) is what every other module uses.
    """

    #: Final time of the forward process.
    T: float = 1.0
    #: Smallest time used by continuous-time samplers and the continuous loss.
    t_eps: float = 1e-3
    #: Standard deviation of the prior N(0, prior_std^2 I) that samplers start from.
    prior_std: float = 1.0
    #: Number of discrete training steps when the SDE is a discretised schedule (else None).
    num_steps: int | None = None

    _registry: ClassVar[dict[str, type[SDE]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        SDE._registry[cls.__name__] = cls

    # ------------------------------------------------------------------ primitives
    @abstractmethod
    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)) for float64 ``t`` of any shape, without validation."""

    @abstractmethod
    def _f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(f(t), g(t)^2) for float64 ``t`` of any shape, without validation."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description; :meth:`SDE.from_dict` inverts it."""

    # ------------------------------------------------------------------ validation
    def check_times(self, t: Tensor, name: str = "t") -> Tensor:
        """Return ``t`` as float64 after checking it is a finite float tensor in [0, T]."""
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch.Tensor of times, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        t64 = t.detach().to(torch.float64)
        if t64.numel() and not bool(
            torch.isfinite(t64).all() & (t64 >= 0).all() & (t64 <= self.T * (1 + 1e-9)).all()
        ):
            raise ValueError(
                f"{name} must lie in [0, T={self.T}] and be finite; "
                f"got values in [{t64.min().item():.6g}, {t64.max().item():.6g}]"
            )
        return t64.clamp(0.0, self.T)

    # ------------------------------------------------------------------ public math
    def _times(self, t: Tensor, check: bool) -> Tensor:
        """float64 ``t``: validated (one host sync) or, with ``check=False``, only cast."""
        if check:
            return self.check_times(t)
        if not (torch.is_tensor(t) and t.is_floating_point()):
            raise TypeError(f"t must be a floating-point torch.Tensor, got {t!r}")
        return t.detach().to(torch.float64)

    def alpha_sigma(self, t: Tensor, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` with ``x_t = alpha x_0 + sigma eps``.

        ``t``: float tensor of any shape (usually (B,)) in [0, T]; the arithmetic is float64
        and the result has ``t``'s dtype and shape. ``check=False`` skips the range check
        (and its host sync) for callers that validated ``t`` once already.
        """
        alpha, sigma = self._alpha_sigma(self._times(t, check))
        return alpha.to(t.dtype), sigma.to(t.dtype)

    def f_g2(self, t: Tensor, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """``(f(t), g(t)^2)``: the forward drift is ``f(t) x``, the diffusion ``g(t) dw``."""
        f, g2 = self._f_g2(self._times(t, check))
        return f.to(t.dtype), g2.to(t.dtype)

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Same as :meth:`alpha_sigma` (the older name, kept)."""
        return self.alpha_sigma(t)

    def drift_diffusion(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(t), g(t))``: the drift is ``f(t) * x`` and the diffusion coefficient ``g(t)``."""
        f, g2 = self.f_g2(t)
        return f, g2.sqrt()

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """score_sde's contract: ``(drift f(t) x, diffusion g(t))`` for ``x``: (B, *D)."""
        f, g = self.drift_diffusion(t)
        return f.reshape(-1, *([1] * (x.ndim - 1))) * x, g

    def log_snr(self, t: Tensor, *, check: bool = True) -> Tensor:
        """``lambda(t) = log(alpha(t) / sigma(t))``, strictly decreasing in t (+inf at sigma=0).

        This is DPM-Solver's lambda (Lu et al. 2022, eq. 3.2): half the log of the
        signal-to-noise ratio ``alpha^2 / sigma^2``; ``sigma / alpha = exp(-lambda)``.
        """
        alpha, sigma = self._alpha_sigma(self._times(t, check))
        return (alpha.log() - sigma.log()).to(t.dtype)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`: the time ``t`` in [0, T] with ``log_snr(t) = lam``.

        ``lam``: float tensor of any shape; float64 arithmetic, returned in ``lam``'s dtype.
        Values beyond ``[log_snr(T), +inf]`` are clamped to [0, T]. Subclasses invert in
        closed form; this generic fallback bisects on [0, T] (~1e-15 relative), using only
        the monotonicity of lambda(t).
        """
        target = self._lam64(lam)
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, self.T)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            a, s = self._alpha_sigma(mid)
            above = a.log() - s.log() > target  # lambda decreasing: go right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)

    @staticmethod
    def _lam64(lam: Tensor) -> Tensor:
        if not (torch.is_tensor(lam) and lam.is_floating_point()):
            raise TypeError(f"lam must be a floating-point torch.Tensor, got {lam!r}")
        if bool(torch.isnan(lam).any()):
            raise ValueError("lam (a log-SNR) contains nan")
        return lam.detach().to(torch.float64)

    # ------------------------------------------------------------------ prior
    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``x_T ~ N(0, prior_std^2 I)`` of ``shape`` = (B, *D)."""
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior at ``z``: (B, *D) → (B,), in nats."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    # ------------------------------------------------------------------ (de)serialisation
    @staticmethod
    def from_dict(config: dict[str, Any]) -> SDE:
        """Rebuild an SDE from :meth:`to_dict`'s output."""
        config = dict(config)
        kind = config.pop("type", None)
        if kind not in SDE._registry:
            raise ValueError(
                f"unknown SDE type {kind!r}; expected one of {sorted(SDE._registry)}"
            )
        cls = SDE._registry[kind]
        factory = config.pop("schedule", None)
        if factory == "ddpm":
            return cls.ddpm(**config)  # type: ignore[attr-defined]
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SDE) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")


class VPSDE(SDE):
    """Variance-preserving SDE (DDPM): ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dw``.

    ``alpha^2 + sigma^2 = 1``. Continuous form: ``beta(t) = beta_min + t (beta_max -
    beta_min)`` (Song et al. 2021, eq. 11). :meth:`ddpm` builds DDPM's discrete schedule
    (Ho et al. 2020) as a VP SDE whose marginals equal DDPM's ``alphas_cumprod`` exactly at
    ``t = i / N``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        _check_positive(beta_min=beta_min, beta_max=beta_max)
        if beta_max < beta_min:
            raise ValueError(f"beta_max ({beta_max}) must be >= beta_min ({beta_min})")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self._log_alphas_cumprod: Tensor | None = None  # set by ddpm()

    @classmethod
    def ddpm(
        cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> VPSDE:
        """DDPM's discrete schedule: ``beta_i`` linear from ``beta_start`` to ``beta_end``.

        ``B(t) = -log prod_{j <= tN} (1 - beta_j)`` is linear between the grid points
        ``t = i/N``, so ``alpha(i/N)^2`` is DDPM's ``alphas_cumprod[i-1]`` exactly and
        ``beta(t) = -N log(1 - beta_i)`` is piecewise constant.
        """
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        _check_positive(beta_start=beta_start, beta_end=beta_end)
        if not beta_end < 1:
            raise ValueError(f"beta_end must be < 1, got {beta_end}")
        sde = cls(beta_min=beta_start * num_steps, beta_max=max(beta_end, beta_start) * num_steps)
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        sde._log_alphas_cumprod = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.log1p(-betas).cumsum(0)]
        )  # (N+1,), entry i = log prod_{j<=i}(1-beta_j)
        sde.num_steps = num_steps
        sde.t_eps = 1.0 / num_steps
        sde._ddpm_args = (num_steps, float(beta_start), float(beta_end))
        return sde

    @property
    def alphas_cumprod(self) -> Tensor:
        """DDPM's ``alphas_cumprod`` (N,), float64; only for the discrete schedule."""
        if self._log_alphas_cumprod is None:
            raise AttributeError("alphas_cumprod exists only for VPSDE.ddpm(...)")
        return self._log_alphas_cumprod[1:].exp()

    def _integral_beta(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(B(t), beta(t))`` in float64."""
        table = self._log_alphas_cumprod
        if table is None:
            beta = self.beta_min + t * (self.beta_max - self.beta_min)
            big_b = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
            return big_b, beta
        n = self.num_steps
        table = table.to(t.device)
        s = t * n
        i0 = s.floor().clamp(0, n - 1).long()
        frac = s - i0
        lo, hi = table[i0], table[i0 + 1]
        return -(lo + frac * (hi - lo)), -(hi - lo) * n

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        big_b, _ = self._integral_beta(t)
        return (-0.5 * big_b).exp(), (-torch.expm1(-big_b)).sqrt()

    def _f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        _, beta = self._integral_beta(t)
        return -0.5 * beta, beta

    def _t_of_integral_beta(self, big_b: Tensor) -> Tensor:
        """Invert ``B(t)`` exactly: the quadratic (continuous) or the piecewise-linear table."""
        table = self._log_alphas_cumprod
        if table is None:
            # b t + d/2 t^2 = B  ->  t = 2B / (b + sqrt(b^2 + 2 d B)): no cancellation, d = 0 ok
            b, d = self.beta_min, self.beta_max - self.beta_min
            t = 2 * big_b / (b + (b * b + 2 * d * big_b).sqrt())
        else:
            n = self.num_steps
            cum = -table.to(big_b.device)  # (N+1,) increasing: B at t = i/N
            i0 = (torch.searchsorted(cum, big_b.contiguous(), right=True) - 1).clamp(0, n - 1)
            lo, hi = cum[i0], cum[i0 + 1]
            t = (i0 + (big_b - lo) / (hi - lo)) / n
        return t.clamp(0.0, self.T)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """Exact inverse: ``alpha^2/sigma^2 = 1/(e^B - 1) = e^(2 lam)`` gives
        ``B = softplus(-2 lam)``, then ``t = B^-1`` (quadratic, or the DDPM table)."""
        big_b = torch.nn.functional.softplus(-2 * self._lam64(lam))
        return self._t_of_integral_beta(big_b).to(lam.dtype)

    def to_dict(self) -> dict[str, Any]:
        if self._log_alphas_cumprod is not None:
            n, b0, b1 = self._ddpm_args
            return {"type": "VPSDE", "schedule": "ddpm", "num_steps": n,
                    "beta_start": b0, "beta_end": b1}
        return {"type": "VPSDE", "beta_min": self.beta_min, "beta_max": self.beta_max}


class SubVPSDE(VPSDE):
    """Sub-VP SDE (Song et al. 2021, eq. 11): ``alpha`` as VP, ``sigma = 1 - alpha^2``.

    ``dx = -beta/2 x dt + sqrt(beta (1 - exp(-2 B(t)))) dw``. Note that ``sigma`` is the
    *standard deviation* ``1 - exp(-B)`` — it looks like a variance but is not squared.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        super().__init__(beta_min, beta_max)

    @classmethod
    def ddpm(cls, *args: Any, **kwargs: Any) -> VPSDE:
        raise NotImplementedError("SubVPSDE has no DDPM discrete form; use VPSDE.ddpm")

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        big_b, _ = self._integral_beta(t)
        return (-0.5 * big_b).exp(), -torch.expm1(-big_b)

    def _f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        big_b, beta = self._integral_beta(t)
        return -0.5 * beta, beta * -torch.expm1(-2 * big_b)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """Exact inverse: with ``a = alpha = e^(-B/2)``, ``a / (1 - a^2) = e^lam`` gives
        ``log a = -asinh(e^(-lam) / 2)``, i.e. ``B = 2 asinh(e^(-lam) / 2)`` (stable at
        both ends), then ``t = B^-1``."""
        big_b = 2 * torch.asinh(0.5 * torch.exp(-self._lam64(lam)))
        return self._t_of_integral_beta(big_b).to(lam.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "SubVPSDE", "beta_min": self.beta_min, "beta_max": self.beta_max}


class VESDE(SDE):
    """Variance-exploding SDE (NCSN; Song et al. 2021, eq. 9): ``dx = g(t) dw``.

    ``g(t) = s_min r^t sqrt(2 log r)`` with ``r = s_max / s_min`` — the diffusion of
    score_sde's VESDE. Started from clean data at t = 0, its exact marginal std is
    ``sigma(t) = s_min sqrt(r^(2t) - 1)`` (so ``sigma(0) = 0`` and ``sigma(1) ~ s_max``);
    score_sde reports ``s_min r^t``, which differs by ``s_min^2`` in variance. The prior is
    ``N(0, s_max^2 I)``.
    """

    t_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        _check_positive(sigma_min=sigma_min, sigma_max=sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.prior_std = float(sigma_max)
        self._log_r = math.log(sigma_max / sigma_min)

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma_min * torch.expm1(2 * self._log_r * t).sqrt()
        return torch.ones_like(t), sigma

    def _f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        g2 = self.sigma_min**2 * (2 * self._log_r * t).exp() * 2 * self._log_r
        return torch.zeros_like(t), g2

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """Exact inverse: ``sigma = e^(-lam)`` and ``r^(2t) = 1 + sigma^2 / s_min^2`` give
        ``2 t log r = logaddexp(0, -2 (lam + log s_min))``."""
        u = -2 * (self._lam64(lam) + math.log(self.sigma_min))
        t = torch.logaddexp(torch.zeros_like(u), u) / (2 * self._log_r)
        return t.clamp(0.0, self.T).to(lam.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "VESDE", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
