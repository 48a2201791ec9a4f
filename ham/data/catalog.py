"""What the config check may know about a dataset without importing torch: does it exist, how many training
images does it have (enough for one global batch?). Raises ConfigError with one line; touches nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ham import registry
from ham.errors import ConfigError

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
    if name not in registry.names("dataset"):
        raise ConfigError(f"dataset.name={name!r} is not known; allowed: {', '.join(registry.names('dataset'))}")
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


# ------------------------------------------------------------------ ffcv files (torch-free checks)
FFCV_META = "ham_ffcv.json"  # written last by ham.data.ffcv_write: the conversion finished
FFCV_FORMAT = 1
NATIVE_CLASSES = {"cifar100": 100, "digits": 10}
_BETON_HEADER = (("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                 ("alloc_table_ptr", "<u8"))


def ffcv_write_command(name: str, data_dir: str | None) -> str:
    src = "" if name == "digits" else " --data-dir SOURCE"
    return f"python -m ham.data.ffcv_write --dataset {name}{src} --out {data_dir or 'OUTDIR'}"


def read_ffcv_meta(name: str, data_dir: str | None) -> dict[str, Any]:
    """The converter's record of data_dir (ham_ffcv.json), after cheap checks of both .beton files: present,
    a readable ffcv header, the sample count the record names, labels in 0..num_classes-1. ConfigError else."""
    import json

    if not data_dir:
        raise ConfigError(f"data_dir is not set; dataset.loader=ffcv needs the directory holding train.beton and "
                          f"val.beton (create them with: {ffcv_write_command(name, None)})")
    root = Path(data_dir)
    make = f"create them with: {ffcv_write_command(name, data_dir)}"
    for split in ("train", "val"):
        if not (root / f"{split}.beton").is_file():
            raise ConfigError(f"data_dir={str(data_dir)!r} has no {split}.beton (dataset.loader=ffcv); {make}")
    meta_path = root / FFCV_META
    try:
        meta = json.loads(meta_path.read_text())
        ok = isinstance(meta, dict) and meta.get("format") == FFCV_FORMAT
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"data_dir={str(data_dir)!r}: {meta_path.name} is missing or unreadable (an unfinished "
                          f"or foreign conversion); recreate the files: {make} --overwrite")
    if meta.get("dataset") != name:
        raise ConfigError(f"data_dir={str(data_dir)!r} holds .beton files of dataset={meta.get('dataset')}, not "
                          f"dataset.name={name}; allowed: dataset={meta.get('dataset')} or another data_dir")
    n_classes = int(meta["num_classes"])
    for split in ("train", "val"):
        labels = beton_labels(root / f"{split}.beton", int(meta[f"{split}_size"]), data_dir, make)
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ConfigError(f"data_dir={str(data_dir)!r}: {split}.beton has labels {int(labels.min())}.."
                              f"{int(labels.max())}, outside the {n_classes} classes of dataset={name} (the model's "
                              f"output size); recreate the files: {make} --overwrite")
    native = NATIVE_CLASSES.get(name)
    if native is not None and n_classes != native:
        raise ConfigError(f"data_dir={str(data_dir)!r}: the .beton files have {n_classes} classes, dataset={name} "
                          f"has {native}; recreate the files: {make} --overwrite")
    return meta


def beton_labels(path: Path, expected: int, data_dir: Any = None, make: str = "") -> Any:
    """Labels of a .beton written by ham.data.ffcv_write (fields image, label), read from its metadata table
    with numpy only. Checks the header and the file's extent; ConfigError on damage."""
    import numpy as np

    header_t = np.dtype(list(_BETON_HEADER), align=True)
    # image: (mode u1, width u2, height u2, data_ptr u8), packed; label: i8; the record is aligned
    image_t = np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])
    meta_t = np.dtype([("image", image_t), ("label", "<i8")], align=True)
    field_desc = 1 + 16 + 1024  # type_id, name, arguments (FieldDescType, align=True -> 1041 bytes)
    bad = f"data_dir={str(data_dir)!r}: {path.name} is damaged"
    try:
        size = path.stat().st_size
        header = np.fromfile(path, dtype=header_t, count=1)
        if len(header) != 1 or int(header["version"][0]) != 2 or int(header["num_fields"][0]) != 2:
            raise ConfigError(f"{bad} (not an ffcv file with the fields image and label); recreate it: {make} "
                              f"--overwrite")
        n, table = int(header["num_samples"][0]), int(header["alloc_table_ptr"][0])
        if n != expected or not 0 < table < size:
            raise ConfigError(f"{bad} ({n} samples, {FFCV_META} says {expected}; or truncated); recreate it: "
                              f"{make} --overwrite")
        offset = header_t.itemsize + 2 * field_desc
        if offset + n * meta_t.itemsize > table:
            raise ConfigError(f"{bad} (truncated metadata); recreate it: {make} --overwrite")
        return np.fromfile(path, dtype=meta_t, count=n, offset=offset)["label"]
    except OSError as e:
        raise ConfigError(f"data_dir={str(data_dir)!r}: {path.name} is not readable ({e.strerror}); check its "
                          f"permissions") from None


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
