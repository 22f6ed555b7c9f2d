"""Generic metrics (any data, any task): sample-quality distances for benchmarking samplers,
and the calibration of probabilistic binary predictions (pixel-wise, for masks).

Sample quality on feature matrices (N, D), float64 inside: the Fréchet distance
(:mod:`~scoregen.metrics.frechet`), KID (:mod:`~scoregen.metrics.kid`), improved precision /
recall (:mod:`~scoregen.metrics.precision_recall`) and a nearest-Train memorisation check
(:mod:`~scoregen.metrics.memorisation`); AUROC and average precision of any real-valued
score (:mod:`~scoregen.metrics.ranking`).

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
from scoregen.metrics.frechet import frechet_distance, gaussian_frechet_distance
from scoregen.metrics.kid import KernelDistance, kernel_distance, mmd2_unbiased, polynomial_kernel
from scoregen.metrics.memorisation import (
    Memorisation,
    memorisation,
    memorisation_from_distances,
    nearest_distances,
)
from scoregen.metrics.precision_recall import (
    PrecisionRecall,
    knn_radii,
    manifold_coverage,
    precision_recall,
)
from scoregen.metrics.ranking import auroc, average_precision

__all__ = [
    "CALIBRATION_METRICS", "ReliabilityCurve", "brier_score", "calibration_metrics",
    "expected_calibration_error", "fit_temperature", "near_mask", "pixel_nll",
    "reliability_curve", "sliced_wasserstein", "sliced_wasserstein_floor",
    "uncertainty_error_auprc", "uncertainty_error_auroc", "uncertainty_error_overlap",
    # sample quality
    "KernelDistance", "Memorisation", "PrecisionRecall", "frechet_distance",
    "gaussian_frechet_distance", "kernel_distance", "knn_radii", "manifold_coverage",
    "memorisation", "memorisation_from_distances", "mmd2_unbiased", "nearest_distances",
    "polynomial_kernel", "precision_recall",
    # ranking
    "auroc", "average_precision",
]
