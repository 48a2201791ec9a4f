"""Datasets on tiny fakes in their real on-disk formats; the loader's determinism, resume position and sharding."""

import pickle
import random
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from ham.data import build_datasets, build_loader, check_dataset
from ham.data.datasets import CIFAR100_MEAN, CIFAR100_STD, shift_image
from ham.errors import ConfigError


# ------------------------------------------------------------------ fakes in the real on-disk formats
class Py2Pickler(pickle._Pickler):
    """Writes `bytes` as Python 2 `str` opcodes, as in the official CIFAR pickles (made with Python 2 cPickle):
    they load as str under encoding='latin1' (torchvision) and as bytes under encoding='bytes' (the loader
    code on the CIFAR page), so one fake serves both readers exactly like the real files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_dump(obj, path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def write_fake_cifar100(root, n_train=20, n_test=10):
    """cifar-100-python/{train,test,meta} with the official keys; images are rows of 3072 uint8 (R, G, B planes)."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        py2_dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                  b"fine_labels": [int(i * 7 % 100) for i in range(n)],
                  b"coarse_labels": [int(i % 20) for i in range(n)],
                  b"filenames": [f"img_{name}_{i}.png".encode() for i in range(n)],
                  b"batch_label": f"{name} batch 1 of 1".encode()}, d / name)
    py2_dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, d / "meta")
    return d


def write_fake_imagenet(root, classes=3, per_class=4):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
                fmt, ext = ("JPEG", "JPEG") if i % 2 == 0 else ("PNG", "png")
                Image.fromarray(arr).save(d / f"img_{i}.{ext}", format=fmt)


class IndexDataset(Dataset):
    """Item i is (tensor [i], i) and counts loads: shows exactly which samples a loader fetched."""

    def __init__(self, n):
        self.n, self.loads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.loads += 1
        return torch.tensor([float(i)]), i


def epoch_batches(loader, epoch, start=0):
    loader.set_epoch(epoch)
    if start:
        loader.set_start_batch(start)
    return list(loader)


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------ CIFAR-100
def test_fake_cifar_has_the_official_keys(tmp_path):
    d = write_fake_cifar100(tmp_path)
    with open(d / "train", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # as the CIFAR page's own loader reads it
    assert set(entry) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
    assert entry[b"data"].shape == (20, 3072) and entry[b"data"].dtype == np.uint8
    with open(d / "meta", "rb") as f:
        assert b"fine_label_names" in pickle.load(f, encoding="bytes")


def test_cifar100_reads_the_real_format(tmp_path):
    d = write_fake_cifar100(tmp_path)
    check_dataset("cifar100", str(tmp_path))
    train, val, info = build_datasets("cifar100", str(tmp_path))
    assert (info.num_classes, info.in_chans, info.img_size, info.train_size, info.val_size) == (100, 3, 32, 20, 10)
    assert train.classes[:2] == ["fine0", "fine1"]
    # the val image (no augmentation) is the stored row as R, G, B planes, normalised
    with open(d / "test", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][3]
    want = torch.tensor(row, dtype=torch.float32).reshape(3, 32, 32) / 255
    want = (want - torch.tensor(CIFAR100_MEAN)[:, None, None]) / torch.tensor(CIFAR100_STD)[:, None, None]
    x, y = val[3]
    assert torch.allclose(x, want, atol=1e-5) and y == 21
    loader = build_loader(train, batch_size=8, train=True, seed=0)
    batches = epoch_batches(loader, 0)
    assert len(loader) == len(batches) == 2  # 20 images, drop_last for training
    assert batches[0][0].shape == (8, 3, 32, 32) and batches[0][1].dtype == torch.int64


def test_cifar100_training_augmentation_is_on_and_seeded(tmp_path):
    write_fake_cifar100(tmp_path)
    train, _, _ = build_datasets("cifar100", str(tmp_path))
    plain, _, _ = build_datasets("cifar100", str(tmp_path), augment=False)
    a = build_loader(train, batch_size=10, train=True, seed=0)
    idx = a.rank_indices(0)[:10]
    (xa, _), = epoch_batches(a, 0)[:1]
    unaugmented = torch.stack([plain[i][0] for i in idx])
    assert not torch.equal(xa, unaugmented)  # random crop + flip changed something
    (xb, _), = epoch_batches(build_loader(train, batch_size=10, train=True, seed=0), 0)[:1]
    assert torch.equal(xa, xb)  # ... reproducibly


def test_cifar100_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    check_dataset("cifar100", str(tmp_path), download=True)  # missing files are fine when downloading
    with pytest.raises(ConfigError) as e:
        build_datasets("cifar100", str(tmp_path), download=True)
    msg = str(e.value)
    assert "\n" not in msg and "cifar-100-python.tar.gz" in msg and str(tmp_path) in msg


# ------------------------------------------------------------------ ImageNet
def test_imagenet_folder_loader(tmp_path):
    write_fake_imagenet(tmp_path)
    check_dataset("imagenet", str(tmp_path))
    train, val, info = build_datasets("imagenet", str(tmp_path), img_size=32)
    assert (info.num_classes, info.in_chans, info.img_size, info.train_size, info.val_size) == (3, 3, 32, 12, 12)
    x, y = next(iter(build_loader(val, batch_size=4, train=False, seed=0)))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 0, 0]  # val is not shuffled
    x, y = next(iter(build_loader(train, batch_size=4, train=True, seed=0)))
    assert x.shape == (4, 3, 32, 32)
    # the DeiT recipe's timm augmentation path (RandAugment, random erasing) builds and runs too
    train2, _, _ = build_datasets("imagenet", str(tmp_path), img_size=32, auto_augment="rand-m9-mstd0.5-inc1",
                                  re_prob=0.25)
    assert train2[0][0].shape == (3, 32, 32)


