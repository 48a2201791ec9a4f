"""Datasets and the resumable, DDP-sharded loader."""

from ham.data.datasets import DATASET_NAMES, DatasetInfo, build_datasets, check_dataset
from ham.data.loader import LOADER_BACKENDS, ResumableLoader, build_loader

__all__ = ["DATASET_NAMES", "LOADER_BACKENDS", "DatasetInfo", "ResumableLoader", "build_datasets", "build_loader",
           "check_dataset"]
