"""Networks: the DDPM U-Net, its layers and the two ways of fusing a condition image; a small
CNN classifier whose features measure sample quality."""

from .attention import Attention, LinearAttention
from .blocks import ResBlock
from .classifier import ClassifierConfig, FeatureClassifier
from .conditioning import (
    COND_MODES,
    ConditionalStem,
    ConditionEncoder,
    EncodedCondition,
    prepare_condition,
)
from .embedding import TimestepEmbedding, sinusoidal_embedding
from .unet import UNET_PRESETS, UNet, UNetConfig

__all__ = [
    "COND_MODES",
    "UNET_PRESETS",
    "Attention",
    "ClassifierConfig",
    "ConditionEncoder",
    "ConditionalStem",
    "EncodedCondition",
    "FeatureClassifier",
    "LinearAttention",
    "ResBlock",
    "TimestepEmbedding",
    "UNet",
    "UNetConfig",
    "prepare_condition",
    "sinusoidal_embedding",
]
