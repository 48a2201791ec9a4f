#!/usr/bin/env python
"""End-to-end overhead of HAM and of each sparsifier on a real training step, measured in ONE run.

    uv run python benchmarks/bench_train_overhead.py                      # ResNet18 / CIFAR shapes, CPU
    uv run python benchmarks/bench_train_overhead.py --model resnet50 --img-size 224 --batch 256   # on a GPU

Prints images/s of the plain step (SGD momentum), the same with HAM (alpha=200, beta=1e-3), and the cost of each
sparsifier's hooks (mask application every step, plus its periodic updates amortised: RiGL every 100 steps,
Ac/Dc once per epoch), as a percentage of a training step. Steps alternate between variants (ABAB...) so drift
in machine speed hits all of them alike; medians of per-step times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ham.models import build_model
from ham.optim.factory import build_optimizer
from ham.sparse.base import TrainSchedule
from ham.sparse.registry import build_sparsifier
from ham.train.step import TrainStep

OPT = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-5}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make(model_name, num_classes, img_size, device, ham, sparsifier=None, steps_per_epoch=100):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes, img_size=img_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    sp = build_sparsifier(sparsifier[0], sparsity=0.9) if sparsifier else build_sparsifier("dense")
    sp.setup(model, TrainSchedule(epochs=100, steps_per_epoch=steps_per_epoch))
    opt = build_optimizer(model, OPT, ham, overrides=sp.param_group_overrides())
    sp.attach_optimizer(opt)
    return model, opt, sp


def step_fn(model, opt, sp, x, y, device, counter):
    """The trainer's own step (ham.train.step.TrainStep: forward/backward, the sparsifier's hooks, the optimizer),
    numbered by `counter`."""
    train_step = TrainStep(model, opt, None, sp, amp_dtype=torch.bfloat16 if device.type == "cuda" else None)

    def step():
        train_step(x, y, counter[0])
        counter[0] += 1
    return step


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sparsifiers", nargs="*", default=["random", "acdc", "rigl", "str", "signin"])
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, args.classes, (args.batch,), generator=g).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    ham_on, ham_off = {"alpha": 200.0, "beta": 1e-3}, {"alpha": 0.0, "beta": 0.0}
    variants = {"plain SGD": (ham_off, None), "SGD + HAM": (ham_on, None)}
    for name in args.sparsifiers:
        variants[f"SGD + HAM + {name} (s=0.9)"] = (ham_on, name)
    fns, sparsifiers = {}, {}
    for label, (ham, sp_name) in variants.items():
        model, opt, sp = make(args.model, args.classes, args.img_size, device, ham,
                              (sp_name, ) if sp_name else None)
        if sp_name:
            sp.on_epoch_start(0)
            sparsifiers[label] = (sp, model, opt)
        fns[label] = step_fn(model, opt, sp, x, y, device, [1])
    times = {k: [] for k in fns}
    for f in fns.values():  # warm-up (compiles, allocator)
        f(), f()
    for _ in range(args.steps):
        for k, f in fns.items():
            times[k].append(timed(f, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain SGD"]

    # periodic sparsifier work, timed on its own and amortised per step
    periodic = {}
    for label, (sp, model, opt) in sparsifiers.items():
        name = sp.name
        if name == "rigl":
            F.cross_entropy(model(x).float(), y).backward()
            t = timed(lambda: sp.update_masks(200), device)
            opt.zero_grad()
            periodic[label] = t / sp.delta_t
        elif name == "acdc":
            t = timed(lambda: sp.on_epoch_start(sp.compress_epochs[0]), device)
            periodic[label] = t / 100  # once per epoch of 100 steps (ImageNet has ~1250)

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {dev}; model {args.model} at {args.img_size}px, batch {args.batch}; median of {args.steps} steps")
    print(f"{'variant':40s} {'step (ms)':>10s} {'images/s':>9s} {'overhead vs plain':>18s}")
    for k, t in med.items():
        extra = periodic.get(k, 0.0)
        total = t + extra
        note = f" (incl. {1e3 * extra:.2f} ms amortised updates)" if extra else ""
        print(f"{k:40s} {1e3 * total:10.1f} {args.batch / total:9.0f} {100 * (total / base - 1):+17.2f}%{note}")
    if "SGD + HAM" in med:
        print(f"HAM overhead: {100 * (med['SGD + HAM'] / base - 1):+.2f}% of a training step")


if __name__ == "__main__":
    main()
