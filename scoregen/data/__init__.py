"""Data: the COVID-QU-Ex loader (real folder layout) and a synthetic chest X-ray phantom.

Every set yields ``{"image": (1, S, S), "mask": (1, S, S), "name", "class"}`` with
images in [-1, 1] and masks in {-1, +1}.
"""

from scoregen.data.augment import RandomAffine
from scoregen.data.covid_qu import CLASSES, MASK_FOLDERS, SPLITS, CovidQUDataset, find_split_root
from scoregen.data.dataset import SegmentationDataset
from scoregen.data.phantom import PhantomDataset, make_phantom_set, write_phantom_folder

__all__ = [
    "CLASSES",
    "MASK_FOLDERS",
    "SPLITS",
    "CovidQUDataset",
    "PhantomDataset",
    "RandomAffine",
    "SegmentationDataset",
    "find_split_root",
    "make_phantom_set",
    "write_phantom_folder",
]
