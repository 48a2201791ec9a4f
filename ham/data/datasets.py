"""Datasets: imagenet (ImageFolder), cifar100 (torchvision), digits (scikit-learn, embedded), synthetic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ham.errors import ConfigError

DATASET_NAMES = ("imagenet", "cifar100", "digits", "synthetic")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    train_size: int
    val_size: int


def check_dataset(name: str, data_dir: str | None) -> None:
    """Cheap existence check, no side effects; raises ConfigError with one line."""
    if name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name={name!r} is not known; allowed: {', '.join(DATASET_NAMES)}")
    if name in ("digits", "synthetic"):
        return
    if not data_dir:
        raise ConfigError(f"data_dir is not set; dataset {name} needs it (data_dir=/path or env HAM_DATA_DIR)")
    root = Path(data_dir)
    if name == "cifar100":
        need = root / "cifar-100-python" / "train"
        if not need.is_file():
            raise ConfigError(f"data_dir={data_dir} has no CIFAR-100 (expected {need}); get it with "
                              f"dataset.download=true or from {CIFAR_URL} (extract into data_dir)")
    elif name == "imagenet":
        for split in ("train", "val"):
            d = root / split
            if not d.is_dir() or not any(p.is_dir() for p in d.iterdir()):
                raise ConfigError(f"data_dir={data_dir} has no ImageNet {split} split (expected class folders in "
                                  f"{d}); download ILSVRC2012 from image-net.org and arrange it as "
                                  f"data_dir/{{train,val}}/<class>/<image>.JPEG")


def _allow_download(name: str, data_dir: str | None, download: bool) -> None:
    if download and name == "cifar100":
        return
    check_dataset(name, data_dir)


def build_datasets(name: str, data_dir: str | None, *, img_size: int | None = None, augment: bool = True,
                   download: bool = False, **options: Any) -> tuple[Dataset, Dataset, DatasetInfo]:
    _allow_download(name, data_dir, download)
    builder = {"imagenet": _imagenet, "cifar100": _cifar100, "digits": _digits, "synthetic": _synthetic}[name]
    try:
        return builder(data_dir, img_size=img_size, augment=augment, download=download, **options)
    except TypeError as e:
        raise ConfigError(f"dataset.options for {name} are not accepted: {e}") from None


# ------------------------------------------------------------------ ImageNet
def imagenet_transforms(img_size: int, augment: bool, *, auto_augment: str | None = None, re_prob: float = 0.0,
                        interpolation: str = "bilinear", crop_pct: float = 0.875):
    from torchvision import transforms as T

    if auto_augment or re_prob:
        from timm.data import create_transform  # DeiT recipe: RandAugment + random erasing

        train = create_transform(img_size, is_training=True, auto_augment=auto_augment, re_prob=re_prob,
                                 interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    else:
        train = T.Compose([T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    val = T.Compose([T.Resize(int(round(img_size / crop_pct))), T.CenterCrop(img_size), T.ToTensor(),
                     T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return (train if augment else val), val


def _imagenet(data_dir, *, img_size=None, augment=True, download=False, **options):
    from torchvision.datasets import ImageFolder

    img_size = img_size or 224
    train_tf, val_tf = imagenet_transforms(img_size, augment, **options)
    train = ImageFolder(str(Path(data_dir) / "train"), transform=train_tf)
    val = ImageFolder(str(Path(data_dir) / "val"), transform=val_tf)
    if train.classes != val.classes:
        raise ConfigError(f"data_dir={data_dir}: train and val have different class folders")
    return train, val, DatasetInfo("imagenet", len(train.classes), 3, img_size, len(train), len(val))


# ------------------------------------------------------------------ CIFAR-100
def _cifar100_class():
    from torchvision.datasets import CIFAR100

    class CIFAR100Files(CIFAR100):
        """torchvision's CIFAR100 without the md5 gate: any file in the official pickle format loads (a corrupt
        file still fails, at unpickling). Lets tests use small fakes in the real on-disk format."""

        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            import pickle

            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR100Files


def _cifar100(data_dir, *, img_size=None, augment=True, download=False):
    from torchvision import transforms as T

    CIFAR100 = _cifar100_class()
    img_size = img_size or 32
    norm = [T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    resize = [T.Resize(img_size)] if img_size != 32 else []
    train_tf = T.Compose([*resize, T.RandomCrop(img_size, padding=4), T.RandomHorizontalFlip(), *norm]) \
        if augment else T.Compose([*resize, *norm])
    val_tf = T.Compose([*resize, *norm])
    train = CIFAR100(str(data_dir), train=True, transform=train_tf, download=download)
    val = CIFAR100(str(data_dir), train=False, transform=val_tf, download=download)
    return train, val, DatasetInfo("cifar100", 100, 3, img_size, len(train), len(val))


# ------------------------------------------------------------------ digits (embedded, real)
class TensorImages(Dataset):
    """Images already as a float tensor [N, C, H, W]; optional random shift by up to `shift` pixels."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, shift: int = 0):
        self.x, self.y, self.shift = x, y, shift

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i]
        if self.shift:
            dx, dy = torch.randint(-self.shift, self.shift + 1, (2,)).tolist()
            img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
            # zero what rolled over the border (a shift, not a rotation of the content)
            if dy > 0:
                img[:, :dy] = 0
            elif dy < 0:
                img[:, dy:] = 0
            if dx > 0:
                img[:, :, :dx] = 0
            elif dx < 0:
                img[:, :, dx:] = 0
        return img, int(self.y[i])


def _digits(data_dir, *, img_size=None, augment=True, download=False, val_fraction: float = 0.2):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    # deterministic stratified split, independent of the run's seed
    g = torch.Generator().manual_seed(1234)
    train_idx, val_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr, va = torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    if img_size and img_size != 8:
        x = torch.nn.functional.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    size = img_size or 8
    train = TensorImages(x[tr].clone(), y[tr].clone(), shift=1 if augment else 0)
    val = TensorImages(x[va].clone(), y[va].clone())
    return train, val, DatasetInfo("digits", 10, 1, size, len(train), len(val))


# ------------------------------------------------------------------ synthetic
class SyntheticImages(Dataset):
    """Deterministic random images: item i is a function of (seed, i) only; label i % num_classes."""

    def __init__(self, n: int, num_classes: int, in_chans: int, img_size: int, seed: int):
        self.n, self.num_classes, self.shape, self.seed = n, num_classes, (in_chans, img_size, img_size), seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = i % self.num_classes
        img = torch.randn(self.shape, generator=g) + 0.5 * label / self.num_classes  # weakly learnable
        return img, label


def _synthetic(data_dir, *, img_size=None, augment=False, download=False, num_classes: int = 10,
               in_chans: int = 3, train_size: int = 256, val_size: int = 64):
    size = img_size or 32
    train = SyntheticImages(train_size, num_classes, in_chans, size, seed=0)
    val = SyntheticImages(val_size, num_classes, in_chans, size, seed=1)
    return train, val, DatasetInfo("synthetic", num_classes, in_chans, size, train_size, val_size)
