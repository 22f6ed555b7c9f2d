"""The DDPM U-Net: ``UNetConfig``, ``UNET_PRESETS`` and ``UNet(x, t, cond) -> (B, C_out, H, W)``.

The architecture of Ho et al. 2020 (DDPM, arXiv:2006.11239, App. B), itself a
PixelCNN++-style U-Net (Ronneberger et al. 2015, arXiv:1505.04597), as the talk
("The U-Net" slides) describes it:

- ``len(channel_mults)`` levels, ``num_res_blocks`` residual blocks per level on the way
  down (``num_res_blocks + 1`` on the way up, one per skip connection, as in DDPM);
- down- and up-sampling by residual blocks (BigGAN-style, Dhariwal & Nichol 2021); a
  down-sampling block keeps its level's width, an up-sampling block already maps to the
  finer level's width (its convs run at the finer resolution, where width is costly;
  lucidrains' Upsample conv does the same), which cuts the FLOPs of a training step
  of the ``small`` and ``seed`` presets by about a fifth;
- the time embedding is supplied to every residual block (FiLM);
- linear attention after the residual blocks of the levels listed in
  ``attention_resolutions``, full attention in the middle (lowest resolution);
- the condition image enters at the input, by concatenation, by SegDiff's addition or
  by both (see ``scoregen.nn.conditioning``);
- ``patch_size = p > 1`` folds ``p x p`` pixels into channels before the first level
  (space-to-depth) and unfolds the output (depth-to-space, ``F.pixel_shuffle``), as in
  simple diffusion (Hoogeboom et al. 2023, arXiv:2301.11093): the network's finest level
  runs at ``H / p``. At 64x64 most of a step's cost sits in the full-resolution level;
  ``p = 2`` removes it without dropping a pixel (MONAI's segmentation U-Net gets the same
  saving from its stride-2 first conv).

``attention_resolutions`` are **down-sampling factors** relative to the input (1 = full
resolution, 2 = half, ...), as improved-diffusion's ``attention_resolutions``; so a config
works at every input size. At 64x64 with ``channel_mults=(1, 2, 4, 8)`` the levels have
factors 1, 2, 4, 8, i.e. 64, 32, 16 and 8 pixels, and ``(4, 8)`` puts attention at 16x16
and 8x8. With ``patch_size=2`` the same mults give factors 2, 4, 8, 16.

Initialisation: PyTorch's default everywhere, no zero-initialised output layers, so at
initialisation the gradient reaches every parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from .attention import Attention, LinearAttention
from .blocks import ResBlock
from .conditioning import ENCODER_MODES, ConditionalStem, EncodedCondition, check_cond_mode
from .embedding import TimestepEmbedding

__all__ = ["UNET_PRESETS", "UNet", "UNetConfig"]


#: Named sizes: name -> UNetConfig fields. Input/output/condition channels default to a
#: single-channel, unconditional net; override them in ``UNetConfig.from_preset``.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # For tests: ~0.12 M parameters, milliseconds per step at 16x16.
    "tiny": {
        "base_channels": 8,
        "channel_mults": (1, 2, 2),
        "num_res_blocks": 2,
        "attention_resolutions": (2,),
        "mid_attention": True,
        "attention_heads": 2,
        "attention_head_dim": 8,
        "dropout": 0.0,
        "norm_groups": 4,
        "time_embed_dim": 32,
        "cond_encoder_depth": 1,
    },
    # For CPU experiments at 64x64: 64 -> 32 -> 16 -> 8, attention at 16 and 8. One res
    # block per level (not the talk's two) and a narrow 64x64 level keep a training step
    # at batch 32 near 0.3 s on 2 CPU cores; the full-resolution level dominates the cost.
    "small": {
        "base_channels": 16,
        "channel_mults": (1, 2, 2, 4),
        "num_res_blocks": 1,
        "attention_resolutions": (4, 8),
        "mid_attention": True,
        "attention_heads": 4,
        "attention_head_dim": 16,
        "dropout": 0.0,
        "norm_groups": 8,
        "time_embed_dim": 64,
        "cond_encoder_depth": 1,
    },
    # "small" without its 64x64 level: 2x2 patches (32x32 with 4 channels), then
    # 32 -> 16 -> 8 -> 4, widths 16..128 as MONAI's segmentation UNet(16..256) has at those
    # sizes, attention at 8 and 4. A training step at batch 32 and 1 CPU thread measured
    # 0.86 s against 2.06 s for "small" (MONAI's: 0.38 s), so an hour buys 2.4x the epochs.
    "fast": {
        "base_channels": 16,
        "channel_mults": (1, 2, 4, 8),
        "num_res_blocks": 1,
        "attention_resolutions": (8, 16),
        "mid_attention": True,
        "attention_heads": 4,
        "attention_head_dim": 16,
        "dropout": 0.0,
        "norm_groups": 8,
        "time_embed_dim": 64,
        "cond_encoder_depth": 1,
        "patch_size": 2,
    },
    # The talk's model at 64x64: base 64, 64 -> 32 -> 16 -> 8, attention at 16 and 8.
    "seed": {
        "base_channels": 64,
        "channel_mults": (1, 2, 4, 8),
        "num_res_blocks": 2,
        "attention_resolutions": (4, 8),
        "mid_attention": True,
        "attention_heads": 4,
        "attention_head_dim": 32,
        "dropout": 0.1,
        "norm_groups": 32,
        "time_embed_dim": 256,
        "cond_encoder_depth": 2,
    },
}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"UNetConfig.{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"UNetConfig.{name} must be >= {minimum}; got {value}")


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"UNetConfig.{name} must be a tuple of ints; got {type(value).__name__}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"UNetConfig.{name} must contain ints; got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of ``UNet``; JSON-serialisable through ``to_dict``/``from_dict``.

    Fields:
        in_channels, out_channels: channels of ``x_t`` and of the prediction.
        cond_channels, cond_mode: condition image channels and fusion
            (``None``, ``"concat"``, ``"add"``, ``"both"``); ``cond_channels == 0`` iff
            ``cond_mode`` is None.
        base_channels, channel_mults: level ``l`` has ``base_channels * channel_mults[l]``
            channels and resolution ``H / 2**l``.
        num_res_blocks: residual blocks per level (down path; one more on the up path).
        attention_resolutions: down-sampling factors (``patch_size * 2**l``) of the levels
            that get linear attention.
        mid_attention: full self-attention between the two middle residual blocks.
        attention_heads, attention_head_dim: heads and features per head of both attentions.
        dropout: dropout inside every residual block.
        norm_groups: GroupNorm groups; must divide every channel count.
        time_embed_dim: width of the time embedding (``None``: ``4 * base_channels``).
        time_scale: the net embeds ``t * time_scale``.
        cond_encoder_depth: residual blocks of SegDiff's condition encoder (``"add"`` and
            ``"both"``).
        patch_size: ``p``; the finest level runs at ``H / p`` (space-to-depth stem,
            depth-to-space head). ``from_dict`` reads a config saved without it as 1.
        self_condition: the net also reads the previous ``x0_hat`` (``forward``'s
            ``x_self``; Chen et al. 2022, self-conditioning). ``to_dict`` writes it only
            when True, so configs and checkpoints of other nets stay as they were.
    """

    in_channels: int = 1
    out_channels: int = 1
    cond_channels: int = 0
    cond_mode: str | None = None
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 8)
    mid_attention: bool = True
    attention_heads: int = 4
    attention_head_dim: int = 32
    dropout: float = 0.0
    norm_groups: int = 32
    time_embed_dim: int | None = None
    time_scale: float = 1000.0
    cond_encoder_depth: int = 2
    patch_size: int = 1
    self_condition: bool = False

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples (keeps the frozen config hashable).
        object.__setattr__(self, "channel_mults", _int_tuple("channel_mults", self.channel_mults))
        object.__setattr__(
            self,
            "attention_resolutions",
            _int_tuple("attention_resolutions", self.attention_resolutions),
        )
        _check_int("in_channels", self.in_channels, 1)
        _check_int("out_channels", self.out_channels, 1)
        _check_int("cond_channels", self.cond_channels, 0)
        check_cond_mode(self.cond_mode, self.cond_channels)
        _check_int("base_channels", self.base_channels, 1)
        _check_int("num_res_blocks", self.num_res_blocks, 1)
        _check_int("attention_heads", self.attention_heads, 1)
        _check_int("attention_head_dim", self.attention_head_dim, 1)
        _check_int("norm_groups", self.norm_groups, 1)
        _check_int("cond_encoder_depth", self.cond_encoder_depth, 0)
        _check_int("patch_size", self.patch_size, 1)
        if self.time_embed_dim is not None:
            _check_int("time_embed_dim", self.time_embed_dim, 1)
        if not isinstance(self.self_condition, bool):
            raise TypeError(f"UNetConfig.self_condition must be a bool; got "
                            f"{type(self.self_condition).__name__}")
        if not isinstance(self.mid_attention, bool):
            raise TypeError(
                f"UNetConfig.mid_attention must be a bool; got {type(self.mid_attention).__name__}"
            )
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(
                f"UNetConfig.channel_mults must be a non-empty tuple of positive ints; "
                f"got {self.channel_mults}"
            )
        if self.base_channels % 2:
            raise ValueError(
                f"UNetConfig.base_channels must be even (it is the sinusoidal time-feature "
                f"width); got {self.base_channels}"
            )
        bad = [c for c in self.level_channels if c % self.norm_groups]
        if bad:
            raise ValueError(
                f"UNetConfig.norm_groups={self.norm_groups} must divide every level's channels "
                f"{self.level_channels}; it does not divide {bad}"
            )
        factors = self.level_factors
        unknown = [f for f in self.attention_resolutions if f not in factors]
        if unknown:
            raise ValueError(
                f"UNetConfig.attention_resolutions are down-sampling factors of the levels, "
                f"one of {factors} for channel_mults={self.channel_mults}; got {unknown}"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1); got {self.dropout!r}")
        if not isinstance(self.time_scale, (int, float)) or not self.time_scale > 0:
            raise ValueError(f"UNetConfig.time_scale must be > 0; got {self.time_scale!r}")

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each level, ``base_channels * channel_mults[l]``."""
        return tuple(self.base_channels * m for m in self.channel_mults)

    @property
    def level_factors(self) -> tuple[int, ...]:
        """Down-sampling factor of each level, ``patch_size * 2**l``."""
        return tuple(self.patch_size * 2**level for level in range(len(self.channel_mults)))

    @property
    def downsample_factor(self) -> int:
        """Total down-sampling; the input's H and W must be multiples of it."""
        return self.level_factors[-1]

    @property
    def embed_dim(self) -> int:
        """Width of the time embedding (``time_embed_dim`` or ``4 * base_channels``)."""
        return self.time_embed_dim if self.time_embed_dim is not None else 4 * self.base_channels

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples as lists); the fields of ``_WRITTEN_IF_SET`` only
        when they differ from their default (a run saved before them still resumes)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
            if not (f.name in _WRITTEN_IF_SET
                    and getattr(self, f.name) == _WRITTEN_IF_SET[f.name])
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Inverse of ``to_dict``; every field must be present, unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise TypeError(f"UNetConfig.from_dict expects a mapping; got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown UNetConfig keys {unknown}; valid keys: {names}")
        # Fields added after the first release read as their old behaviour when absent.
        data = {**_ADDED_FIELDS, **data}
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(
                f"missing UNetConfig keys {missing}: a saved config lists every field "
                f"(use UNetConfig.from_preset(name, **overrides) for partial ones)"
            )
        _check_saved_sizes(data)
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> UNetConfig:
        """The preset ``UNET_PRESETS[name]`` with some fields replaced."""
        if name not in UNET_PRESETS:
            raise ValueError(f"unknown U-Net preset {name!r}; valid presets: {list(UNET_PRESETS)}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown UNetConfig fields {unknown}; valid fields: {names}")
        return cls(**{**UNET_PRESETS[name], **overrides})


