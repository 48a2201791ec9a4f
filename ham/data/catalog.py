"""What the config check may know about a dataset without importing torch: does it exist, how many training
images does it have (enough for one global batch?). Raises ConfigError with one line; touches nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ham import registry
from ham.errors import ConfigError



def check_dataset(name: str, data_dir: str | None, *, download: bool = False) -> None:
    """Cheap existence check with no side effects (the dataset's own `check_source`, ham/data/options.py). With
    download=True a missing CIFAR-100 is not an error (build_datasets fetches it), but data_dir must be set."""
    if name not in registry.names("dataset"):
        raise ConfigError(f"dataset.name={name!r} is not known; allowed: {', '.join(registry.names('dataset'))}")
    decl = registry.get("dataset", name)
    if not decl.facts.get("files", True) or decl.facts.get("bundled", False):
        return  # nothing on disk to check
    if not data_dir:
        raise ConfigError(f"data_dir is not set; dataset.name={name} needs it (data_dir=/path or env HAM_DATA_DIR)")
    decl.schema.check_source(Path(data_dir), download=download)


def train_size_at_least(name: str, data_dir: str | None, options: Mapping[str, Any], need: int) -> int:
    """The training set's size, or any number >= `need` once that many images are seen (the dataset's own
    `train_size_at_least`: ImageNet is not counted in full, one global batch is all the check needs)."""
    return registry.get("dataset", name).schema.train_size_at_least(data_dir, options, need)


# ------------------------------------------------------------------ ffcv files (torch-free checks)
FFCV_META = "ham_ffcv.json"  # written last by ham.data.ffcv_write: the conversion finished
FFCV_FORMAT = 1
_BETON_HEADER = (("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                 ("alloc_table_ptr", "<u8"))


def ffcv_write_command(name: str, data_dir: str | None) -> str:
    from ham.data.ffcv_formats import ffcv_format

    fmt = ffcv_format(name)
    src = " --data-dir SOURCE" if fmt is None or fmt.needs_source else ""
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
    from ham.data.ffcv_formats import ffcv_format

    fmt = ffcv_format(name)
    native = fmt.fixed_classes if fmt is not None else None
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
