"""Continuous-time embedding: sinusoidal features of ``t * time_scale``, then an MLP.

The features are the sinusoidal position encoding of Vaswani et al. 2017 ("Attention is
all you need", arXiv:1706.03762, Sec. 3.5), used as the diffusion-time embedding by
Ho et al. 2020 (DDPM, arXiv:2006.11239, App. B): ``[cos(s * w_k), sin(s * w_k)]`` with
``w_k = max_period ** (-k / half)``. The network receives continuous time ``t`` in
``[0, T]``; it is multiplied by ``time_scale`` (1000 by default) first, so that DDPM's
grid ``t = i / 1000`` is embedded like the integer step ``i`` of the original model.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["TimestepEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(s: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of the scalars ``s: (B,)`` -> ``(B, dim)`` (Vaswani et al. 2017).

    The first half of the features are cosines, the second half sines, with frequencies
    ``max_period ** (-k / (dim // 2))`` for ``k = 0 .. dim // 2 - 1``. Computed in ``s``'s
    floating dtype with elementwise ops only, so autocast never rounds ``s`` to bf16.
    """
    if not isinstance(s, Tensor) or s.ndim != 1:
        shape = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(f"sinusoidal_embedding expects s of shape (B,); got {shape}")
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal_embedding needs an even dim >= 2; got dim={dim}")
    dtype = s.dtype if s.is_floating_point() else torch.float32
    half = dim // 2
    exponent = torch.arange(half, device=s.device, dtype=dtype) / half
    freqs = torch.exp(-math.log(max_period) * exponent)  # (half,)
    args = rearrange(s.to(dtype), "b -> b 1") * freqs  # (B, half)
    return torch.cat([args.cos(), args.sin()], dim=-1)  # (B, dim)


class TimestepEmbedding(nn.Module):
    """``t: (B,)`` -> ``(B, embed_dim)``: sinusoids of ``t * time_scale``, Linear, SiLU, Linear.

    As in DDPM (Ho et al. 2020, App. B); the output feeds every residual block's FiLM.
    """

    def __init__(
        self,
        dim: int,
        embed_dim: int,
        *,
        time_scale: float = 1000.0,
        max_period: float = 10_000.0,
    ) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"TimestepEmbedding needs an even sinusoid dim >= 2; got dim={dim}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0; got {time_scale}")
        self.dim = dim
        self.time_scale = float(time_scale)
        self.max_period = float(max_period)
        self.mlp = nn.Sequential(
            nn.Linear(dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, t: Tensor) -> Tensor:
        """``t: (B,)`` continuous times -> ``(B, embed_dim)``."""
        s = t * self.time_scale  # (B,)
        feats = sinusoidal_embedding(s, self.dim, self.max_period)  # (B, dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))  # (B, embed_dim)
