"""A small CNN classifier whose penultimate layer is a feature space for sample quality.

The distances between sets of images in :mod:`scoregen.metrics` (Fréchet distance, KID,
precision / recall) are computed on features. Published FIDs use Inception-v3 trained on
ImageNet; scoregen downloads no weights, so it trains this net in the project on the same
images (e.g. the COVID-19 / Non-COVID / Normal classes of COVID-QU-Ex) and measures in its
feature space. The recipe is the usual one for domain-specific FIDs (e.g. a classifier
trained on the data's own labels, as for medical images): features that separate the
classes also see what makes an image look like the data.

Architecture (for 1-channel 64x64 X-rays; any size >= 2^blocks works through the global
pool)::

    x (B, C, H, W)
    -> blocks x [conv3x3 -> GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> avgpool 2]
    -> global average pool (B, widths[-1])
    -> Linear -> SiLU  = features (B, feature_dim)
    -> Linear          = logits (B, num_classes)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = ["ClassifierConfig", "FeatureClassifier"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of a :class:`FeatureClassifier`.

    Attributes:
        in_channels: image channels C.
        num_classes: classes K of the head.
        widths: channels of each conv block (one block per entry, each halves H and W).
        feature_dim: D, the width of the feature layer.
        groups: GroupNorm groups (must divide every width).
    """

    in_channels: int = 1
    num_classes: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 128
    groups: int = 8

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "feature_dim", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClassifierConfig.{name} must be an int >= 1, got {value!r}")
        widths = tuple(self.widths)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                             for w in widths):
            raise ValueError(f"ClassifierConfig.widths must be a non-empty tuple of ints >= 1, "
                             f"got {self.widths!r}")
        bad = [w for w in widths if w % self.groups]
        if bad:
            raise ValueError(f"ClassifierConfig.groups = {self.groups} must divide every width; "
                             f"it does not divide {bad}")
        object.__setattr__(self, "widths", widths)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise TypeError(f"ClassifierConfig.from_dict expects a mapping, got "
                            f"{type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown ClassifierConfig keys {unknown}; valid keys: {names}")
        fields = dict(data)
        if "widths" in fields:
            fields["widths"] = tuple(fields["widths"])
        return cls(**fields)


def _block(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
        nn.AvgPool2d(2),
    )


class FeatureClassifier(nn.Module):
    """Small CNN: ``features(x)`` (B, D) and ``forward(x)`` = class logits (B, K).

    Args:
        config: a :class:`ClassifierConfig` (default: 1 channel, 3 classes, D = 128).
    """

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ClassifierConfig()
        cfg = self.config
        chans = (cfg.in_channels, *cfg.widths)
        self.blocks = nn.Sequential(*[_block(a, b, cfg.groups)
                                      for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.feature = nn.Sequential(nn.Linear(cfg.widths[-1], cfg.feature_dim), nn.SiLU())
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.config.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (B, {self.config.in_channels}, H, W), got {shape}")
        low = 2 ** len(self.config.widths)
        if min(x.shape[2:]) < low:
            raise ValueError(f"images must be at least {low}x{low} for "
                             f"{len(self.config.widths)} pooling blocks, got {tuple(x.shape[2:])}")

    def features(self, x: Tensor) -> Tensor:
        """The feature layer: x (B, C, H, W) -> (B, feature_dim)."""
        self._check(x)
        h = self.blocks(x)                 # (B, widths[-1], H / 2^L, W / 2^L)
        h = h.mean(dim=(2, 3))             # (B, widths[-1])
        return self.feature(h)             # (B, D)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits: x (B, C, H, W) -> (B, num_classes)."""
        return self.head(self.features(x))  # (B, K)
