"""Self-attention over the pixels of a feature map: linear (cheap) and full (exact).

Both are pre-norm residual layers, ``x + W_out(attn(GroupNorm(x)))``, with ``heads``
heads of ``head_dim`` features each (inner width ``heads * head_dim``, independent of the
channel count), and act on feature maps ``(B, C, H, W)``.

- ``LinearAttention``: "efficient attention" of Shen et al. 2021 (arXiv:1812.01243),
  the softmax form of the linear attention of Katharopoulos et al. 2020
  (arXiv:2006.16236): ``rho_q(Q) (rho_k(K)^T V)`` with ``rho_q`` a softmax of each query
  over its features and ``rho_k`` a softmax of each key feature over the positions.
  Cost O(N d^2) in the number of pixels N, so it can sit at high resolutions (the
  talk's U-Net; also lucidrains' denoising-diffusion-pytorch).
- ``Attention``: softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017) through
  ``torch.nn.functional.scaled_dot_product_attention``; O(N^2), used at the lowest
  resolution, as in DDPM (Ho et al. 2020).
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

__all__ = ["Attention", "LinearAttention"]


def _check_feature_map(x: Tensor, channels: int, layer: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{layer} expects a feature map of shape (B, {channels}, H, W); got {tuple(x.shape)}"
        )


class _PixelAttention(nn.Module):
    """Shared parts: GroupNorm pre-norm, 1x1 conv to q, k, v and 1x1 conv out."""

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("heads", heads), ("head_dim", head_dim)):
            if value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be >= 1; got {value}")
        if channels % groups:
            raise ValueError(
                f"{type(self).__name__}: channels={channels} must be divisible by "
                f"groups={groups} (GroupNorm)"
            )
        self.channels = channels
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.to_qkv = nn.Conv2d(channels, 3 * inner, kernel_size=1, bias=False)
        self.to_out = nn.Conv2d(inner, channels, kernel_size=1)


class LinearAttention(_PixelAttention):
    """Efficient (linear) attention, Shen et al. 2021; residual, GroupNorm pre-norm.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32, groups: int = 32) -> None:
        super().__init__(channels, heads, head_dim, groups)

    def forward(self, x: Tensor) -> Tensor:
        _check_feature_map(x, self.channels, "LinearAttention")
        height, width = x.shape[-2:]
        qkv = self.to_qkv(self.norm(x))  # (B, 3*h*d, H, W)
        q, k, v = rearrange(
            qkv, "b (three h d) x y -> three b h d (x y)", three=3, h=self.heads
        ).unbind(0)  # each (B, h, d, N)
        q = q.softmax(dim=-2)  # (B, h, d, N): each query normalised over its features
        k = k.softmax(dim=-1)  # (B, h, d, N): each key feature normalised over positions
        context = einsum(k, v, "b h d n, b h e n -> b h d e")  # (B, h, d, d)
        out = einsum(context, q, "b h d e, b h d n -> b h e n")  # (B, h, d, N)
        out = rearrange(out, "b h e (x y) -> b (h e) x y", x=height, y=width)  # (B, h*d, H, W)
        return x + self.to_out(out)  # (B, C, H, W)


class Attention(_PixelAttention):
    """Full multi-head self-attention over pixels (Vaswani et al. 2017); residual, pre-norm.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32, groups: int = 32) -> None:
        super().__init__(channels, heads, head_dim, groups)

    def forward(self, x: Tensor) -> Tensor:
        _check_feature_map(x, self.channels, "Attention")
        height, width = x.shape[-2:]
        qkv = self.to_qkv(self.norm(x))  # (B, 3*h*d, H, W)
        q, k, v = rearrange(
            qkv, "b (three h d) x y -> three b h (x y) d", three=3, h=self.heads
        ).unbind(0)  # each (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d), scale 1/sqrt(d)
        out = rearrange(out, "b h (x y) d -> b (h d) x y", x=height, y=width)  # (B, h*d, H, W)
        return x + self.to_out(out)  # (B, C, H, W)
