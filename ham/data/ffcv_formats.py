"""How each dataset is stored in ffcv files and read back: one class per dataset, named by the `ffcv` fact of its
declaration (ham/data/options.py). The writer (ham/data/ffcv_write.py) asks it for the source images, the loader
(ham/data/ffcv_loader.py) for the decoding of each split; neither knows dataset names. Torch-free at import
(the config check reads `needs_source` and `fixed_classes`).

A new dataset gets ffcv files by adding a class here and `ffcv="ham.data.ffcv_formats:<Class>"` to its declaration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ham.errors import ConfigError

SPLITS = ("train", "val")


class FFCVFormat:
    jpeg = False            # the writer stores a share of the images as JPEG (ImageNet); else raw pixels
    needs_source = True     # False: the images ship with a package (no --data-dir)
    fixed_classes: int | None = None  # the class count every copy of the dataset has (ImageNet folders vary)

    def sources(self, args: Any, errors: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """{split: indexable (uint8 HWC image, label)} in the torchvision dataset's order, and extra metadata
        for ham_ffcv.json (at least num_classes)."""
        raise NotImplementedError

    def source_name(self, args: Any) -> str:
        return str(Path(args.data_dir).resolve())

    def decoding(self, cfg: Any, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
        """(train split's FFCVLoader keywords, val split's, the image size the model sees)."""
        raise NotImplementedError


class ImageNetFFCV(FFCVFormat):
    """ffcv-imagenet's storage (longest side <= --max-resolution, a share JPEG) and decoders: RandomResizedCrop +
    flip for training (optionally progressive resizing), centre crop for validation."""
    jpeg = True

    def sources(self, args, errors):
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        from ham.data.catalog import check_dataset
        from ham.data.ffcv_write import FolderImages

        data_dir = Path(args.data_dir)
        check_dataset("imagenet", str(data_dir))
        classes, idx = find_classes(str(data_dir / "train"))
        val_classes, _ = find_classes(str(data_dir / "val"))
        if classes != val_classes:
            raise ConfigError(f"--data-dir {data_dir}: train and val have different class folders ({len(classes)} "
                              f"vs {len(val_classes)})")
        out = {s: FolderImages(make_dataset(str(data_dir / s), idx, IMG_EXTENSIONS), errors) for s in SPLITS}
        return out, {"num_classes": len(classes), "classes": classes}

    def decoding(self, cfg, meta):
        from ham.data.datasets import IMAGENET_MEAN, IMAGENET_STD
        from ham.data.ffcv_loader import progressive_resolution, ramp_epochs

        ds, f = cfg.dataset, cfg.dataset.ffcv
        size = ds.img_size or 224
        norm = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        resolution = None
        if f.progressive.enabled:
            p = f.progressive
            start_epoch, end_epoch = ramp_epochs(p, cfg.trainer.epochs)

            def resolution(epoch, _p=p, _s=start_epoch, _e=end_epoch):
                return progressive_resolution(epoch, start_res=_p.start_res, end_res=_p.end_res, start_epoch=_s,
                                              end_epoch=_e)
        train_res = resolution(0) if resolution else size
        train = dict(decoder="random_resized_crop" if ds.augment else "center_crop", img_size=train_res, flip=True,
                     resolution=resolution if ds.augment else None, crop_pct=ds.options.crop_pct, **norm)
        val = dict(decoder="center_crop", img_size=f.eval_img_size or size, crop_pct=ds.options.crop_pct, **norm)
        return train, val, size


class CIFAR100FFCV(FFCVFormat):
    """Raw 32x32 pixels; training: 4-pixel translation + flip (the torchvision path's augmentation)."""
    fixed_classes = 100

    def sources(self, args, errors):
        from ham.data.catalog import check_dataset
        from ham.data.datasets import _cifar100_class
        from ham.data.ffcv_write import ArrayImages

        check_dataset("cifar100", str(args.data_dir))
        cls = _cifar100_class()
        out = {}
        for split in SPLITS:
            d = cls(str(args.data_dir), train=split == "train")
            out[split] = ArrayImages(d.data, d.targets)  # uint8 [N, 32, 32, 3]
        return out, {"num_classes": 100}

    def decoding(self, cfg, meta):
        from ham.data.datasets import CIFAR100_MEAN, CIFAR100_STD

        ds = cfg.dataset
        norm = dict(mean=CIFAR100_MEAN, std=CIFAR100_STD)
        train = dict(decoder="fixed", img_size=32, translate=4 if ds.augment else 0, flip=bool(ds.augment), **norm)
        return train, dict(decoder="fixed", img_size=32, **norm), 32


class DigitsFFCV(FFCVFormat):
    """scikit-learn's 8x8 digits as their exact ink levels 0..16 (stored in 3 channels, read as one), split as
    ham.data.datasets splits them (--val-fraction); training: the random shift of the torchvision path."""
    needs_source = False
    fixed_classes = 10

    def sources(self, args, errors):
        import numpy as np
        import torch

        from ham.data.datasets import digits_split, load_digits_arrays
        from ham.data.ffcv_write import ArrayImages

        images, target = load_digits_arrays()
        y = torch.tensor(target, dtype=torch.int64)
        tr, va = digits_split(y, args.val_fraction)
        ink = images.astype(np.uint8)  # the original 0..16 levels, exact
        rgb = np.repeat(ink[..., None], 3, axis=-1)  # RGBImageField stores 3 channels; the loader reads one
        x = torch.tensor(images, dtype=torch.float32)[tr] / 16.0
        extra = {"num_classes": 10, "val_fraction": args.val_fraction, "ink_max": 16.0,
                 "mean": float(x.mean()), "std": float(x.std())}  # the torchvision path's normalisation, same numbers
        return {"train": ArrayImages(rgb[tr.numpy()], target[tr.numpy()]),
                "val": ArrayImages(rgb[va.numpy()], target[va.numpy()])}, extra

    def source_name(self, args):
        return "sklearn.datasets.load_digits"

    def decoding(self, cfg, meta):
        ds, opts = cfg.dataset, cfg.dataset.options
        if abs(float(meta["val_fraction"]) - float(opts.val_fraction)) > 1e-12:
            raise ConfigError(f"dataset.options.val_fraction={opts.val_fraction} but data_dir={cfg.data_dir!r} was "
                              f"written with {meta['val_fraction']}; allowed: {meta['val_fraction']}, or rewrite "
                              f"with --val-fraction {opts.val_fraction}")
        norm = dict(mean=(meta["mean"],), std=(meta["std"],), scale=float(meta["ink_max"]), gray=True)
        train = dict(decoder="fixed", img_size=8, translate=int(opts.shift) if ds.augment else 0, **norm)
        return train, dict(decoder="fixed", img_size=8, **norm), 8


def ffcv_format(dataset: str) -> FFCVFormat | None:
    """The dataset's ffcv format (its declaration's `ffcv` fact), or None: no ffcv files for it."""
    from ham import registry

    target = registry.fact("dataset", dataset, "ffcv")
    return registry.resolve(target)() if target else None


def ffcv_datasets() -> tuple[str, ...]:
    from ham import registry

    return registry.named_with("dataset", "ffcv")