#: Fields added after the first saved checkpoints, with the value that reproduces them.
_ADDED_FIELDS: dict[str, Any] = {"patch_size": 1, "self_condition": False}
#: Added fields left out of ``to_dict`` at these values: resuming compares the saved
#: model_config key by key, so a new key would refuse every older run.
_WRITTEN_IF_SET: dict[str, Any] = {"self_condition": False}

# Upper bounds on the sizes a saved config may ask for, checked before anything is
# allocated: a crafted file with base_channels 65536 would otherwise build ~150 GB of
# weights. The largest published diffusion U-Nets stay far below them.
MAX_LEVEL_CHANNELS = 8192
MAX_LEVELS = 12
MAX_RES_BLOCKS = 64
MAX_EMBED_DIM = 32768
MAX_PATCH_SIZE = 64


def _check_saved_sizes(data: Mapping[str, Any]) -> None:
    """ValueError naming the field when a saved config is larger than any real U-Net."""
    def ints(v: Any) -> list[int]:
        vs = v if isinstance(v, (list, tuple)) else [v]
        return [x for x in vs if isinstance(x, int) and not isinstance(x, bool)]

    base, mults = ints(data.get("base_channels")), ints(data.get("channel_mults"))
    widest = max(base or [1]) * max(mults or [1])
    checks = [
        ("base_channels * max(channel_mults)", widest, MAX_LEVEL_CHANNELS),
        ("len(channel_mults)", len(data.get("channel_mults") or ()), MAX_LEVELS),
        ("num_res_blocks", max(ints(data.get("num_res_blocks")) or [0]), MAX_RES_BLOCKS),
        ("time_embed_dim", max(ints(data.get("time_embed_dim")) or [0]), MAX_EMBED_DIM),
        ("patch_size", max(ints(data.get("patch_size")) or [1]), MAX_PATCH_SIZE),
        ("attention_heads * attention_head_dim",
         max(ints(data.get("attention_heads")) or [1])
         * max(ints(data.get("attention_head_dim")) or [1]), MAX_LEVEL_CHANNELS),
        ("in/out/cond_channels", max(ints([data.get(k) for k in (
            "in_channels", "out_channels", "cond_channels")]) or [0]), MAX_LEVEL_CHANNELS),
    ]
    for name, value, limit in checks:
        if value > limit:
            raise ValueError(
                f"saved UNetConfig has {name} = {value}, above the bound {limit}: refused "
                "before allocating (a corrupt or crafted config?)"
            )


