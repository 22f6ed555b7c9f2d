"""The chest X-ray application: lung / COVID-19 infection segmentation as conditional
generation of the mask given the X-ray (SegDiff, Amit et al. 2021).

Built on the core (:mod:`scoregen.model`, :mod:`scoregen.samplers`) and nothing in the
core imports it. Its parts:

* data — :mod:`~scoregen.segmentation.covid_qu` (the COVID-QU-Ex folder layout),
  :mod:`~scoregen.segmentation.phantom` (a synthetic X-ray phantom),
  :mod:`~scoregen.segmentation.dataset` (the in-memory set both share),
  :mod:`~scoregen.segmentation.augment` (small random affines, intensity changes),
  :mod:`~scoregen.segmentation.image_norm` (per-image histogram equalisation). Every set yields
  ``{"image": (1, S, S), "mask": (1, S, S), "name", "class"}`` with images in [-1, 1]
  and masks in {-1, +1};
* :mod:`~scoregen.segmentation.inference` — :func:`segment` (an ensemble of sampled masks,
  fused) and :func:`evaluate_segmentation`;
* :mod:`~scoregen.segmentation.ensemble` — fusing samples (mean, vote, STAPLE), uncertainty;
* :mod:`~scoregen.segmentation.metrics` — Dice / IoU from one micro confusion matrix;
* :mod:`~scoregen.segmentation.panels` — the X-ray | truth | prediction | uncertainty figure.
"""

from scoregen.segmentation.augment import (
    Chain,
    RandomAffine,
    RandomIntensity,
    describe_augment,
    training_augment,
)
from scoregen.segmentation.covid_qu import (
    CLASSES,
    MASK_FOLDERS,
    SPLITS,
    CovidQUDataset,
    find_split_root,
)
from scoregen.segmentation.dataset import SegmentationDataset
from scoregen.segmentation.ensemble import (
    FUSION_METHODS,
    fuse,
    staple,
    to_unit_interval,
    uncertainty,
)
from scoregen.segmentation.image_norm import IMAGE_NORMS, equalize_histogram
from scoregen.segmentation.inference import (
    SegmentationOutput,
    class_groups,
    evaluate_segmentation,
    predict_masks,
    random_subset,
    segment,
)
from scoregen.segmentation.metrics import (
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
from scoregen.segmentation.panels import SEG_PANEL, segmentation_panels
from scoregen.segmentation.phantom import PhantomDataset, make_phantom_set, write_phantom_folder

__all__ = [
    # data
    "CLASSES", "MASK_FOLDERS", "SPLITS", "CovidQUDataset", "PhantomDataset", "RandomAffine",
    "RandomIntensity", "Chain", "training_augment", "describe_augment",
    "SegmentationDataset", "find_split_root", "make_phantom_set", "write_phantom_folder",
    "IMAGE_NORMS", "equalize_histogram",
    # segmenting by sampling
    "SegmentationOutput", "segment", "evaluate_segmentation", "predict_masks",
    "random_subset", "class_groups",
    # ensembles
    "FUSION_METHODS", "fuse", "staple", "to_unit_interval", "uncertainty",
    # metrics
    "METRIC_NAMES", "ROW_NAMES", "SEED_RESULTS", "ConfusionMatrix", "SegmentationMeter",
    "confusion_matrix", "metrics_table", "per_image_dice", "segmentation_metrics",
    # figures
    "segmentation_panels", "SEG_PANEL",
]
