"""Residual block with time-embedding FiLM, optionally down- or up-sampling.

The DDPM residual block (Ho et al. 2020, arXiv:2006.11239, App. B, after the wide
ResNet of Zagoruyko & Komodakis 2016) with two changes from Dhariwal & Nichol 2021
("Diffusion models beat GANs", arXiv:2105.05233, Sec. 3):

- the time embedding enters as a scale and a shift of the normalised features
  ("AdaGN": ``GroupNorm(h) * (1 + scale) + shift``, a FiLM layer of Perez et al. 2018).
  It is applied *after* the second GroupNorm: a GroupNorm placed after the FiLM would
  subtract most of the shift and divide away most of the scale;
- resampling is done inside the residual block (BigGAN, Brock et al. 2019,
  arXiv:1809.11096): with ``down=True`` both the main path (after the first
  norm/activation) and the skip are average-pooled by 2; with ``up=True`` both are
  upsampled by 2 (nearest neighbour).

    x -> GroupNorm -> SiLU -> [resample] -> conv3x3 -> GroupNorm -> FiLM(emb) -> SiLU
      -> dropout -> conv3x3 -> (+) <- [resample] -> 1x1 conv (only if channels change) <- x
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["ResBlock"]


class ResBlock(nn.Module):
    """Residual block with FiLM time conditioning; ``down``/``up`` resample by 2.

    ``x: (B, in_channels, H, W), emb: (B, embed_dim)`` ->
    ``(B, out_channels, H', W')`` with ``H' = H / 2`` (down), ``2 H`` (up) or ``H``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        *,
        dropout: float = 0.0,
        groups: int = 32,
        down: bool = False,
        up: bool = False,
    ) -> None:
        super().__init__()
        if down and up:
            raise ValueError("ResBlock: down=True and up=True are exclusive; pick one")
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels < 1 or channels % groups:
                raise ValueError(
                    f"ResBlock: {name}={channels} must be a positive multiple of "
                    f"groups={groups} (GroupNorm)"
                )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResBlock: dropout must be in [0, 1); got {dropout}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.embed_dim = embed_dim
        self.down = down
        self.up = up

        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.emb_proj = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )
        self.resample: nn.Module
        if down:
            self.resample = nn.AvgPool2d(kernel_size=2)
        elif up:
            self.resample = nn.Upsample(scale_factor=2.0, mode="nearest")
        else:
            self.resample = nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResBlock expects x of shape (B, {self.in_channels}, H, W); got {tuple(x.shape)}"
            )
        if emb.ndim != 2 or emb.shape != (x.shape[0], self.embed_dim):
            raise ValueError(
                f"ResBlock expects emb of shape (B, embed_dim) = ({x.shape[0]}, "
                f"{self.embed_dim}); got {tuple(emb.shape)}"
            )
        h = F.silu(self.norm1(x))  # (B, C_in, H, W)
        h = self.resample(h)  # (B, C_in, H', W')
        h = self.conv1(h)  # (B, C_out, H', W')
        film = rearrange(self.emb_proj(F.silu(emb)), "b (two c) -> two b c 1 1", two=2)
        scale, shift = film.unbind(0)  # each (B, C_out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift  # (B, C_out, H', W')
        h = self.conv2(self.dropout(F.silu(h)))  # (B, C_out, H', W')
        skip = self.skip(self.resample(x))  # (B, C_out, H', W')
        return skip + h  # (B, C_out, H', W')