class _Stage(nn.Module):
    """One step of the U-Net path: residual block, optional attention, optional resampling."""

    def __init__(
        self, block: ResBlock, attn: nn.Module | None = None, resample: ResBlock | None = None
    ) -> None:
        super().__init__()
        self.block = block
        self.attn = attn if attn is not None else nn.Identity()
        self.resample = resample

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        h = self.attn(self.block(h, emb))  # (B, C, H, W)
        if self.resample is not None:
            h = self.resample(h, emb)  # (B, C, H/2 or 2H, W/2 or 2W)
        return h


class UNet(nn.Module):
    """DDPM U-Net with time embedding and optional condition image (module docstring).

    ``forward(x, t, cond=None, x_self=None)``: ``x: (B, in_channels, H, W)`` with H, W
    multiples of ``config.downsample_factor``; ``t``: continuous times ``(B,)`` (or a
    float / 0-d tensor, broadcast); ``cond: (B, cond_channels, H, W)`` or ``None`` (=
    zeros); ``x_self``: the previous ``x0_hat`` of ``x``'s shape for a self-conditioned
    net (None = zeros) -> ``(B, out_channels, H, W)`` in ``x``'s dtype.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(
                f"UNet expects a UNetConfig (see UNetConfig.from_preset / from_dict); "
                f"got {type(config).__name__}"
            )
        self.config = c = config
        groups, emb_dim = c.norm_groups, c.embed_dim

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout=c.dropout, groups=groups, **kw)

        def linear_attn(ch: int, level: int) -> LinearAttention | None:
            if c.level_factors[level] not in c.attention_resolutions:
                return None
            return LinearAttention(ch, c.attention_heads, c.attention_head_dim, groups)

        self.time_embed = TimestepEmbedding(c.base_channels, emb_dim, time_scale=c.time_scale)
        ch = c.level_channels[0]
        self.stem = ConditionalStem(
            c.in_channels,
            ch,
            c.cond_channels,
            c.cond_mode,
            encoder_depth=c.cond_encoder_depth,
            groups=groups,
            patch_size=c.patch_size,
            self_condition=c.self_condition,
        )

        skips = [ch]
        last = len(c.channel_mults) - 1
        self.down = nn.ModuleList()
        for level, level_ch in enumerate(c.level_channels):
            for _ in range(c.num_res_blocks):
                self.down.append(_Stage(res(ch, level_ch), linear_attn(level_ch, level)))
                ch = level_ch
                skips.append(ch)
            if level < last:
                self.down.append(_Stage(res(ch, ch, down=True)))
                skips.append(ch)

        self.mid_block1 = res(ch, ch)
        self.mid_attn = (
            Attention(ch, c.attention_heads, c.attention_head_dim, groups)
            if c.mid_attention
            else nn.Identity()
        )
        self.mid_block2 = res(ch, ch)

        self.up = nn.ModuleList()
        for level, level_ch in reversed(list(enumerate(c.level_channels))):
            for i in range(c.num_res_blocks + 1):
                block = res(ch + skips.pop(), level_ch)
                ch = level_ch
                upsample = None
                if level > 0 and i == c.num_res_blocks:
                    # Runs at the finer level's resolution, so it takes that level's width.
                    upsample = res(ch, c.level_channels[level - 1], up=True)
                    ch = c.level_channels[level - 1]
                self.up.append(_Stage(block, linear_attn(level_ch, level), upsample))

        self.out_norm = nn.GroupNorm(groups, ch)
        p2 = c.patch_size**2
        self.out_conv = nn.Conv2d(ch, c.out_channels * p2, kernel_size=3, padding=1)

    def _check_inputs(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Validate ``x`` and return ``t`` as a floating tensor of shape ``(B,)``."""
        c = self.config
        expected = f"(B, in_channels={c.in_channels}, H, W)"
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {expected}; got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
        if x.ndim != 4:
            raise ValueError(f"x must have shape {expected}; got {tuple(x.shape)}")
        if x.shape[1] != c.in_channels:
            raise ValueError(
                f"x has {x.shape[1]} channels but this UNet has in_channels={c.in_channels}; "
                f"x must have shape {expected}, got {tuple(x.shape)}"
            )
        f = c.downsample_factor
        height, width = x.shape[-2:]
        if height % f or width % f:
            raise ValueError(
                f"x's height and width must be divisible by {f} (patch_size "
                f"{c.patch_size}, then the U-Net halves the resolution "
                f"{len(c.channel_mults) - 1} times); got {height}x{width}. "
                f"Nearest valid sizes: height {_nearest_multiples(height, f)}, "
                f"width {_nearest_multiples(width, f)}"
            )

        batch = x.shape[0]
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return torch.full((batch,), float(t), device=x.device)
        if not isinstance(t, Tensor):
            raise TypeError(
                f"t must be a float tensor of shape (B,) = ({batch},), a 0-d tensor or a "
                f"python float; got {type(t).__name__}"
            )
        if not t.is_floating_point():
            raise TypeError(
                f"t must hold continuous times in [0, T] (a floating-point tensor); got dtype "
                f"{t.dtype}. For discrete step i of N pass t = i / N"
            )
        if t.ndim == 0:
            t = repeat(t, " -> b", b=batch)
        elif tuple(t.shape) != (batch,):
            raise ValueError(
                f"t must have shape (B,) = ({batch},) (or be 0-d / a float); got {tuple(t.shape)}"
            )
        return t.to(x.device)

    @property
    def self_condition(self) -> bool:
        """True when the net reads the previous ``x0_hat`` (``config.self_condition``)."""
        return self.config.self_condition

    def check_cond(self, x: Tensor, cond: Tensor | None) -> None:
        """Validate ``x`` and ``cond`` shapes without running the net (``x`` may be on the
        ``meta`` device). Samplers call it through ``ScoreModel.check_cond`` before they
        draw any noise, so a wrong condition fails before the first step."""
        self._check_inputs(x, 0.0)
        self.stem.prepare(x, cond)

    def encode_condition(self, cond: Tensor | None) -> Tensor | EncodedCondition | None:
        """The condition as the stem will use it at every step, computed once.

        ``cond: (B, cond_channels, H, W)``. ``cond_mode="add"``: SegDiff's ``G(cond)`` as an
        :class:`~scoregen.nn.conditioning.EncodedCondition` of features ``(B, C_0, H, W)``
        (``"both"``: carrying ``cond`` too);
        ``net(x, t, encoded)`` equals ``net(x, t, cond)`` without running G. ``"concat"``
        (nothing to encode) and ``None`` (unconditional; ``cond`` must be None): ``cond``
        is returned unchanged. ``cond`` is validated as :meth:`check_cond` would.
        """
        c = self.config
        if isinstance(cond, EncodedCondition):
            raise TypeError("cond is already an EncodedCondition; pass the condition image")
        if c.cond_mode not in ENCODER_MODES or cond is None:
            # concat / unconditional: nothing to precompute; None stays the zeros image
            if c.cond_mode is None and cond is not None:
                self.stem.prepare(torch.empty(1, c.in_channels, 1, 1, device="meta"), cond)
            return cond
        if not isinstance(cond, Tensor) or cond.ndim != 4:
            got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(
                f"encode_condition: cond must be a (B, cond_channels={c.cond_channels}, H, W) "
                f"tensor; got {got}"
            )
        probe = torch.empty(cond.shape[0], c.in_channels, *cond.shape[-2:], device="meta")
        self.check_cond(probe, cond)  # channels, size (multiple of the downsampling), dtype
        weight = self.out_conv.weight
        return self.stem.encode(cond.to(device=weight.device, dtype=weight.dtype))

    def forward(
        self, x: Tensor, t: Tensor | float, cond: Tensor | EncodedCondition | None = None,
        x_self: Tensor | None = None,
    ) -> Tensor:
        """``x: (B, C_in, H, W), t: (B,), cond: (B, C_cond, H, W) | None`` -> (B, C_out, H, W).

        ``cond`` may also be :meth:`encode_condition`'s output (then G does not run).
        ``x_self``: (B, C_in, H, W), the previous ``x0_hat`` (self-conditioned nets only)."""
        t = self._check_inputs(x, t)  # (B,)
        emb = self.time_embed(t)  # (B, E)
        h = x.to(self.out_conv.weight.dtype)  # (B, C_in, H, W)
        h = self.stem(h, cond, x_self)  # (B, C_0, H / p, W / p)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)  # (B, C_l, H / (p 2**l), W / (p 2**l))
            skips.append(h)
        h = self.mid_block1(h, emb)  # (B, C_L, H / f, W / f)
        h = self.mid_attn(h)  # (B, C_L, H / f, W / f)
        h = self.mid_block2(h, emb)  # (B, C_L, H / f, W / f)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)  # (B, C_l, H/(p 2**l), ...)
        out = self.out_conv(F.silu(self.out_norm(h)))  # (B, C_out * p * p, H / p, W / p)
        if self.config.patch_size > 1:
            out = F.pixel_shuffle(out, self.config.patch_size)  # (B, C_out, H, W)
        return out.to(x.dtype)


def _nearest_multiples(n: int, f: int) -> str:
    """``'24 or 32'``: the multiples of ``f`` around ``n``."""
    lower = n // f * f
    return f"{lower} or {lower + f}" if lower > 0 else str(f)
