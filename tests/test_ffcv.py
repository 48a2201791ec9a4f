"""The ffcv pipeline: converter round trip and atomicity, the loader against the torchvision path (order, the
deterministic val images, augmentation as a pure function of (seed, epoch), resume), a training run through
dataset.loader=ffcv (learns; SIGKILL + resume is bit-exact), 2-rank gloo DDP shards, one-line errors.

Skipped only when ffcv is not installed AND HAM_REQUIRE_FFCV is unset; CI sets it, so there a missing ffcv fails.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

if importlib.util.find_spec("ffcv") is None and not os.environ.get("HAM_REQUIRE_FFCV"):
    pytest.skip("ffcv is not installed (uv sync --extra ffcv); set HAM_REQUIRE_FFCV=1 to fail instead",
                allow_module_level=True)

from ham.config import compose  # noqa: E402
from ham.data.datasets import build_datasets, imagenet_transforms  # noqa: E402
from ham.data.ffcv_loader import build_ffcv_loaders, progressive_resolution  # noqa: E402
from ham.data.ffcv_write import main as write_main  # noqa: E402
from ham.data.loader import build_loader  # noqa: E402
from ham.train.distributed import DistEnv  # noqa: E402

# numba's dispatcher finalizers raise a harmless KeyError at garbage collection (compiled closures of ffcv's codegen)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
CPU = DistEnv()


def _smooth_image(rng, h, w):
    """Low-frequency colour fields: resampling filters agree on them, JPEG keeps them well."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(1, 4, 3)
        img[..., c] = 127.5 + 100 * np.sin(a * 3 * yy + p) * np.cos(b * 3 * xx + p)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small ImageFolder (3 classes; 6 train, 2 val images each; 96x128 px)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 2)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(_smooth_image(rng, 96, 128)).save(d / f"img{i}.png")
    return root


def _convert(args):
    assert write_main([*args, "--num-workers", "1"]) == 0


