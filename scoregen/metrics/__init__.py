"""Generic metrics (any data, any task): sample-quality distances for benchmarking samplers,
and the calibration of probabilistic binary predictions (pixel-wise, for masks).

Segmentation metrics belong to the X-ray application: :mod:`scoregen.segmentation.metrics`.
"""

from scoregen.metrics.calibration import (
    CALIBRATION_METRICS,
    ReliabilityCurve,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    near_mask,
    pixel_nll,
    reliability_curve,
    uncertainty_error_auprc,
    uncertainty_error_auroc,
    uncertainty_error_overlap,
)
from scoregen.metrics.distances import sliced_wasserstein, sliced_wasserstein_floor

__all__ = [
    "CALIBRATION_METRICS", "ReliabilityCurve", "brier_score", "calibration_metrics",
    "expected_calibration_error", "fit_temperature", "near_mask", "pixel_nll",
    "reliability_curve", "sliced_wasserstein", "sliced_wasserstein_floor",
    "uncertainty_error_auprc", "uncertainty_error_auroc", "uncertainty_error_overlap",
]
