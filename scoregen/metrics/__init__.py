"""Metrics: segmentation (one micro confusion matrix, as the seed) and sample-quality
distances for benchmarking samplers."""

from scoregen.metrics.distances import sliced_wasserstein, sliced_wasserstein_floor
from scoregen.metrics.segmentation import (
    METRIC_NAMES,
    ROW_NAMES,
    SEED_RESULTS,
    ConfusionMatrix,
    SegmentationMeter,
    confusion_matrix,
    metrics_table,
    per_image_dice,
    segmentation_metrics,
)

__all__ = [
    "METRIC_NAMES", "ROW_NAMES", "SEED_RESULTS", "ConfusionMatrix", "SegmentationMeter",
    "confusion_matrix", "metrics_table", "per_image_dice", "segmentation_metrics",
    "sliced_wasserstein", "sliced_wasserstein_floor",
]
