"""Write a dataset the trainer knows as ffcv files: OUTDIR/train.beton, OUTDIR/val.beton, OUTDIR/ham_ffcv.json.

    python -m ham.data.ffcv_write --dataset imagenet --data-dir DIR --out OUTDIR \\
        [--max-resolution 500 --jpeg-quality 90 --compress-probability 0.5 --num-workers N] [--overwrite]
    python -m ham.data.ffcv_write --dataset cifar100 --data-dir DIR --out OUTDIR     # raw pixels
    python -m ham.data.ffcv_write --dataset digits --out OUTDIR [--val-fraction 0.2]  # raw ink levels 0..16
    python -m ham.data.ffcv_write --dataset imagenet --out OUTDIR --verify             # check existing files

Sample i of each .beton is sample i of the torchvision dataset of the same split (ImageFolder order, CIFAR's
file order, the digits split of ham.data.datasets), so both loaders visit the same images for a (seed, epoch).
ImageNet defaults are ffcv-imagenet's for ResNet50: longest side <= 500 px, half of the images JPEG (quality 90),
the other half raw pixels. Atomic: each file is written under a temporary name (.NAME.partial) and renamed
when complete; ham_ffcv.json, written last, marks a finished conversion. Exit codes: 0 done, 2 bad input or
damaged files (one line), 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ham.data.catalog import FFCV_FORMAT, FFCV_META, check_dataset, read_ffcv_meta
from ham.data.ffcv_formats import SPLITS, ffcv_datasets, ffcv_format
from ham.errors import ConfigError

APT = "apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config"


def ffcv_missing_message(what: str = "dataset.loader=ffcv") -> str | None:
    """None if ffcv imports; else one line saying what to install."""
    try:
        import ffcv  # noqa: F401
        import ffcv.fields  # noqa: F401
    except ImportError as e:
        return (f"{what} needs ffcv, which is not importable ({type(e).__name__}: {' '.join(str(e).split())}); "
                f"install the system libraries ({APT}), then the extra: uv sync --extra ffcv (or pip install "
                f"'ham-optim[ffcv]')")
    return None


# ------------------------------------------------------------------ sources: indexable (uint8 HWC image, label)
class _Errors:
    """Workers report unreadable images here (ffcv's writer hangs if a worker raises): one line per image."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, what: str) -> None:
        with open(self.path, "a") as f:
            f.write(" ".join(what.split()) + "\n")

    def read(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.is_file() else []


class FolderImages:
    def __init__(self, samples: list[tuple[str, int]], errors: _Errors):
        self.samples, self.errors = samples, errors

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        import numpy as np
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB")), label
        except Exception as e:  # noqa: BLE001 -- reported after the writer finishes
            self.errors.add(f"{path}: {type(e).__name__}: {e}")
            return np.zeros((8, 8, 3), dtype=np.uint8), label


class ArrayImages:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


# ------------------------------------------------------------------ writing
def _write_split(source, path: Path, *, jpeg: bool, args, label: str) -> None:
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if jpeg:
        image = RGBImageField(write_mode="proportion", max_resolution=args.max_resolution,
                              jpeg_quality=args.jpeg_quality, compress_probability=args.compress_probability)
    else:
        image = RGBImageField(write_mode="raw")
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)
    print(f"writing {path} ({len(source)} {label} images, {args.num_workers} workers)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        writer = DatasetWriter(str(tmp), {"image": image, "label": IntField()}, num_workers=args.num_workers)
        writer.from_indexed_dataset(source, chunksize=args.chunksize)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    print(f"  {path.name}: {path.stat().st_size / 2**20:.1f} MiB, {len(source) / max(dt, 1e-9):.0f} images/s",
          file=sys.stderr, flush=True)


def convert(args) -> dict[str, Any]:
    out = Path(args.out)
    targets = [out / f"{s}.beton" for s in SPLITS] + [out / FFCV_META]
    existing = [p.name for p in targets if p.exists()]
    if existing and not args.overwrite:
        raise ConfigError(f"--out {out} already holds {', '.join(existing)}; pass --overwrite to replace them, "
                          f"or --verify to check them")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; allowed: a new or an existing directory")
    if ffcv_format(args.dataset).needs_source:  # the source is checked before anything is created
        if not args.data_dir:
            raise ConfigError(f"--data-dir is required for --dataset {args.dataset}")
        check_dataset(args.dataset, args.data_dir)
    missing = ffcv_missing_message("ham.data.ffcv_write")
    if missing:
        raise ConfigError(missing)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it ({e.strerror}); allowed: a directory on a writable "
                          f"filesystem") from None
    try:
        return _convert_into(out, targets, args)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no empty --out behind
        raise


def _convert_into(out: Path, targets: list[Path], args) -> dict[str, Any]:
    errors = _Errors(out / f".errors-{os.getpid()}.txt")
    errors.path.unlink(missing_ok=True)
    fmt = ffcv_format(args.dataset)
    sources, extra = fmt.sources(args, errors)
    for p in targets:  # --overwrite: the old record goes first, so a half-replaced directory never looks complete
        if p.exists():
            p.unlink()
    jpeg = fmt.jpeg
    try:
        for split in SPLITS:
            _write_split(sources[split], out / f"{split}.beton", jpeg=jpeg, args=args, label=split)
        bad = errors.read()
        if bad:
            for p in targets[:2]:
                p.unlink(missing_ok=True)
            raise ConfigError(f"{len(bad)} image(s) could not be read, nothing written; first: {bad[0]}")
    finally:
        errors.path.unlink(missing_ok=True)
    meta = {"format": FFCV_FORMAT, "dataset": args.dataset, **extra,
            "train_size": len(sources["train"]), "val_size": len(sources["val"]),
            "storage": ({"write_mode": "proportion", "max_resolution": args.max_resolution,
                         "jpeg_quality": args.jpeg_quality, "compress_probability": args.compress_probability}
                        if jpeg else {"write_mode": "raw"}),
            "source": fmt.source_name(args)}
    tmp = out / f".{FFCV_META}.partial"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / FFCV_META)
    return meta


