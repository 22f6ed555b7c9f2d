"""How a condition image (e.g. the X-ray being segmented) enters the U-Net.

``cond_mode`` picks one of three fusions at the network's input (its "stem"):

- ``"concat"``: the condition is concatenated to ``x_t`` along the channels and the
  input conv reads ``in_channels + cond_channels`` channels (e.g. Saharia et al. 2021,
  SR3, arXiv:2104.07636; Wolleb et al. 2021, arXiv:2112.03145).
- ``"add"``: SegDiff (Amit et al. 2021, arXiv:2112.00390, Sec. 3, Fig. 2): ``x_t`` is
  mapped by the input conv F and the condition by a small convolutional encoder G at
  full resolution to the same width, and the U-Net starts from ``F(x_t) + G(I)``.
- ``"both"``: the two together, ``F([x_t, I]) + G(I)``: the input conv reads the raw
  condition beside ``x_t`` and the encoder's features are added on top.
- ``None``: an unconditional network (``cond_channels`` must be 0).

Self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits", arXiv:2208.04202, Sec. 3):
with ``self_condition=True`` the input conv also reads the previous estimate
``x0_prev`` beside ``x_t``, ``F([x_t, x0_prev])``; ``x0_prev = 0`` is "no estimate yet".

A missing condition (``cond=None`` given to a conditional network) is the all-zeros
image, so ``net(x, t, None) == net(x, t, zeros)``: classifier-free guidance (Ho &
Salimans 2022, arXiv:2207.12598) trains the "unconditional" branch by zeroing the
condition, which the loss does, not this module.

Encoding once per sampling call: in ``"add"`` (and ``"both"``) mode G(I) does not
depend on ``x_t`` or ``t``, yet a sampler calls the net once per step, so G would run
``steps`` times on the same image. :meth:`scoregen.nn.UNet.encode_condition` computes
G(I) once and wraps it in an :class:`EncodedCondition`, which the stem takes in place
of ``cond`` and adds as is (in ``"both"`` mode it also carries the image, which the
input conv still reads).
An encoded condition is the conditional branch only: classifier-free guidance needs
G(0) for its unconditional branch and therefore the raw image (ScoreModel refuses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["COND_MODES", "CONCAT_MODES", "ENCODER_MODES", "ConditionEncoder",
           "ConditionalStem", "EncodedCondition", "prepare_condition"]

#: Valid values of ``cond_mode``.
COND_MODES: tuple[str | None, ...] = (None, "concat", "add", "both")
#: the modes whose stem has SegDiff's encoder G (and so an EncodedCondition)
ENCODER_MODES = ("add", "both")
#: the modes whose input conv reads the condition image beside x_t
CONCAT_MODES = ("concat", "both")


@dataclass(frozen=True)
class EncodedCondition:
    """A condition already mapped by SegDiff's encoder: ``features = G(I)``.

    ``features: (B, C_0, H, W)``, C_0 the U-Net's first width. Made by
    :meth:`scoregen.nn.UNet.encode_condition`; pass it as ``cond`` to the net or to
    :func:`scoregen.sample` and the stem computes ``F(x_t) + features`` without running G.
    ``image: (B, cond_channels, H, W)``, the condition itself, for ``cond_mode="both"``
    (whose input conv reads it: ``F([x_t, image]) + features``); None for ``"add"``.
    It has no unconditional branch (see the module docstring).
    """

    features: Tensor
    image: Tensor | None = None

    def __post_init__(self) -> None:
        f = self.features
        if not isinstance(f, Tensor) or not f.is_floating_point() or f.ndim != 4:
            got = (f"{tuple(f.shape)} {f.dtype}" if isinstance(f, Tensor)
                   else type(f).__name__)
            raise TypeError(
                f"EncodedCondition.features must be a floating-point (B, C_0, H, W) "
                f"tensor; got {got}"
            )
        im = self.image
        if im is not None and (not isinstance(im, Tensor) or not im.is_floating_point()
                               or im.ndim != 4 or im.shape[0] != f.shape[0]):
            got = f"{tuple(im.shape)} {im.dtype}" if isinstance(im, Tensor) else type(im).__name__
            raise TypeError(
                f"EncodedCondition.image must be a floating-point (B, cond_channels, H, W) "
                f"tensor with the batch of features ({f.shape[0]}); got {got}"
            )

    @property
    def shape(self) -> torch.Size:
        """``features.shape``: (B, C_0, H, W)."""
        return self.features.shape

    @property
    def ndim(self) -> int:
        """4, the rank of ``features``."""
        return self.features.ndim

    def repeat(self, times: int) -> EncodedCondition:
        """The batch repeated ``times`` times, ``(times * B, C_0, H, W)``: row ``k * B + j``
        is image ``j`` (like ``cond.repeat(times, 1, 1, 1)`` for an ensemble)."""
        image = None if self.image is None else self.image.repeat(times, 1, 1, 1)
        return EncodedCondition(self.features.repeat(times, 1, 1, 1), image)


def check_cond_mode(cond_mode: str | None, cond_channels: int) -> None:
    """Raise unless ``(cond_mode, cond_channels)`` is a consistent pair."""
    if cond_mode not in COND_MODES:
        raise ValueError(f"cond_mode must be one of {COND_MODES}; got {cond_mode!r}")
    if isinstance(cond_channels, bool) or not isinstance(cond_channels, int):
        raise TypeError(f"cond_channels must be an int; got {type(cond_channels).__name__}")
    if cond_mode is None and cond_channels != 0:
        raise ValueError(
            f"cond_mode=None (unconditional) needs cond_channels=0; got cond_channels="
            f"{cond_channels}. Set cond_mode='add', 'concat' or 'both' for a conditional "
            "network"
        )
    if cond_mode is not None and cond_channels < 1:
        raise ValueError(f"cond_mode={cond_mode!r} needs cond_channels >= 1; got {cond_channels}")


def prepare_condition(
    cond: Tensor | EncodedCondition | None,
    x: Tensor,
    *,
    cond_channels: int,
    cond_mode: str | None,
    encoded_channels: int | None = None,
    patch_size: int = 1,
) -> Tensor | EncodedCondition | None:
    """Validate ``cond: (B, cond_channels, H, W)`` against ``x: (B, C, H, W)``.

    Returns ``None`` for an unconditional network, zeros of the right shape when a
    conditional network gets ``cond=None``, else ``cond`` cast to ``x``'s device and dtype.
    An :class:`EncodedCondition` (``cond_mode="add"`` only) must have features of shape
    ``(B, encoded_channels, H / patch_size, W / patch_size)`` (the stem's resolution); it
    is returned with its features cast likewise.
    """
    batch, _, height, width = x.shape
    if isinstance(cond, EncodedCondition):
        return _prepare_encoded(cond, x, cond_mode=cond_mode, channels=encoded_channels,
                                patch_size=patch_size)
    expected = f"(B, cond_channels, H, W) = ({batch}, {cond_channels}, {height}, {width})"
    if cond_mode is None:
        if cond is not None:
            shape = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(
                f"this network is unconditional (cond_mode=None) but got cond of shape "
                f"{shape}; pass cond=None or build the net with cond_mode='add'/'concat'"
            )
        return None
    if cond is None:
        return x.new_zeros(batch, cond_channels, height, width)
    if not isinstance(cond, Tensor):
        raise TypeError(
            f"cond must be a torch.Tensor {expected} or None; got {type(cond).__name__}"
        )
    if not cond.is_floating_point():
        raise TypeError(f"cond must be a floating-point tensor; got dtype {cond.dtype}")
    if cond.ndim != 4:
        raise ValueError(f"cond must have shape {expected}; got {tuple(cond.shape)}")
    if cond.shape[0] != batch:
        raise ValueError(
            f"cond batch size {cond.shape[0]} does not match x's batch size {batch}; "
            f"cond must have shape {expected}, got {tuple(cond.shape)}"
        )
    if cond.shape[1] != cond_channels:
        raise ValueError(
            f"cond has {cond.shape[1]} channels but cond_channels={cond_channels}; "
            f"cond must have shape {expected}, got {tuple(cond.shape)}"
        )
    if tuple(cond.shape[-2:]) != (height, width):
        raise ValueError(
            f"cond spatial size {tuple(cond.shape[-2:])} does not match x's "
            f"({height}, {width}); cond must have shape {expected}, got {tuple(cond.shape)}"
        )
    return cond.to(device=x.device, dtype=x.dtype)


def _prepare_encoded(
    cond: EncodedCondition, x: Tensor, *, cond_mode: str | None, channels: int | None,
    patch_size: int = 1,
) -> EncodedCondition:
    """Check an encoded condition's features against ``x`` (see :func:`prepare_condition`)."""
    if cond_mode not in ENCODER_MODES:
        raise ValueError(
            f"an EncodedCondition is SegDiff's G(I) and only fits cond_mode 'add' or 'both'; "
            f"this network has cond_mode={cond_mode!r}: pass the condition image as a tensor"
        )
    if (cond_mode == "both") != (cond.image is not None):
        raise ValueError(
            "cond_mode='both' needs an EncodedCondition that carries the image (and 'add' "
            "one without): make it with this network's encode_condition"
        )
    batch, _, height, width = x.shape
    height, width = height // patch_size, width // patch_size
    f = cond.features
    expected = f"(B, C_0, H, W) = ({batch}, {channels}, {height}, {width})"
    if f.shape[0] != batch or (channels is not None and f.shape[1] != channels) or tuple(
            f.shape[-2:]) != (height, width):
        raise ValueError(
            f"encoded condition features must have shape {expected} (batch of x, the "
            f"stem's width, x's size / patch_size {patch_size}); got {tuple(f.shape)}"
        )
    image = cond.image
    if image is not None and tuple(image.shape[-2:]) != tuple(x.shape[-2:]):
        raise ValueError(f"encoded condition image must have x's size {tuple(x.shape[-2:])}; "
                         f"got {tuple(image.shape)}")
    if f.device == x.device and f.dtype == x.dtype and (
            image is None or (image.device == x.device and image.dtype == x.dtype)):
        return cond
    return EncodedCondition(f.to(device=x.device, dtype=x.dtype),
                            None if image is None else image.to(device=x.device, dtype=x.dtype))


class _EncoderBlock(nn.Module):
    """Pre-activation residual block without time input: GN -> SiLU -> conv, twice."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        r = self.conv1(F.silu(self.norm1(h)))  # (B, C, H, W)
        r = self.conv2(F.silu(self.norm2(r)))  # (B, C, H, W)
        return h + r  # (B, C, H, W)


class ConditionEncoder(nn.Module):
    """SegDiff's condition encoder G (Amit et al. 2021): conv3x3, then residual blocks.

    ``cond: (B, cond_channels, H, W)`` -> ``(B, out_channels, H, W)``, full resolution.
    SegDiff uses RRDB blocks (ESRGAN) here; plain GroupNorm/SiLU residual blocks do the
    same job at this size.
    """

    def __init__(
        self, cond_channels: int, out_channels: int, *, depth: int = 2, groups: int = 32
    ) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"ConditionEncoder: depth must be >= 0; got {depth}")
        if out_channels % groups:
            raise ValueError(
                f"ConditionEncoder: out_channels={out_channels} must be divisible by "
                f"groups={groups} (GroupNorm)"
            )
        self.conv_in = nn.Conv2d(cond_channels, out_channels, kernel_size=3, padding=1)
        self.blocks = nn.Sequential(*(_EncoderBlock(out_channels, groups) for _ in range(depth)))

    def forward(self, cond: Tensor) -> Tensor:
        h = self.conv_in(cond)  # (B, C, H, W)
        return self.blocks(h)  # (B, C, H, W)


class ConditionalStem(nn.Module):
    """The U-Net's input layer: ``x_t`` (and the condition) -> the first feature map.

    ``x: (B, in_channels, H, W), cond: (B, cond_channels, H, W) | None`` ->
    ``(B, out_channels, H / p, W / p)``, ``p = patch_size``; see the module docstring for
    ``cond_mode``. With ``p > 1`` both images are first folded into ``p * p`` times the
    channels at ``1 / p`` of the resolution (space-to-depth, ``F.pixel_unshuffle``), as in
    simple diffusion (Hoogeboom et al. 2023, arXiv:2301.11093, Sec. 3.3): the costly
    full-resolution level is gone, no pixel is dropped.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_channels: int = 0,
        cond_mode: str | None = None,
        *,
        encoder_depth: int = 2,
        groups: int = 32,
        patch_size: int = 1,
        self_condition: bool = False,
    ) -> None:
        super().__init__()
        check_cond_mode(cond_mode, cond_channels)
        if not isinstance(self_condition, bool):
            raise TypeError(f"ConditionalStem: self_condition must be a bool; got "
                            f"{type(self_condition).__name__}")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"ConditionalStem: patch_size must be an int >= 1; got {patch_size!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_channels = cond_channels
        self.cond_mode = cond_mode
        self.patch_size = p = patch_size
        self.self_condition = self_condition
        x_channels = in_channels * (2 if self_condition else 1)  # [x_t, x0_prev]
        conv_in = (x_channels + cond_channels if cond_mode in CONCAT_MODES
                   else x_channels) * p * p
        self.conv = nn.Conv2d(conv_in, out_channels, kernel_size=3, padding=1)
        self.encoder = (
            ConditionEncoder(cond_channels * p * p, out_channels, depth=encoder_depth,
                             groups=groups)
            if cond_mode in ENCODER_MODES
            else None
        )

    def _fold(self, image: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C * p * p, H / p, W / p)`` (space-to-depth)."""
        return F.pixel_unshuffle(image, self.patch_size) if self.patch_size > 1 else image

    def prepare(
        self, x: Tensor, cond: Tensor | EncodedCondition | None
    ) -> Tensor | EncodedCondition | None:
        """:func:`prepare_condition` with this stem's channels (and width, if encoded)."""
        return prepare_condition(cond, x, cond_channels=self.cond_channels,
                                 cond_mode=self.cond_mode, encoded_channels=self.out_channels,
                                 patch_size=self.patch_size)

    def encode(self, cond: Tensor) -> EncodedCondition:
        """``G(cond)`` wrapped (with ``cond`` itself in ``"both"`` mode), for the modes with
        an encoder; ``cond`` already validated."""
        if self.encoder is None:
            raise ValueError(f"only cond_mode 'add' and 'both' have a condition encoder; this "
                             f"stem has cond_mode={self.cond_mode!r}")
        features = self.encoder(self._fold(cond))  # (B, C0, H / p, W / p)
        return EncodedCondition(features, cond if self.cond_mode == "both" else None)

    def forward(self, x: Tensor, cond: Tensor | EncodedCondition | None = None,
                x_self: Tensor | None = None) -> Tensor:
        """``x_self``: the previous ``x0_hat`` (B, C_in, H, W) of a self-conditioned stem
        (read beside ``x_t`` by the input conv; None = zeros); must be None otherwise."""
        c = self.prepare(x, cond)  # (B, C_cond, H, W), EncodedCondition or None
        h = self._fold(x)  # (B, C_in * p * p, H / p, W / p)
        if self.self_condition:
            if x_self is None:
                x_self = x.new_zeros(x.shape)
            elif not isinstance(x_self, Tensor) or x_self.shape != x.shape:
                got = tuple(x_self.shape) if isinstance(x_self, Tensor) else type(x_self).__name__
                raise ValueError(f"x_self (the previous x0 estimate) must have x's shape "
                                 f"{tuple(x.shape)}; got {got}")
            h = torch.cat([h, self._fold(x_self.to(x.dtype))], dim=1)  # [x_t, x0_prev]
        elif x_self is not None:
            raise ValueError("x_self (the previous x0 estimate) was given to a stem built "
                             "without self_condition=True")
        if isinstance(c, EncodedCondition):  # G(I) precomputed ("both": with the image)
            c, features = c.image, c.features
        elif self.cond_mode in ENCODER_MODES:
            features = self.encoder(self._fold(c))  # G(I): (B, C0, H / p, W / p)
        else:
            features = None
        if self.cond_mode in CONCAT_MODES:
            h = torch.cat([h, self._fold(c)], dim=1)  # [x_t, I]: (B, (C_in + C_c) p^2, H/p, W/p)
        h = self.conv(h)  # F(.): (B, C0, H / p, W / p)
        return h if features is None else h + features  # F(.) + G(I)
