"""Sample-quality distances for benchmarking samplers (generic: any data, any task).

Segmentation metrics belong to the X-ray application: :mod:`scoregen.segmentation.metrics`.
"""

from scoregen.metrics.distances import sliced_wasserstein, sliced_wasserstein_floor

__all__ = ["sliced_wasserstein", "sliced_wasserstein_floor"]
