"""Closed-form scores: Gaussian-mixture data under any SDE of this toolkit.

If ``x_0 ~ sum_k w_k N(mu_k, diag(s_k^2))`` then ``x_t = alpha x_0 + sigma eps`` is again
a mixture, ``sum_k w_k N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))``, so

    grad log p_t(x) = sum_k r_k(x) (alpha mu_k - x) / (alpha^2 s_k^2 + sigma^2),
    r_k(x) = softmax_k [log w_k + log N(x; alpha mu_k, alpha^2 s_k^2 + sigma^2)],

exactly, at every t. :meth:`GaussianMixture.model` wraps this as a network, so every
sampler, the likelihood and the loss can be checked — and benchmarked — with no
training. Data of any shape ``(B, *D)`` is flattened to ``(B, prod D)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from scoregen.broadcast import append_dims
from scoregen.model import Prediction, ScoreModel, velocity
from scoregen.sde import SDE

__all__ = ["GaussianMixture", "ring_mixture"]


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances in ``R^D``.

    Args:
        means: (K, D) component means.
        stds: (K, D), (K,) or a float: per-component standard deviations.
        weights: (K,) mixture weights (normalised here); uniform by default.
    All parameters are stored in float64.
    """

    def __init__(
        self,
        means: Tensor | Sequence[Sequence[float]],
        stds: Tensor | float | Sequence[float] = 1.0,
        weights: Tensor | Sequence[float] | None = None,
    ) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 0:
            stds = stds.expand(k, d)
        elif stds.shape == (k,):
            stds = stds[:, None].expand(k, d)
        if stds.shape != (k, d) or not bool((stds > 0).all()):
            raise ValueError(f"stds must be positive of shape (K, D)=({k}, {d}), (K,) or scalar")
        weights = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64)
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise ValueError(
                f"weights must be positive of shape ({k},), got {tuple(weights.shape)}"
            )
        self.means = means
        self.stds = stds.contiguous()
        self.weights = weights / weights.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    # ------------------------------------------------------------------ moments
    def mean(self) -> Tensor:
        """E[x_0], (D,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x_0], (D, D)."""
        mu = self.mean()
        second = torch.einsum("k,kd,ke->de", self.weights, self.means, self.means)
        second = second + torch.diag(self.weights @ self.stds**2)
        return second - torch.outer(mu, mu)

    # ------------------------------------------------------------------ sampling
    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """``n`` exact samples of x_0, (n, D)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.stds[comp] * z).to(dtype)

    def component_of(self, x: Tensor) -> Tensor:
        """Most likely component of each point x_0 (B, D) → (B,) long."""
        return self._responsibilities(x.flatten(1).to(torch.float64), 1.0, 0.0)[0].argmax(1)

    # ------------------------------------------------------------------ densities
    def _responsibilities(
        self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(r_k (B, K), var (B, K, D), mean (B|1, K, D), logits (B, K)) at (alpha, sigma)."""
        alpha = torch.as_tensor(alpha, dtype=x.dtype).reshape(-1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1)
        mean = alpha * self.means.to(x)  # (B|1, K, D)
        var = alpha**2 * self.stds.to(x) ** 2 + sigma**2
        diff = x[:, None, :] - mean
        logn = -0.5 * ((diff**2 / var) + var.log() + math.log(2 * math.pi)).sum(-1)
        logits = self.weights.to(x).log() + logn
        return logits.softmax(-1), var, mean, logits

    def log_prob(self, x: Tensor, sde: SDE | None = None, t: Tensor | float = 0.0) -> Tensor:
        """``log p_t(x)`` in nats, (B,) for x (B, *D); t = 0 (or no SDE) is the data density."""
        x64 = x.flatten(1).to(torch.float64)
        alpha, sigma = self._coeffs(sde, t, x64)
        *_, logits = self._responsibilities(x64, alpha, sigma)
        return torch.logsumexp(logits, -1).to(x.dtype)

    def score(self, x: Tensor, sde: SDE, t: Tensor | float) -> Tensor:
        """``grad_x log p_t(x)`` for x (B, *D), t (B,) or scalar."""
        x64 = x.flatten(1).to(torch.float64)
        alpha, sigma = self._coeffs(sde, t, x64)
        r, var, mean, _ = self._responsibilities(x64, alpha, sigma)
        s = (r[..., None] * (mean - x64[:, None, :]) / var).sum(1)
        return s.reshape(x.shape).to(x.dtype)

    def _coeffs(self, sde: SDE | None, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        if sde is None:
            return torch.ones(1, dtype=x.dtype), torch.zeros(1, dtype=x.dtype)
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        alpha, sigma = sde.alpha_sigma(t, check=False)
        return alpha.to(x), sigma.to(x)

    # ------------------------------------------------------------------ as a model
    def net(self, sde: SDE, prediction: Prediction = "eps"):  # noqa: ANN201 - a closure
        """A closed-form network ``(x, t, cond) -> output`` in the given parametrisation."""

        def closed_form(x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
            s = self.score(x, sde, t.to(torch.float64))
            alpha, sigma = sde.alpha_sigma(t.to(torch.float64).reshape(-1), check=False)
            alpha = append_dims(alpha.to(x.dtype), x.ndim)
            sigma = append_dims(sigma.to(x.dtype), x.ndim)
            eps = -sigma * s
            if prediction == "score":
                return s
            if prediction == "eps":
                return eps
            x0 = (x + sigma**2 * s) / alpha  # Tweedie
            if prediction == "x0":
                return x0
            return velocity(eps, x0, alpha, sigma)

        return closed_form

    def model(self, sde: SDE, prediction: Prediction = "eps") -> ScoreModel:
        """A :class:`ScoreModel` whose net is the exact score of this mixture under ``sde``."""
        return ScoreModel(self.net(sde, prediction), sde, prediction=prediction)


def ring_mixture(
    num_modes: int = 8, radius: float = 1.0, std: float = 0.05, dim: int = 2
) -> GaussianMixture:
    """``num_modes`` equal-weight modes on a circle in the first two coordinates of R^dim."""
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    means = torch.zeros(num_modes, dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
    return GaussianMixture(means, std)
