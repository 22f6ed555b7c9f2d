"""scoregen: score-based generative models (diffusion models) in PyTorch.

One SDE interface — ``x_t = alpha(t) x_0 + sigma(t) eps`` — carries the loss, every
sampler, exact likelihoods and conditioning. This module only re-exports the public API.
"""

from scoregen.analytic import GaussianMixture, ring_mixture
from scoregen.likelihood import dequantize, log_likelihood, log_prob
from scoregen.losses import dsm_loss, sample_times
from scoregen.model import PREDICTIONS, ScoreModel
from scoregen.samplers import SAMPLERS, sample, time_grid
from scoregen.sde import SDE, VESDE, VPSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE",
    "ScoreModel", "PREDICTIONS",
    "dsm_loss", "sample_times",
    "sample", "SAMPLERS", "time_grid",
    "log_likelihood", "log_prob", "dequantize",
    "GaussianMixture", "ring_mixture",
]
