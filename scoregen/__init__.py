"""scoregen: score-based generative models (diffusion models) in PyTorch.

One SDE interface — ``x_t = alpha(t) x_0 + sigma(t) eps`` — carries the loss, every
sampler, exact likelihoods and conditioning. This module only re-exports the public API.

Layout (imports run downwards only): the core (``sde``, ``model``, ``losses``,
``samplers``, ``likelihood``, ``analytic``, ``nn``), the training side (``scoregen.train``)
and the chest X-ray application (``scoregen.segmentation``).
"""

from scoregen.analytic import GaussianMixture, ring_mixture
from scoregen.likelihood import (
    LogProbResult,
    dequantize,
    log_likelihood,
    log_prob,
    log_prob_with_info,
)
from scoregen.losses import AUX_LOSSES, AUX_WEIGHTINGS, dsm_loss, sample_times
from scoregen.model import PREDICTIONS, ScoreModel
from scoregen.nn import UNET_PRESETS, UNet, UNetConfig
from scoregen.samplers import SAMPLERS, SampleResult, sample, sample_with_info, time_grid
from scoregen.sde import SDE, VESDE, VPSDE, SubVPSDE
from scoregen.segmentation.ensemble import fuse, staple, uncertainty
from scoregen.train import (
    EMA,
    CheckpointBoundsError,
    CheckpointError,
    CheckpointMismatchError,
    ExistingRunError,
    HostOptions,
    NonFiniteLossError,
    NonFiniteWeightsError,
    OutDirInUseError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE",
    "ScoreModel", "PREDICTIONS",
    "dsm_loss", "sample_times", "AUX_LOSSES", "AUX_WEIGHTINGS",
    "sample", "sample_with_info", "SampleResult", "SAMPLERS", "time_grid",
    "log_likelihood", "log_prob", "log_prob_with_info", "LogProbResult", "dequantize",
    "GaussianMixture", "ring_mixture",
    "UNet", "UNetConfig", "UNET_PRESETS",
    "Trainer", "TrainConfig", "HostOptions", "NonFiniteLossError", "NonFiniteWeightsError",
    "ExistingRunError", "OutDirInUseError", "EMA",
    "save_checkpoint", "load_checkpoint", "load_model", "CheckpointError",
    "CheckpointMismatchError", "CheckpointBoundsError",
    "fuse", "staple", "uncertainty",
]
