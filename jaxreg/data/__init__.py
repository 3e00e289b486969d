"""Data sets as arrays: built-in offline sets, TFDS, image folders, and sampling helpers."""

from jaxreg.data.api import list_datasets, load, load_splits
from jaxreg.data.dataset import SPLITS, Dataset, to_float_image
from jaxreg.data.sampling import (
    class_balanced_weights,
    imbalance,
    long_tail_ratios,
    stratified_split_indices,
    stratified_subset,
)
from jaxreg.data.tfds import tfds_source

__all__ = [
    "SPLITS",
    "Dataset",
    "class_balanced_weights",
    "imbalance",
    "list_datasets",
    "load",
    "load_splits",
    "long_tail_ratios",
    "stratified_split_indices",
    "stratified_subset",
    "tfds_source",
    "to_float_image",
]