def verify(args) -> dict[str, Any]:
    """Header, sample counts and label range of existing files (ConfigError with one line on a problem)."""
    meta = read_ffcv_meta(args.dataset, args.out)
    return meta


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m ham.data.ffcv_write", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=ffcv_datasets())
    p.add_argument("--data-dir", help="the source: ImageNet's data_dir (train/ and val/ class folders), or the "
                                      "directory holding cifar-100-python/; not needed for digits")
    p.add_argument("--out", required=True, help="directory for train.beton, val.beton and ham_ffcv.json")
    p.add_argument("--max-resolution", type=int, default=500, help="imagenet: longest side at most this (500)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="imagenet: JPEG quality (90)")
    p.add_argument("--compress-probability", type=float, default=0.5,
                   help="imagenet: fraction of images stored as JPEG, the rest raw (0.5)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="digits: the validation split (0.2)")
    p.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="writer processes (all cores)")
    p.add_argument("--chunksize", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--verify", action="store_true", help="check existing files (header, counts, labels); write nothing")
    args = p.parse_args(argv)
    checks = [(args.max_resolution >= 16, "--max-resolution must be >= 16"),
              (1 <= args.jpeg_quality <= 100, "--jpeg-quality must be in 1..100"),
              (0 <= args.compress_probability <= 1, "--compress-probability must be in [0, 1]"),
              (0 < args.val_fraction < 1, "--val-fraction must be in (0, 1)"),
              (args.num_workers >= 1, "--num-workers must be >= 1"),
              (args.chunksize >= 1, "--chunksize must be >= 1")]
    for ok, msg in checks:
        if not ok:
            p.error(msg)  # exit 2, argparse's one line after the usage
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.verify:
            meta = verify(args)
            print(f"ok: {args.out}: dataset={meta['dataset']}, {meta['train_size']} train / {meta['val_size']} val "
                  f"images, {meta['num_classes']} classes, labels in range")
        else:
            meta = convert(args)
            print(f"done: {args.out}: {meta['train_size']} train / {meta['val_size']} val images, "
                  f"{meta['num_classes']} classes; train with dataset={args.dataset} dataset.loader=ffcv "
                  f"data_dir={args.out}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no complete file was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