def test_unknown_dataset_option(tmp_path):
    write_fake_imagenet(tmp_path)
    with pytest.raises(ConfigError, match=r"\['mixup'\].*allowed: auto_augment"):
        build_datasets("imagenet", str(tmp_path), mixup=0.8)
    with pytest.raises(ConfigError, match="interpolation='lanczos' is not allowed; allowed: bilinear"):
        build_datasets("imagenet", str(tmp_path), interpolation="lanczos")


# ------------------------------------------------------------------ missing data, unknown names
@pytest.mark.parametrize("name,expected,how", [
    ("cifar100", "cifar-100-python/train", "https://www.cs.toronto.edu/~kriz/cifar"),
    ("imagenet", "nope/train", "image-net.org"),
])
def test_missing_data_is_one_line_naming_path_and_source(tmp_path, name, expected, how):
    root = tmp_path / "nope"
    with pytest.raises(ConfigError) as e:
        check_dataset(name, str(root))
    msg = str(e.value)
    assert "\n" not in msg and f"data_dir='{root}'" in msg and expected in msg and how in msg
    assert not root.exists()  # no side effects
    if name == "cifar100":
        assert "dataset.download=true" in msg
        with pytest.raises(ConfigError, match="has no CIFAR-100"):
            build_datasets(name, str(root))


def test_unset_data_dir_and_unknown_names():
    with pytest.raises(ConfigError, match="data_dir is not set"):
        check_dataset("imagenet", None)
    with pytest.raises(ConfigError, match="data_dir is not set"):
        build_datasets("cifar100", None, download=True)  # would otherwise download into ./None
    with pytest.raises(ConfigError, match=r"dataset.name='mnist' is not known; allowed: imagenet, cifar100"):
        check_dataset("mnist", None)
    train, _, _ = build_datasets("synthetic", None)
    with pytest.raises(ConfigError, match=r"dataset.loader='ffcv' reads .beton files"):
        build_loader(train, batch_size=4, train=True, seed=0, backend="ffcv")
    with pytest.raises(ConfigError, match=r"dataset.loader='dali' is not known; allowed: torchvision, ffcv"):
        build_loader(train, batch_size=4, train=True, seed=0, backend="dali")


