"""Images/s of the ffcv loader vs the torchvision loader on the same images, same workers, same 224 px crops.

    uv run python benchmarks/bench_loader.py [--images 3000] [--workers 2] [--batch 64] [--dir /tmp/ham_bench]

Generates an ImageFolder of JPEGs at ImageNet-like sizes (short side 300-500 px, aspect 3:4..4:3, 10 classes;
kept in --dir for reruns), converts it with ham.data.ffcv_write's ImageNet defaults (longest side <= 500, half
JPEG q90, half raw), then times one training epoch of each loader after a warm-up epoch (worker start-up and
ffcv's JIT compilation excluded): RandomResizedCrop 224 + flip + normalisation, batches of --batch, CPU.
Prints one line per loader and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    done = root / ".complete"
    if done.is_file() and json.loads(done.read_text()) == {"n": n, "classes": classes}:
        return
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for i in range(count):
            d = root / split / f"c{i % classes:02d}"
            d.mkdir(parents=True, exist_ok=True)
            short = int(rng.integers(300, 501))
            aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
            w, h = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
            base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # smooth content + fine noise, like photos
            img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), dtype=np.int16)
            img = (img + rng.integers(-20, 21, img.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img{i:05d}.JPEG", quality=90)
    done.write_text(json.dumps({"n": n, "classes": classes}))


def time_epochs(loader, epochs=(0, 1)) -> float:
    rate = 0.0
    for e in epochs:  # the first is the warm-up
        loader.set_epoch(e)
        t0, seen = time.perf_counter(), 0
        for x, _ in loader:
            seen += x.shape[0]
        rate = seen / (time.perf_counter() - t0)
    return rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dir", default="/tmp/ham_bench")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from ham.config import compose
    from ham.data import build_datasets, build_loader
    from ham.data.ffcv_loader import build_ffcv_loaders
    from ham.data.ffcv_write import main as write_main
    from ham.train.distributed import DistEnv

    root = Path(args.dir)
    folder, beton = root / "imagefolder", root / "beton"
    t0 = time.perf_counter()
    make_folder(folder, args.images)
    print(f"images: {args.images} JPEGs in {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not (beton / "ham_ffcv.json").is_file():
        t0 = time.perf_counter()
        assert write_main(["--dataset", "imagenet", "--data-dir", str(folder), "--out", str(beton),
                           "--num-workers", str(args.workers), "--overwrite"]) == 0
        print(f"conversion: {time.perf_counter() - t0:.1f} s "
              f"({args.images / (time.perf_counter() - t0):.0f} images/s)", flush=True)

    train_ds, _, _ = build_datasets("imagenet", str(folder), img_size=224)
    tv = build_loader(train_ds, batch_size=args.batch, train=True, seed=0, num_workers=args.workers)
    tv_rate = time_epochs(tv)
    print(f"torchvision: {tv_rate:8.1f} images/s  ({args.workers} worker processes, PIL decode + "
          f"RandomResizedCrop 224 + flip + normalise)", flush=True)
    del tv

    cfg = compose(["dataset=imagenet", "model=resnet50", f"data_dir={beton}",
                   "dataset.loader=ffcv", f"dataset.ffcv.num_workers={args.workers}"])
    ff, _, _ = build_ffcv_loaders(cfg, DistEnv(), per_rank_batch=args.batch, eval_batch=args.batch,
                                  channels_last=False)
    ff_rate = time_epochs(ff)
    print(f"ffcv:        {ff_rate:8.1f} images/s  ({args.workers} decoding threads, RandomResizedCrop at decode + "
          f"flip, fused normalisation in the same threads)", flush=True)
    print(f"ratio ffcv / torchvision: {ff_rate / tv_rate:.2f}x  (cores: {os.cpu_count()}, batch {args.batch})")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": args.images, "workers": args.workers, "batch": args.batch,
                                               "torchvision_images_per_s": tv_rate, "ffcv_images_per_s": ff_rate,
                                               "ratio": ff_rate / tv_rate, "cores": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