@pytest.fixture(scope="module")
def digits_beton(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_beton")
    _convert(["--dataset", "digits", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def folder_betons(folder, tmp_path_factory):
    raw, jpg = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("jpg")
    _convert(["--dataset", "imagenet", "--data-dir", str(folder), "--out", str(raw), "--compress-probability", "0"])
    _convert(["--dataset", "imagenet", "--data-dir", str(folder), "--out", str(jpg), "--compress-probability", "1",
              "--jpeg-quality", "90"])
    return raw, jpg


def _read_stored(path, n):
    """Every stored image (all one size here) and label, in file order, through ffcv and our decoder with no
    augmentation."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor

    from ham.data.ffcv_ops import SampleSeeds, SeededFixedSize

    loader = Loader(str(path), batch_size=7, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": [SeededFixedSize(SampleSeeds(n))], "label": [IntDecoder(), ToTensor()]})
    images, labels = [], []
    for img, lab in loader:
        images += [np.array(i) for i in img]
        labels += lab.view(-1).tolist()
    assert len(labels) == n
    return images, labels


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# ------------------------------------------------------------------ converter
def test_round_trip_raw_exact_jpeg_close_labels_equal(folder, folder_betons, digits_beton):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    raw, jpg = folder_betons
    for split in ("train", "val"):
        ref = ImageFolder(str(folder / split))
        want = [np.asarray(Image.open(p).convert("RGB")) for p, _ in ref.samples]
        for out, exact in ((raw, True), (jpg, False)):
            got, labels = _read_stored(out / f"{split}.beton", len(ref))
            assert labels == ref.targets
            for g, w in zip(got, want):
                if exact:
                    assert np.array_equal(g, w)
                else:
                    assert g.shape == w.shape and _psnr(g, w) > 30
    meta = json.loads((raw / "ham_ffcv.json").read_text())
    assert meta["num_classes"] == 3 and meta["train_size"] == 18 and meta["val_size"] == 6
    # digits: the raw ink levels 0..16 and the labels of the torchvision path's split, in its order
    from sklearn.datasets import load_digits

    from ham.data.datasets import digits_split

    d = load_digits()
    tr, va = digits_split(torch.tensor(d.target), 0.2)
    for split, idx in (("train", tr), ("val", va)):
        got, labels = _read_stored(digits_beton / f"{split}.beton", len(idx))
        assert labels == d.target[idx.numpy()].tolist()
        assert all(np.array_equal(g[..., 0], d.images[i].astype(np.uint8)) for g, i in zip(got, idx.tolist()))


def test_converter_refuses_overwrite_verifies_and_is_atomic(tmp_path, digits_beton, capsys):
    out = tmp_path / "d"
    shutil.copytree(digits_beton, out)
    cmd = [sys.executable, "-m", "ham.data.ffcv_write", "--dataset", "digits", "--out", str(out)]
    # the refusals in-process (the converter's own entry, its exit code and stderr); the SIGKILL below is a process
    capsys.readouterr()
    assert write_main(cmd[3:]) == 2
    assert "--overwrite" in capsys.readouterr().err.strip().splitlines()[-1]
    assert write_main(["--dataset", "digits", "--out", str(out), "--verify"]) == 0
    with open(out / "val.beton", "r+b") as f:  # truncate: a damaged file
        f.truncate(4000)
    capsys.readouterr()
    code = write_main([*cmd[3:], "--verify"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "val.beton is damaged" in lines[0], err
    # SIGKILL during --overwrite: nothing that looks complete is left
    v = subprocess.Popen([*cmd, "--overwrite", "--num-workers", "1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    deadline = time.time() + 600  # imports torch and ffcv first: minutes on a loaded machine
    while time.time() < deadline and not (out / ".train.beton.partial").exists() and v.poll() is None:
        time.sleep(0.005)
    assert (out / ".train.beton.partial").exists(), "the converter never started writing"
    v.send_signal(signal.SIGKILL)
    v.wait()
    assert not any((out / n).exists() for n in ("train.beton", "val.beton", "ham_ffcv.json"))
    from ham.cli import main as train_main

    capsys.readouterr()
    code = train_main(["experiment=quickstart", "dataset.loader=ffcv", f"data_dir={out}",
                       f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "has no train.beton" in err and "ham.data.ffcv_write" in err


# ------------------------------------------------------------------ loader vs the torchvision path
def _loaders(data_dir, *extra, batch=32, env=CPU, workers=1):
    cfg = compose(["experiment=quickstart", "dataset.loader=ffcv", f"data_dir={data_dir}",
                   f"dataset.ffcv.num_workers={workers}", *extra])
    return build_ffcv_loaders(cfg, env, per_rank_batch=batch, eval_batch=batch, channels_last=False)


def _epoch(loader, epoch, start=0):
    loader.set_epoch(epoch)
    loader.set_start_batch(start)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_digits_same_order_and_val_images_as_torchvision(digits_beton):
    train, val, info = _loaders(digits_beton, "dataset.augment=false")
    tv_train, tv_val, tv_info = build_datasets("digits", None, augment=False)
    assert (info.num_classes, info.in_chans, info.img_size, info.train_size, info.val_size) == \
        (tv_info.num_classes, tv_info.in_chans, tv_info.img_size, tv_info.train_size, tv_info.val_size)
    tl = build_loader(tv_train, batch_size=32, train=True, seed=0)
    vl = build_loader(tv_val, batch_size=32, train=False, seed=0)
    for ours, theirs in ((_epoch(train, 3), _epoch(tl, 3)), (_epoch(val, 0), _epoch(vl, 0))):
        assert len(ours) == len(theirs)
        for (x, y), (tx, ty) in zip(ours, theirs):
            assert torch.equal(y, ty)
            torch.testing.assert_close(x, tx, rtol=0, atol=1e-6)  # same pixels, same normalisation


def test_augmentation_is_a_function_of_seed_and_epoch_and_resume_skips(digits_beton):
    a, _, _ = _loaders(digits_beton, workers=1)
    b, _, _ = _loaders(digits_beton, workers=2)  # other thread count, other loader object
    ea, eb = _epoch(a, 2), _epoch(b, 2)
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(ea, eb))
    tail = _epoch(b, 2, start=17)  # resumed mid-epoch: the remaining batches, same images, same augmentation
    assert len(tail) == len(ea) - 17
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(ea[17:], tail))
    other = _epoch(a, 3)
    assert not torch.equal(ea[0][0], other[0][0])
    clean, _, _ = _loaders(digits_beton, "dataset.augment=false")
    plain = _epoch(clean, 2)
    assert all(torch.equal(y, v) for (_, y), (_, v) in zip(ea, plain))  # augmentation never reorders
    assert not all(torch.equal(x, u) for (x, _), (u, _) in zip(ea, plain))  # ...but shifts the images


def test_imagenet_val_center_crop_matches_torchvision_and_progressive_resizing(folder, folder_betons):
    from torchvision.datasets import ImageFolder

    raw, _ = folder_betons
    extra = ["dataset=imagenet", "model=small_cnn", "dataset.img_size=64", "dataset.options.crop_pct=0.875"]
    train, val, info = _loaders(raw, *extra, batch=4)
    assert (info.num_classes, info.train_size, info.val_size, info.img_size) == (3, 18, 6, 64)
    _, tv_val = imagenet_transforms(64, augment=False, crop_pct=0.875)
    ref = ImageFolder(str(folder / "val"), transform=tv_val)
    got = torch.cat([x for x, _ in _epoch(val, 0)])
    want = torch.stack([ref[i][0] for i in range(len(ref))])
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    err = ((got - want) * std * 255).pow(2).mean()  # in 0..255 pixel units
    assert got.shape == want.shape and 10 * torch.log10(255 ** 2 / err) > 30  # INTER_AREA vs PIL bilinear
    batches = _epoch(train, 0)
    assert all(x.shape == (4, 3, 64, 64) for x, _ in batches)
    assert len(batches) == 18 // 4
    # progressive resizing: the training resolution follows the ramp, rounded to multiples of 32
    assert [progressive_resolution(e, start_res=160, end_res=192, start_epoch=65, end_epoch=76)
            for e in (0, 65, 70, 76, 88)] == [160, 160, 160 + 32 * round((192 - 160) * 5 / 11 / 32), 192, 192]
    prog, _, _ = _loaders(raw, *extra, "dataset.ffcv.progressive.enabled=true", "dataset.ffcv.progressive.start_res=32",
                          "dataset.ffcv.progressive.end_res=64", "dataset.ffcv.progressive.start_epoch=1",
                          "dataset.ffcv.progressive.end_epoch=2", "trainer.epochs=3", batch=4)
    assert [_epoch(prog, e)[0][0].shape[-1] for e in (0, 1, 2, 1)] == [32, 32, 64, 32]


# ------------------------------------------------------------------ training through dataset.loader=ffcv
FFCV_ARGS = ["experiment=quickstart", "dataset.loader=ffcv", "trainer.epochs=3", "trainer.checkpoint_every_steps=10",
             "trainer.eval_every_epochs=3"]


def _learns_through_ffcv(tmp_path, digits_beton, capsys):
    """The quickstart through dataset.loader=ffcv (in-process, one thread) learns like the torchvision loader."""
    from ham.cli import main as train_main

    args = [*FFCV_ARGS, f"data_dir={digits_beton}"]
    ref = tmp_path / "ref"
    assert train_main([*args, f"hydra.run.dir={ref}"]) == 0, capsys.readouterr().err[-3000:]
    top1 = json.loads((ref / "summary.json").read_text())["val/top1"]
    tv = tmp_path / "tv"  # the torchvision loader, same recipe (only its accuracy is compared)
    assert train_main([*(a for a in args if not a.startswith(("dataset.loader", "data_dir"))),
                       f"hydra.run.dir={tv}"]) == 0
    tv_top1 = json.loads((tv / "summary.json").read_text())["val/top1"]
    assert top1 > 90 and abs(top1 - tv_top1) < 4, (top1, tv_top1)  # the torchvision loader's band
    return args, ref


def test_quickstart_learns_through_ffcv(tmp_path, digits_beton, capsys):
    _learns_through_ffcv(tmp_path, digits_beton, capsys)


@pytest.mark.slow  # ~1.5 min (an ffcv process start-up); resumes mid-epoch through ffcv: the loader test above
# (test_augmentation_is_a_function_of_seed_and_epoch_and_resume_skips); SIGKILL + bit-exact resume: test_train_e2e
def test_quickstart_learns_through_ffcv_and_sigkill_resume_is_bit_exact(tmp_path, digits_beton, capsys):
    # the killed run is a real `python train.py` process; the reference, the torchvision run and the resume run
    # in-process (one thread, like the subprocess: bit-identical)
    from ham.cli import main as train_main

    args, ref = _learns_through_ffcv(tmp_path, digits_beton, capsys)
    victim = tmp_path / "victim"
    v = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={victim}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not list((victim / "checkpoints").glob("ckpt_*.pt")):
        time.sleep(0.01)
    time.sleep(0.2)
    v.send_signal(signal.SIGKILL)
    v.wait()
    assert not (victim / "summary.json").exists()
    capsys.readouterr()
    code = train_main([*args, f"hydra.run.dir={victim}"])
    err = capsys.readouterr().err
    assert code == 0 and "resumed from" in err, err[-3000:]
    step = int(err.split("resumed from")[1].split("(step ")[1].split(",")[0])
    a = torch.load(ref / "model_final.pt", weights_only=True)
    b = torch.load(victim / "model_final.pt", weights_only=True)
    assert 0 < step < 3 * 44 and all(torch.equal(a[k], b[k]) for k in a), step


def _image_keys(digits_beton):
    """Each training image -> its indices in the torchvision set, keyed by its integer ink levels and label."""
    tv_train, _, _ = build_datasets("digits", None, augment=False)
    meta = json.loads((digits_beton / "ham_ffcv.json").read_text())

    def key(x, y):  # back to the integer ink levels 0..16: exact, whatever the float rounding
        ink = torch.round((x * meta["std"] + meta["mean"]) * 16).to(torch.uint8)
        return ink.numpy().tobytes() + bytes([int(y)])

    keys = {}
    for i in range(len(tv_train)):
        keys.setdefault(key(tv_train.x[i], tv_train.y[i]), []).append(i)
    return key, keys


def test_two_rank_shards_are_disjoint_and_cover_the_epoch(digits_beton):
    """Each rank's loader (DistEnv rank r of 2, in this process) delivers its own half of every epoch; together
    the whole training set once, reshuffled per epoch. The same through torchrun and the trainer: the slow test
    below."""
    key, keys = _image_keys(digits_beton)
    loaders = [_loaders(digits_beton, "dataset.augment=false", "trainer.global_batch_size=1438", batch=719,
                        env=DistEnv(rank=r, world_size=2))[0] for r in (0, 1)]
    firsts = []
    for epoch in (0, 1):
        seen = []
        for loader in loaders:
            batches = _epoch(loader, epoch)
            x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            assert len(y) == 719
            seen.append([keys[key(xi, yi)] for xi, yi in zip(x, y)])
        firsts.append(seen[0])
        flat = [i for rank in seen for cand in rank for i in cand[:1]]
        assert sorted(flat) == sorted(keys[k][0] for k in keys for _ in keys[k])
    assert firsts[0] != firsts[1]  # reshuffled


@pytest.mark.slow  # ~1 min (two ranks start); the sharding itself: the test above
def test_two_rank_gloo_ddp_shards_are_disjoint_and_cover_the_epoch(tmp_path, digits_beton):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ffcv_ddp_worker.py"), str(out), "experiment=quickstart", "dataset.loader=ffcv",
           f"data_dir={digits_beton}", "dataset.augment=false", "trainer.global_batch_size=1438"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    key, keys = _image_keys(digits_beton)
    for epoch in (0, 1):
        seen = []
        for r in (0, 1):
            x, y = torch.load(out / f"rank{r}_epoch{epoch}.pt", weights_only=True)
            assert len(y) == 719
            rank_idx = [keys[key(xi, yi)] for xi, yi in zip(x, y)]
            seen.append(rank_idx)
        flat = [i for rank in seen for cand in rank for i in cand[:1]]
        # every delivered image is a training image; together the two ranks deliver the whole set once
        assert sorted(flat) == sorted(keys[k][0] for k in keys for _ in keys[k])
    assert (out / "rank0_epoch0.pt").read_bytes() != (out / "rank0_epoch1.pt").read_bytes()  # reshuffled


# ------------------------------------------------------------------ one-line errors, exit 2, nothing created
def _bad_dirs(tmp_path, digits_beton):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(digits_beton, corrupt)
    with open(corrupt / "train.beton", "r+b") as f:
        f.truncate(1000)
    labels = tmp_path / "labels"
    shutil.copytree(digits_beton, labels)
    meta = json.loads((labels / "ham_ffcv.json").read_text())
    (labels / "ham_ffcv.json").write_text(json.dumps({**meta, "num_classes": 5}))
    fake = tmp_path / "fakesite" / "ffcv"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    return {"EMPTY": empty, "CORRUPT": corrupt, "LABELS": labels, "FAKE": fake.parent}


FFCV_BAD = [
    (["data_dir=EMPTY"], "has no train.beton"),
    (["data_dir=CORRUPT"], "train.beton is damaged"),
    (["data_dir=LABELS"], "outside the 5 classes"),
    (["data_dir=DIGITS", "dataset.img_size=16"], "dataset.img_size=16 does not fit"),
    (["data_dir=DIGITS", "FAKE"], "apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config"),
    (["data_dir=DIGITS", "dataset=imagenet", "model=resnet50", "dataset.options.auto_augment=rand-m9"],
     "dataset.options.auto_augment is not available with dataset.loader=ffcv"),
    (["data_dir=DIGITS", "dataset=imagenet", "model=deit_small", "dataset.ffcv.eval_img_size=256"],
     "does not fit model=deit_small"),
    (["data_dir=DIGITS", "dataset=imagenet", "dataset.ffcv.progressive.enabled=true", "trainer.epochs=2",
      "dataset.ffcv.progressive.start_epoch=1", "dataset.ffcv.progressive.end_epoch=5"], "do not fit trainer.epochs"),
    (["data_dir=DIGITS", "dataset=imagenet", "model=resnet50"], "holds .beton files of dataset=digits"),
]


# through a real `python train.py` process: the broken ffcv install (a fake package on PYTHONPATH: only a fresh
# interpreter imports it) and one data error; the rest in-process (train.py's own entry, ham.cli.main)
FFCV_SUBPROCESS = ("apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config", "has no train.beton")


@pytest.mark.parametrize("extra,text", FFCV_BAD, ids=[t for _, t in FFCV_BAD])
def test_ffcv_errors_are_one_line_exit_2(tmp_path, digits_beton, capsys, extra, text):
    dirs = {**_bad_dirs(tmp_path, digits_beton), "DIGITS": digits_beton}
    env = dict(ENV)
    args = []
    for a in extra:
        if a == "FAKE":
            env["PYTHONPATH"] = str(dirs["FAKE"])
            continue
        key, _, val = a.partition("=")
        args.append(f"{key}={dirs.get(val, val)}")
    before = sorted(tmp_path.rglob("*"))
    argv = ["experiment=quickstart", "dataset.loader=ffcv", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    if text in FFCV_SUBPROCESS:
        p = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=120)
        code, out = p.returncode, p.stdout + p.stderr
    else:
        from ham.cli import main as train_main

        capsys.readouterr()
        code = train_main(argv)
        out = "".join(capsys.readouterr())
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and text in lines[0], out
    assert sorted(tmp_path.rglob("*")) == before