# ------------------------------------------------------------------ digits, synthetic
def test_digits_real_stratified_fixed_split():
    a_tr, a_va, info = build_datasets("digits", None)
    b_tr, b_va, _ = build_datasets("digits", None, augment=False)
    assert (info.num_classes, info.in_chans, info.img_size) == (10, 1, 8)
    assert (info.train_size, info.val_size) == (len(a_tr), len(a_va)) and info.train_size + info.val_size == 1797
    tr, va = set(a_tr.source_index.tolist()), set(a_va.source_index.tolist())
    assert not tr & va and tr | va == set(range(1797))
    assert torch.equal(a_va.x, b_va.x) and torch.equal(a_tr.source_index, b_tr.source_index)
    counts = torch.bincount(a_va.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class (174..183 images per class)
    assert abs(float(a_tr.x.mean())) < 1e-4 and abs(float(a_tr.x.std()) - 1) < 1e-4
    x, y = a_va[0]
    assert x.shape == (1, 8, 8) and 0 <= y < 10


def test_digits_augmentation_is_a_one_pixel_shift():
    train, _, _ = build_datasets("digits", None)
    background = float(train.x.min())
    torch.manual_seed(0)
    seen = set()
    for i in range(40):
        x, _ = train[i]
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if torch.equal(x, shift_image(train.x[i], dy, dx, background))]
        assert shifts, f"sample {i} is not a <=1-pixel shift of the original"
        seen.add(shifts[0])
    assert len(seen) >= 5  # the shifts really vary


def test_synthetic_is_deterministic_and_configurable():
    a_tr, a_va, info = build_datasets("synthetic", None, img_size=16, num_classes=7, in_chans=2, train_size=30,
                                      val_size=9)
    b_tr, _, _ = build_datasets("synthetic", None, img_size=16, num_classes=7, in_chans=2, train_size=30,
                                val_size=9)
    assert (info.num_classes, info.in_chans, info.img_size, info.train_size, info.val_size) == (7, 2, 16, 30, 9)
    assert a_tr[3][0].shape == (2, 16, 16) and torch.equal(a_tr[3][0], b_tr[3][0])
    assert not torch.equal(a_tr[3][0], a_tr[4][0]) and not torch.equal(a_tr[0][0], a_va[0][0])
    assert sorted({a_tr[i][1] for i in range(30)}) == list(range(7))


# ------------------------------------------------------------------ loader: resume position
def _resume_matches(train_ds, *, workers=0, batch_size=4, epoch=2, k=2):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    full = epoch_batches(build_loader(train_ds, batch_size=batch_size, train=True, seed=3, num_workers=workers),
                         epoch)
    # a "restarted process": a new loader, and whatever the training RNGs did in between
    torch.manual_seed(12345), random.seed(5), np.random.seed(7)
    resumed = epoch_batches(build_loader(train_ds, batch_size=batch_size, train=True, seed=3,
                                         num_workers=workers), epoch, start=k)
    assert len(full) >= k + 1
    assert_same_batches(full[k:], resumed)
    return full


def test_resumed_run_sees_identical_batches_digits():
    train, _, _ = build_datasets("digits", None)
    full = _resume_matches(train, batch_size=16, k=5)
    other = epoch_batches(build_loader(train, batch_size=16, train=True, seed=3), 3)
    assert not torch.equal(full[0][1], other[0][1])  # a new epoch is a new order


