"""What the config check may know about a dataset without importing torch: does it exist, how many training
images does it have (enough for one global batch?). Raises ConfigError with one line; touches nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ham.errors import ConfigError

DATASET_NAMES = ("imagenet", "cifar100", "digits", "synthetic")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_TRAIN_SIZE = 50_000
# scikit-learn's bundled digits: images per class 0..9 (a fixed file shipped with the package)
DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def _readable_dir(path: Path, what: str, key: str = "data_dir") -> None:
    if not path.is_dir():
        raise ConfigError(f"{key}={str(path)!r}: {what} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"{key}={str(path)!r}: {what} is not readable by this user (check its permissions)")


def check_dataset(name: str, data_dir: str | None, *, download: bool = False) -> None:
    """Cheap existence check with no side effects. With download=True a missing CIFAR-100 is not an error
    (build_datasets fetches it), but data_dir must be set."""
    if name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name={name!r} is not known; allowed: {', '.join(DATASET_NAMES)}")
    if name in ("digits", "synthetic"):
        return
    if not data_dir:
        raise ConfigError(f"data_dir is not set; dataset.name={name} needs it (data_dir=/path or env HAM_DATA_DIR)")
    root = Path(data_dir)
    if name == "cifar100":
        need = root / "cifar-100-python" / "train"
        if download and not need.is_file():
            return
        if not need.is_file():
            raise ConfigError(f"data_dir={str(data_dir)!r} has no CIFAR-100 (expected {need}); download it with "
                              f"dataset.download=true or from {CIFAR_URL} (extract into data_dir)")
        if not os.access(need, os.R_OK):
            raise ConfigError(f"data_dir={str(data_dir)!r}: {need} is not readable by this user")
    elif name == "imagenet":
        for split in ("train", "val"):
            d = root / split
            if d.is_dir():
                _readable_dir(d, f"its {split} split")
            if not d.is_dir() or not any(p.is_dir() for p in d.iterdir()):
                raise ConfigError(f"data_dir={str(data_dir)!r} has no ImageNet {split} split (expected class "
                                  f"folders in {d}); download ILSVRC2012 from https://image-net.org and arrange "
                                  f"it as data_dir/{{train,val}}/<class>/<image>.JPEG")


def train_size_at_least(name: str, data_dir: str | None, options: Mapping[str, Any], need: int) -> int:
    """The training set's size, or any number >= `need` once that many images are seen (ImageNet is not
    counted in full: one global batch is all the check needs)."""
    if name == "synthetic":
        return int(options.get("train_size", 256))
    if name == "digits":
        vf = float(options.get("val_fraction", 0.2))
        return sum(c - round(c * vf) for c in DIGITS_CLASS_COUNTS)  # the stratified split of datasets.py
    if name == "cifar100":
        return CIFAR100_TRAIN_SIZE
    seen = 0
    with os.scandir(Path(data_dir) / "train") as classes:
        for cls in classes:
            if cls.is_dir():
                with os.scandir(cls.path) as files:
                    for f in files:
                        seen += f.is_file()
                        if seen >= need:
                            return seen
    return seen
