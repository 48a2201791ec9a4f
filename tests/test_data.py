"""Datasets on tiny fakes in their real on-disk formats; the loader's determinism, resume and sharding."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ham.data import build_datasets, build_loader, check_dataset
from ham.errors import ConfigError


def write_fake_cifar100(root, n_train=20, n_test=10):
    """The official python-version layout. The real pickles come from Python 2, whose str keys load as str under
    encoding='latin1' (as torchvision reads them); writing str keys from Python 3 reproduces that."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": [int(i % 100) for i in range(n)], "coarse_labels": [int(i % 20) for i in range(n)],
                 "filenames": [f"img{i}.png".encode() for i in range(n)], "batch_label": b"fake"}
        with open(d / name, "wb") as f:
            pickle.dump(entry, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     "coarse_label_names": [f"s{i}".encode() for i in range(20)]}, f)


def write_fake_imagenet(root, classes=3, per_class=4):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"img_{i}.JPEG", format="JPEG")


def test_cifar100_loader_on_real_format_fake(tmp_path):
    write_fake_cifar100(tmp_path)
    check_dataset("cifar100", str(tmp_path))
    train, val, info = build_datasets("cifar100", str(tmp_path))
    assert (info.num_classes, info.in_chans, info.img_size, info.train_size, info.val_size) == (100, 3, 32, 20, 10)
    loader = build_loader(train, batch_size=8, train=True, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64 and len(loader) == 2


def test_imagenet_folder_loader(tmp_path):
    write_fake_imagenet(tmp_path)
    check_dataset("imagenet", str(tmp_path))
    train, val, info = build_datasets("imagenet", str(tmp_path), img_size=32)
    assert info.num_classes == 3 and info.train_size == 12
    x, y = next(iter(build_loader(val, batch_size=4, train=False, seed=0)))
    assert x.shape == (4, 3, 32, 32)
    # the DeiT recipe's timm augmentation path builds too
    train2, _, _ = build_datasets("imagenet", str(tmp_path), img_size=32, auto_augment="rand-m9-mstd0.5-inc1",
                                  re_prob=0.25)
    assert train2[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("name,hint", [("cifar100", "cifar-100-python"), ("imagenet", "train")])
def test_missing_data_is_one_line_naming_path(tmp_path, name, hint):
    with pytest.raises(ConfigError) as e:
        check_dataset(name, str(tmp_path / "nope"))
    assert hint in str(e.value) and "nope" in str(e.value) and "\n" not in str(e.value)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="allowed"):
        check_dataset("mnist", None)


def test_digits_real_and_deterministic_split():
    a_tr, a_va, info = build_datasets("digits", None)
    b_tr, b_va, _ = build_datasets("digits", None)
    assert info.train_size + info.val_size == 1797 and info.num_classes == 10
    assert torch.equal(a_va.x, b_va.x) and torch.equal(a_tr.y, b_tr.y)
    counts = torch.bincount(a_va.y, minlength=10)
    assert counts.min() >= 30  # stratified


def _epoch_batches(loader, epoch, start=0):
    loader.set_epoch(epoch)
    loader.set_start_batch(start)
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_position_sees_identical_batches(workers):
    train, _, _ = build_datasets("digits", None, augment=True)
    loader = build_loader(train, batch_size=16, train=True, seed=3, num_workers=workers)
    full = _epoch_batches(loader, 2)
    torch.manual_seed(12345)  # whatever the training RNG does, augmentation is keyed by (seed, epoch, index)
    resumed = _epoch_batches(loader, 2, start=5)
    assert len(resumed) == len(full) - 5
    for (xa, ya), (xb, yb) in zip(full[5:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = _epoch_batches(loader, 3)
    assert not torch.equal(full[0][1], other_epoch[0][1])


def test_loader_does_not_consume_global_rng():
    train, _, _ = build_datasets("digits", None)
    loader = build_loader(train, batch_size=16, train=True, seed=0)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    _epoch_batches(loader, 0)
    assert torch.equal(torch.rand(3), want)


def test_ranks_partition_the_data():
    train, _, _ = build_datasets("synthetic", None, train_size=50)
    seen = []
    for rank in (0, 1):
        loader = build_loader(train, batch_size=5, train=False, seed=0, rank=rank, world_size=2, drop_last=False)
        assert len(loader) == 5
        seen.append([int(i) for b in loader.batches for i, _ in [k for k in b]])
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(50))