def test_resumed_run_sees_identical_batches_cifar_with_workers(tmp_path):
    write_fake_cifar100(tmp_path)
    train, _, _ = build_datasets("cifar100", str(tmp_path))
    _resume_matches(train, workers=2)
    # persistent workers follow set_epoch / set_start_batch, and give what the main process would
    pooled = build_loader(train, batch_size=4, train=True, seed=3, num_workers=2)
    inline = build_loader(train, batch_size=4, train=True, seed=3)
    for epoch, start in ((0, 0), (1, 3), (1, 0)):
        assert_same_batches(epoch_batches(pooled, epoch, start), epoch_batches(inline, epoch, start))


def test_resumed_run_sees_identical_batches_timm_randaugment(tmp_path):
    write_fake_imagenet(tmp_path)  # RandAugment and random erasing draw from python's `random` and torch
    train, _, _ = build_datasets("imagenet", str(tmp_path), img_size=32, auto_augment="rand-m9-mstd0.5-inc1",
                                 re_prob=0.5)
    _resume_matches(train, batch_size=3, k=1)


def test_skipped_batches_are_not_loaded_and_skip_is_one_shot():
    ds = IndexDataset(40)
    loader = build_loader(ds, batch_size=4, train=True, seed=0)
    full = epoch_batches(loader, 1)
    ds.loads = 0
    resumed = epoch_batches(loader, 1, start=7)
    assert ds.loads == 3 * 4 and len(loader) == 10
    assert_same_batches(full[7:], resumed)
    assert len(list(loader)) == 10  # the next pass starts at batch 0 again
    with pytest.raises(ValueError):
        loader.set_start_batch(11)


def test_loading_does_not_touch_the_training_rngs():
    train, _, _ = build_datasets("digits", None)
    loader = build_loader(train, batch_size=16, train=True, seed=0)
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    want = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    epoch_batches(loader, 0)
    assert (torch.rand(3), random.random(), np.random.rand())[1:] == want[1:]
    torch.manual_seed(0)
    epoch_batches(loader, 0)
    assert torch.equal(torch.rand(3), want[0])


def test_order_depends_on_seed_and_epoch_only():
    ds = IndexDataset(30)
    a = build_loader(ds, batch_size=5, train=True, seed=1)
    assert a.rank_indices(0) == build_loader(ds, batch_size=5, train=True, seed=1).rank_indices(0)
    assert a.rank_indices(0) != a.rank_indices(1) and a.rank_indices(0) != build_loader(
        ds, batch_size=5, train=True, seed=2).rank_indices(0)
    assert build_loader(ds, batch_size=5, train=False, seed=1).rank_indices(4) == list(range(30))


# ------------------------------------------------------------------ loader: rank partitioning
def _labels_seen(loader, epoch):
    return [int(i) for _, y in epoch_batches(loader, epoch) for i in y]


@pytest.mark.parametrize("train", [False, True])
def test_two_ranks_are_disjoint_and_cover_everything(train):
    ds = IndexDataset(50)
    loaders = [build_loader(ds, batch_size=5, train=train, seed=0, rank=r, world_size=2, drop_last=False)
               for r in (0, 1)]
    seen = [_labels_seen(ld, 3) for ld in loaders]
    assert [len(ld) for ld in loaders] == [5, 5] and [len(s) for s in seen] == [25, 25]
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(50))


def test_uneven_split_pads_to_equal_counts_like_distributed_sampler():
    ds = IndexDataset(53)
    seen = [_labels_seen(build_loader(ds, batch_size=4, train=True, seed=0, rank=r, world_size=4,
                                      drop_last=False), 0) for r in range(4)]
    assert [len(s) for s in seen] == [14] * 4  # ceil(53 / 4): 3 samples are repeated to even the ranks out
    flat = [i for s in seen for i in s]
    assert set(flat) == set(range(53)) and len(flat) - len(set(flat)) == 3
    # training default drop_last=True: every rank has the same number of FULL batches
    lens = [len(build_loader(ds, batch_size=4, train=True, seed=0, rank=r, world_size=4)) for r in range(4)]
    assert lens == [3] * 4
