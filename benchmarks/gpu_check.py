#!/usr/bin/env python
"""GPU proof kit: validates and measures every GPU path of ham in one command (< 8 min on one H100/H200).

    python benchmarks/gpu_check.py                  # on a CUDA machine: writes results/gpu/<device>.md/.json
    python benchmarks/gpu_check.py --quick --out /tmp/gc   # CPU dry run: every part's code path, small shapes
    python benchmarks/gpu_check.py --parts a_correctness,c_e2e     # a subset (names below)

Parts, each with its own time budget (checked between items; a part that fails or runs out of time is reported
and the rest still runs):
  a_correctness  Triton kernel vs the reference formula (fp32/bf16 weights, contiguous/channels_last, float and
                 device-tensor lr, clamp on/off, signed variant, beta_where_grad; one launch per tensor list; no
                 recompile on lr changes); HAM(SGD), HAM(AdamW), HAM(SAM(SGD)) several steps vs the reference
                 backend; sparsifier masks stay exactly zero with bf16 weights
  b_step         the hyperbolic step vs torch's foreach and fused SGD-momentum and AdamW steps over ResNet50 shapes
                 (channels_last), CUDA events, interleaved rounds, bytes moved -> GB/s, and every step as a multiple
                 of the bandwidth floor x.mul_(m) over the same tensors (3 accesses per element, as the step)
  b_train        ResNet50 bf16 channels_last train step (batch 256, 224 px, synthetic): images/s dense SGD, +HAM,
                 +SAM-HAM, each sparsifier at 90 % (+HAM); overhead % over dense; the hyperbolic step's own share
                 of the step, timed inside it (A/B of whole steps is noisier than the effect)
  b_compile      the same with torch.compile (dense, +HAM)
  b_deit         DeiT-Small images/s, AdamW vs AdamW+HAM
  b_syncs        host-device synchronisations per training step (torch.cuda.set_sync_debug_mode) through the
                 trainer's own step, single process and DDP over a process group of one (nccl), SAM's no_sync
                 pass included; DDP SAM-HAM equals single-process SAM-HAM; the asynchronous stop agreement
  c_e2e          train.py end to end (subprocesses, the public CLI): resnet18 CIFAR-shape ~200 steps with a
                 checkpoint, SIGTERM (exit 3), resume (same step, finite loss); resnet50 at low resolution;
                 torchrun --nproc_per_node=1 (nccl) with SAM
Writes <out>/<device>.md and .json (every figure, versions, one PASS/FAIL line per check) and exits 1 if any
check failed. Without a GPU, --quick runs the same code with small shapes and the CPU fallbacks (C kernel, gloo,
a Python-level sync counter), so this script is exercised by the test suite and cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

# seconds per part on a GPU (total 465 s: under 8 minutes with start-up); --quick uses QUICK_BUDGETS
# (a_correctness includes Triton's first compilations, ~30 specialisations of the kernel when its disk cache is
# cold; b_compile comes last: one inductor compilation cannot be interrupted, so an overrun there delays nothing)
BUDGETS = {"a_correctness": 75, "b_step": 30, "b_train": 100, "b_deit": 35, "b_syncs": 25, "c_e2e": 120,
           "b_compile": 80}
QUICK_BUDGETS = {"a_correctness": 20, "b_step": 10, "b_train": 15, "b_deit": 10, "b_syncs": 15, "c_e2e": 60,
                 "b_compile": 20}
TOTAL_GRACE_S = 15  # a part starts only while the run is within sum(budgets) + this
PARTS = tuple(BUDGETS)
SPARSIFIERS = ("random", "acdc", "rigl", "str", "signin")
HAM_ON = {"alpha": 200.0, "beta": 1e-3}
HAM_OFF = {"alpha": 0.0, "beta": 0.0}
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-5}
ADAMW = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}


class BudgetExceeded(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- context
class Ctx:
    """Checks, figures and part status of one run; the budget clock of the part running now."""

    def __init__(self, quick: bool, device: torch.device):
        self.quick, self.device, self.cuda = quick, device, device.type == "cuda"
        self.checks: list[dict] = []
        self.targets: list[dict] = []
        self.figures: dict[str, dict] = {}
        self.parts: dict[str, dict] = {}
        self.part = ""
        self.deadline = math.inf

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"part": self.part, "name": name, "ok": bool(ok), "detail": detail})
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}" + (f" -- {detail}" if detail else ""), flush=True)
        return bool(ok)

    def target(self, name: str, met: bool, detail: str = "") -> None:
        """A performance target: reported (met/missed) but not a correctness failure."""
        self.targets.append({"part": self.part, "name": name, "met": bool(met), "detail": detail})
        print(f"  [{'MET ' if met else 'MISS'}] {name}" + (f" -- {detail}" if detail else ""), flush=True)

    def fig(self, key: str, value) -> None:
        self.figures.setdefault(self.part, {})[key] = value

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def need(self, seconds: float, what: str) -> None:
        """Stop the part (reported as cut) when less than `seconds` of its budget is left for `what`."""
        if self.left() < seconds:
            raise BudgetExceeded(f"budget left {max(0.0, self.left()):.0f}s < {seconds:.0f}s needed for {what}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Marks:
    """Timestamps inside a step: CUDA events on a GPU (no sync until read), perf_counter on the CPU."""

    def __init__(self, cuda: bool):
        self.cuda, self.points = cuda, []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.points.append(e)
        else:
            self.points.append(time.perf_counter())

    def spans(self) -> list[float]:
        """Seconds between consecutive marks (waits for the last one)."""
        if self.cuda:
            self.points[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.points, self.points[1:])]
        return [b - a for a, b in zip(self.points, self.points[1:])]


def time_call(fn, ctx: Ctx) -> float:
    m = Marks(ctx.cuda)
    m.mark()
    fn()
    m.mark()
    return m.spans()[0]


def scaled_max_diff(a: list, b: list) -> float:
    """max over tensors of max|a - b| / max|b| (0 for equal lists)."""
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-12)).item() for x, y in zip(a, b))


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------- sync counting
@contextlib.contextmanager
def count_syncs(ctx: Ctx):
    """Counts host-device synchronisations inside the block; yields a one-element list holding the count.

    CUDA: torch.cuda.set_sync_debug_mode("warn") warns on every synchronising call (item, .cpu(), bool(t),
    pageable copies, nonzero, ...). CPU (--quick dry run): a stand-in that counts the Python-level calls that
    would synchronise on a GPU (.item, .tolist, .cpu, .numpy, bool/float/int of a tensor) made from ham's own code.
    """
    out = [0]
    if ctx.cuda:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield out
            finally:
                torch.cuda.set_sync_debug_mode("default")
        out[0] = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
        return
    ham_dir = str(ROOT / "ham")
    names = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name, orig):
        def counted(self, *a, **k):
            # host buffers (ham.train.distributed.AsyncAgreement's result) never wait for a device
            if sys._getframe(1).f_code.co_filename.startswith(ham_dir) and not getattr(self, "host_buffer", False):
                out[0] += 1
            return orig(self, *a, **k)
        return counted

    for n, orig in saved.items():
        setattr(torch.Tensor, n, wrap(n, orig))
    try:
        yield out
    finally:
        for n, orig in saved.items():
            setattr(torch.Tensor, n, orig)


# ---------------------------------------------------------------------------------------------------- builders
def small_convnet(num_classes=10):
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def batch(ctx: Ctx, n: int, size: int, classes: int, seed: int = 0, channels_last: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g).to(ctx.device)
    y = torch.randint(0, classes, (n,), generator=g).to(ctx.device)
    if channels_last and ctx.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


class Variant(SimpleNamespace):
    """A model + optimizer stack + sparsifier, built like the trainer builds them."""


def build_variant(ctx: Ctx, model_name: str, classes: int, img_size: int, *, ham: dict, opt_cfg: dict,
                  sparsifier: str | None = None, sam: bool = False, channels_last: bool = True,
                  compile_model: bool = False, compile_backend: str = "inductor",
                  sparsifier_options: dict | None = None, epochs: int = 100, steps_per_epoch: int = 100,
                  make_model=None, no_decay=(), model_kwargs: dict | None = None):
    from ham.models import build_model
    from ham.optim.factory import build_optimizer
    from ham.optim.sam import sam_of
    from ham.sparse.base import TrainSchedule
    from ham.sparse.registry import build_sparsifier

    torch.manual_seed(0)  # the same initial weights for every variant (so models are built after this)
    model = make_model() if make_model is not None else \
        build_model(model_name, classes, img_size=img_size, **(model_kwargs or {}))
    model = model.to(ctx.device)
    if channels_last and ctx.cuda:
        model = model.to(memory_format=torch.channels_last)
    sp = build_sparsifier(sparsifier or "dense", **({"sparsity": 0.9} if sparsifier else {}),
                          **(sparsifier_options or {}))
    sp.setup(model, TrainSchedule(epochs=epochs, steps_per_epoch=steps_per_epoch))
    cfg = dict(opt_cfg)
    if sam:
        cfg["sam"] = {"rho": 0.05}
    opt = build_optimizer(model, cfg, {**ham, "backend": ham.get("backend", "auto")},
                          overrides=sp.param_group_overrides(), no_decay_names=no_decay)
    sp.attach_optimizer(opt)
    first = getattr(sp, "compress_epochs", [0])
    sp.on_epoch_start(first[0] if first else 0)  # Ac/Dc: measure the compressed (sparse) phase
    fwd = torch.compile(model, backend=compile_backend) if compile_model else model
    return Variant(model=model, fwd=fwd, opt=opt, sp=sp, sam=sam_of(opt), step=1)


def train_step(v: Variant, x, y, amp: bool, marks: Marks | None = None):
    """The trainer's step (ham.train.step.TrainStep), with the optimizer split into its base step and
    the hyperbolic step so the latter can be timed inside the step."""
    from ham.optim.sam import bn_stats_frozen

    def loss_of():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            return F.cross_entropy(v.fwd(x).float(), y)

    mk = marks.mark if marks is not None else (lambda: None)
    mk()
    if v.sam is not None:
        loss_of().backward()
        v.sp.mask_gradients()
        v.sam.first_step()
        v.opt.zero_grad(set_to_none=True)
        with bn_stats_frozen(v.model):
            loss = loss_of()
            loss.backward()
    else:
        loss = loss_of()
        loss.backward()
    do_step = v.sp.before_step(v.step)
    mk()
    if do_step:
        v.opt.base.step()  # HAM.step() = base step, then the hyperbolic step (deployed variant)
        mk()
        v.opt.hyperbolic_step()
        mk()
    else:
        if v.sam is not None:
            v.sam.restore()
        mk()
        mk()
    v.sp.after_step(v.step)
    v.opt.zero_grad(set_to_none=True)
    v.step += 1
    mk()
    return loss.detach()


# ---------------------------------------------------------------------------------------------------- part a
def part_a(ctx: Ctx) -> None:
    from ham.optim import kernels
    from ham.optim.functional import hyperbolic_step_

    dev = ctx.device
    shapes = ([(64, 3, 7, 7), (256, 64, 1, 1), (128, 128, 3, 3), (1000, 512), (5000,), (1,)] if not ctx.quick
              else [(16, 3, 3, 3), (32, 16, 1, 1), (300,), (1,)])
    triton_mod = None
    if ctx.cuda:
        from ham.optim.kernels import triton_kernel as triton_mod
    launches = []
    if triton_mod is not None:
        real = triton_mod._hyperbolic_list_kernel

        class Counting:
            def __getitem__(self, grid):
                launches.append(grid)
                return real[grid]

        triton_mod._hyperbolic_list_kernel = Counting()
    try:
        g = torch.Generator().manual_seed(0)
        for dtype in (torch.float32, torch.bfloat16):
            for layout in ("contiguous", "channels_last"):
                worst, failures, unhandled, n_cases = 0.0, [], 0, 0
                for lr_kind in ("float", "tensor"):
                    for clamp in (5.0, None):
                        for signed in (False, True):
                            for bwg in (False, True):
                                n_cases += 1

                                def make(kind, shape, dtype=dtype, layout=layout):
                                    t = torch.randn(shape, generator=g)
                                    if kind == "p":
                                        t.view(-1)[: max(1, t.numel() // 10)] = 0.0
                                    if kind == "g":
                                        t.view(-1)[: t.numel() // 7] = 0.0
                                    t = torch.sign(t).to(torch.int8) if kind == "s" else t.to(dtype)
                                    t = t.to(dev)
                                    if layout == "channels_last" and t.ndim == 4:
                                        t = t.contiguous(memory_format=torch.channels_last)
                                    return t

                                ps = [make("p", s) for s in shapes]
                                gs = [make("g", s) for s in shapes]
                                ss = [make("s", s) for s in shapes] if signed else None
                                lr = 0.02 if lr_kind == "float" else torch.tensor(0.02, device=dev)
                                kw = dict(lr=lr, alpha=200.0, beta=1e-3, clamp=clamp)
                                want = [p.float().clone() for p in ps]
                                hyperbolic_step_(want, [x.float() for x in gs], signs=ss, beta_where_grad=bwg,
                                                 backend="reference", **kw)
                                got = [p.clone(memory_format=torch.preserve_format) for p in ps]
                                launches.clear()
                                rest = kernels.fused_hyperbolic_step_(got, gs, signs=ss, beta_where_grad=bwg,
                                                                      **kw)
                                if rest is not None:
                                    unhandled += len(rest[0])
                                    hyperbolic_step_(*rest[:2], signs=rest[2], beta_where_grad=bwg,
                                                     backend="foreach", **kw)
                                if triton_mod is not None and len(launches) != 1:
                                    failures.append(f"{len(launches)} launches for one list")
                                for p, x, y in zip(ps, got, want):
                                    ref = y.to(dtype).float()
                                    err = ((x.float() - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
                                    worst = max(worst, err)
                                    tol = 1e-5 if dtype == torch.float32 else 2 ** -7
                                    if err > tol:
                                        failures.append(f"lr={lr_kind} clamp={clamp} signed={signed} bwg={bwg} "
                                                        f"{tuple(p.shape)}: rel err {err:.2e}")
                                    if not torch.equal(x[p == 0], p[p == 0]) or x.stride() != p.stride():
                                        failures.append(f"{tuple(p.shape)}: zeros or layout not kept")
                                    if (torch.sign(x.float()) * torch.sign(p.float()) < 0).any():
                                        failures.append(f"{tuple(p.shape)}: a sign flipped")
                kernel = "Triton" if ctx.cuda else "C (CPU)"
                name = f"{kernel} kernel == reference, {str(dtype)[6:]} {layout} ({n_cases} cases: lr float/tensor, " \
                       f"clamp on/off, signed, beta_where_grad)"
                ctx.check(name, not failures, failures[0] if failures else f"max rel err {worst:.1e}")
                ctx.check(f"fused path took every tensor, {str(dtype)[6:]} {layout}", unhandled == 0,
                          f"{unhandled} tensors fell back to foreach" if unhandled else "no foreach fallback")
                ctx.fig(f"kernel max rel err {str(dtype)[6:]} {layout}", worst)
    finally:
        if triton_mod is not None:
            triton_mod._hyperbolic_list_kernel = real
    if triton_mod is not None:
        ps = [torch.randn(1000, device=dev)]
        before = triton_mod.compiled_variants()
        for k in range(5):
            hyperbolic_step_(ps, [torch.randn_like(ps[0])], lr=1e-3 * (k + 1), alpha=200.0, beta=1e-3,
                             backend="fused")
        after = triton_mod.compiled_variants()
        ctx.check("a new lr every call compiles nothing", before is None or after == before,
                  f"specialisations {before} -> {after}")

    ctx.need(5, "optimizer equivalence")
    part_a_optimizers(ctx)
    ctx.need(5, "masks under bf16")
    part_a_masks(ctx)


def part_a_optimizers(ctx: Ctx) -> None:
    """HAM(SGD), HAM(AdamW), HAM(SAM(SGD)): 3 steps with the default backend vs the reference backend."""
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        sgd = {**SGD, "lr": 0.01}  # lr * alpha = 2: a bounded step (at 0.1 the clamp makes 6 steps chaotic)
        for label, opt_cfg, sam in (("HAM(SGD)", sgd, False), ("HAM(AdamW)", ADAMW, False),
                                    ("HAM(SAM(SGD))", sgd, True)):
            finals, fused = {}, None
            for backend in ("auto", "reference"):
                v = build_variant(ctx, "", 10, 16, make_model=small_convnet, ham={**HAM_ON, "backend": backend},
                                  opt_cfg=opt_cfg, sam=sam)
                fused = bool(v.opt.base.defaults.get("fused")) if v.sam is None else \
                    bool(v.sam.base.defaults.get("fused"))
                for k in range(3):  # more steps: ReLU/argmax flips turn 1-ulp differences into chaos
                    x, y = batch(ctx, 16, 16, 10, seed=k)
                    train_step(v, x, y, amp=False)
                finals[backend] = [p.detach().float().clone() for p in v.model.parameters()]
            err = scaled_max_diff(finals["auto"], finals["reference"])
            # 1-ulp differences of exp() grow over steps (the step is multiplicative); a kernel bug is O(1)
            ctx.check(f"{label} 3 steps, fused kernel == reference backend", err <= 1e-4,
                      f"base optimizer fused={fused}; max |diff| / max |w| per tensor {err:.1e} (limit 1e-4)")
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def part_a_masks(ctx: Ctx) -> None:
    """Pruned weights stay exactly zero with bf16 weights through HAM's multiplicative step (several steps,
    RiGL mask updates included)."""
    for name, opts in (("random", {}), ("acdc", {}), ("rigl", {"delta_t": 2})):
        v = build_variant(ctx, "", 10, 16, make_model=small_convnet, ham=HAM_ON, opt_cfg=SGD, sparsifier=name,
                          sparsifier_options=opts, epochs=100, steps_per_epoch=20)
        v.model.to(torch.bfloat16)
        bad = 0
        for k in range(6):
            x, y = batch(ctx, 16, 16, 10, seed=k)
            v.fwd = v.model
            train_step(v, x.to(torch.bfloat16), y, amp=False)
            weights = v.sp.weights()
            for n, m in v.sp.masks.items():
                bad += int((weights[n].detach()[~m] != 0).sum())
        dtypes = {str(w.dtype)[6:] for w in v.sp.weights().values()}
        ctx.check(f"{name} 90%: pruned weights exactly zero after 6 HAM steps in {','.join(sorted(dtypes))}",
                  bad == 0 and bool(v.sp.masks), f"{bad} non-zero pruned entries" if bad else
                  f"{len(v.sp.masks)} masked layers")


# ---------------------------------------------------------------------------------------------------- part b_step
def part_b_step(ctx: Ctx) -> None:
    import torchvision

    from ham.optim import kernels
    from ham.optim.functional import hyperbolic_step_

    dev = ctx.device
    model = (torchvision.models.resnet50() if not ctx.quick else torchvision.models.resnet18()).to(dev)
    model = model.to(memory_format=torch.channels_last)  # the trainer's layout for conv nets on CUDA
    params = [p.detach() for p in model.parameters()]
    grads = [torch.randn_like(p) * 1e-2 for p in params]
    ham_p = [p for p in params if p.ndim >= 2]
    ham_g = [g for p, g in zip(params, grads) if p.ndim >= 2]
    rest = kernels.fused_hyperbolic_step_(ham_p, ham_g, lr=1e-9, alpha=200.0, beta=1e-3, clamp=5.0, signs=None,
                                          beta_where_grad=False)
    ctx.check("every channels_last ResNet weight goes to the fused kernel", rest is None,
              f"{len(rest[0])} fell back" if rest else f"{len(ham_p)} tensors, one call")
    if ctx.quick:  # time a slice only: the code path is what the dry run is for
        params, grads = params[:12], grads[:12]
        ham_p = [p for p in params if p.ndim >= 2]
        ham_g = [g for p, g in zip(params, grads) if p.ndim >= 2]
    n_all, n_ham = sum(p.numel() for p in params), sum(p.numel() for p in ham_p)
    ctx.fig("shapes", f"{'ResNet50' if not ctx.quick else 'ResNet18'} channels_last: {n_all / 1e6:.2f}M "
                      f"parameters, {n_ham / 1e6:.2f}M stepped by HAM ({len(ham_p)} tensors)")

    def opt_of(kind, impl):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        for p, g in zip(ps, grads):
            p.grad = g
        kw = {"foreach": True} if impl == "foreach" else {"fused": True}
        if kind == "sgd":
            return torch.optim.SGD(ps, lr=1e-9, momentum=0.9, **kw)
        return torch.optim.AdamW(ps, lr=1e-9, **kw)

    lr = [1e-9]

    def ham(backend):
        def run():
            lr[0] *= 1.0001
            hyperbolic_step_(ham_p, ham_g, lr=lr[0], alpha=200.0, beta=1e-3, clamp=5.0, backend=backend)
        return run

    # The bandwidth floor: x.mul_(m) over the same tensors (read x and m, write x: the fused step's 3 accesses per
    # element), as one foreach call; m ~ 1 so repeated calls never drift into subnormals.
    floor_x = [p.clone() for p in ham_p]
    floor_m = [torch.exp(torch.randn_like(p) * 1e-4) for p in ham_p]
    floor_label = "bandwidth floor: x.mul_(m) over the HAM tensors"
    cases = {"HAM step, fused kernel": (ham("fused"), 3 * n_ham),
             "HAM step, foreach chain": (ham("foreach"), 3 * n_ham),
             floor_label: (lambda: torch._foreach_mul_(floor_x, floor_m), 3 * n_ham)}
    for kind, label, accesses in (("sgd", "SGD-momentum", 5), ("adamw", "AdamW", 7)):
        for impl in ("foreach", "fused"):
            try:
                cases[f"{label} step, torch {impl}"] = (opt_of(kind, impl).step, accesses * n_all)
            except (RuntimeError, ValueError) as e:  # an implementation torch lacks on this device
                ctx.fig(f"{label} {impl} unavailable", str(e)[:200])
    for fn, _ in cases.values():
        fn()
        fn()
    sync(dev)
    rounds = 25 if not ctx.quick else 3
    times = {k: [] for k in cases}
    for r in range(rounds):
        ctx.need(2, f"round {r} of the step benchmark")
        for label, (fn, _) in cases.items():
            times[label].append(time_call(fn, ctx))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    ham_t = med["HAM step, fused kernel"]
    # multiples of the floor: median of within-round ratios (drift in the device's speed hits both alike)
    x_floor = {k: statistics.median(t / f for t, f in zip(v, times[floor_label])) for k, v in times.items()}
    for label, (_, accesses) in cases.items():
        gbs = accesses * 4 / med[label] / 1e9
        rows.append({"step": label, "ms": med[label] * 1e3, "GB/s (fp32 bytes moved)": gbs,
                     "x floor": x_floor[label], "fused HAM / this": ham_t / med[label]})
    ctx.fig("step_table", rows)
    ctx.fig("rounds", rounds)
    ctx.fig("fused HAM / bandwidth floor (x.mul_(m), same tensors)", x_floor["HAM step, fused kernel"])
    for other in ("SGD-momentum step, torch fused", "SGD-momentum step, torch foreach", "AdamW step, torch fused"):
        if other in med:
            ctx.fig(f"fused HAM / {other}", ham_t / med[other])


# ---------------------------------------------------------------------------------------------------- part b_train
def _throughput(ctx: Ctx, variants: dict, make, warmup: int, steps: int, img_batch) -> list[dict]:
    """Builds each variant in turn, warms it up, times `steps` steps with marks inside; one row per variant."""
    rows = []
    x, y = img_batch
    for label, spec in variants.items():
        ctx.need(5 if ctx.quick else 15, label)
        t_build = time.perf_counter()
        v = make(**spec)
        for _ in range(warmup):
            train_step(v, x, y, amp=ctx.cuda)
        sync(ctx.device)
        warm_s = time.perf_counter() - t_build
        spans = []
        for _ in range(steps):
            m = Marks(ctx.cuda)
            train_step(v, x, y, amp=ctx.cuda, marks=m)
            spans.append(m.spans())  # [fwd+bwd+hooks, base step, hyperbolic step, after_step+zero_grad]
        total = [sum(s) for s in spans]
        med = statistics.median(total)
        rows.append({"variant": label, "step_ms": med * 1e3, "images_per_s": x.shape[0] / med,
                     "hyperbolic_ms": statistics.median(s[2] for s in spans) * 1e3,
                     "base_step_ms": statistics.median(s[1] for s in spans) * 1e3,
                     "build_and_warmup_s": warm_s})
        del v
        free_memory(ctx.device)
    base = rows[0]["step_ms"] if rows else float("nan")
    for r in rows:
        r["overhead_pct_vs_dense"] = 100.0 * (r["step_ms"] / base - 1.0)
        r["hyperbolic_share_pct"] = 100.0 * r["hyperbolic_ms"] / r["step_ms"]
    return rows


def _resnet_setup(ctx: Ctx):
    if ctx.quick:  # the code path, not the model, is what the dry run checks
        return dict(model_name="small_cnn", classes=10, img_size=16), batch(ctx, 4, 16, 10), 1, 2
    return dict(model_name="resnet50", classes=1000, img_size=224), batch(ctx, 256, 224, 1000), 5, 15


def part_b_train(ctx: Ctx) -> None:
    common, data, warmup, steps = _resnet_setup(ctx)
    variants = {"dense SGD": dict(ham=HAM_OFF), "+HAM": dict(ham=HAM_ON), "+SAM-HAM": dict(ham=HAM_ON, sam=True)}
    for sp in SPARSIFIERS:
        variants[f"{sp} 90% +HAM"] = dict(ham=HAM_ON, sparsifier=sp)
    ctx.fig("setup", f"{common['model_name']} {common['img_size']}px batch {data[0].shape[0]}, "
                     f"{'bf16 autocast, channels_last' if ctx.cuda else 'fp32 (CPU)'}, SGD momentum 0.9, "
                     f"median of {steps} steps after {warmup} warm-up")

    def make(**spec):
        return build_variant(ctx, opt_cfg=SGD, **common, **spec)

    rows = _throughput(ctx, variants, make, warmup, steps, data)
    ctx.fig("rows", rows)
    ham_row = next((r for r in rows if r["variant"] == "+HAM"), None)
    if ham_row is not None and ctx.cuda:
        ctx.target("hyperbolic step <= 1% of a ResNet50 training step", ham_row["hyperbolic_share_pct"] <= 1.0,
                   f"{ham_row['hyperbolic_share_pct']:.2f}% ({ham_row['hyperbolic_ms']:.2f} ms of "
                   f"{ham_row['step_ms']:.1f} ms)")


def part_b_compile(ctx: Ctx) -> None:
    """torch.compile(model): dense SGD, then +HAM with a new optimizer around the SAME compiled model (one
    compilation: the optimizer is outside the graph, and weight values are not guarded on)."""
    from ham.optim.factory import build_optimizer

    common, data, warmup, steps = _resnet_setup(ctx)
    # --quick: dynamo's graph capture with the eager backend (inductor's C++ build takes ~10 s per graph on CPU)
    backend = "eager" if ctx.quick else "inductor"
    ctx.fig("setup", f"torch.compile(model, backend={backend}), {common['model_name']} {common['img_size']}px "
                     f"batch {data[0].shape[0]}; compilation is in the first row's build_and_warmup_s")
    shared = {}

    def make(ham):
        if "v" not in shared:
            shared["v"] = build_variant(ctx, opt_cfg=SGD, compile_model=True, compile_backend=backend, ham=ham,
                                        **common)
            return shared["v"]
        v = shared["v"]
        v.opt = build_optimizer(v.model, SGD, {**ham, "backend": "auto"})
        return v

    variants = {"dense SGD, compiled": {"ham": HAM_OFF}, "+HAM, compiled": {"ham": HAM_ON}}
    try:
        ctx.fig("rows", _throughput(ctx, variants, make, warmup + 2, steps, data))
    finally:
        shared.clear()


def part_b_deit(ctx: Ctx) -> None:
    if ctx.quick:  # one transformer block: the same code path at a fraction of the cost
        common, data, warmup, steps = dict(model_name="deit_small", classes=10, img_size=32,
                                           model_kwargs={"depth": 1}), \
            batch(ctx, 2, 32, 10, channels_last=False), 1, 2
    else:
        common, data, warmup, steps = dict(model_name="deit_small", classes=1000, img_size=224), \
            batch(ctx, 256, 224, 1000, channels_last=False), 5, 15
    variants = {"AdamW": dict(ham=HAM_OFF), "AdamW + HAM": dict(ham=HAM_ON)}
    ctx.fig("setup", f"DeiT-Small {common['img_size']}px batch {data[0].shape[0]}, "
                     f"{'bf16 autocast' if ctx.cuda else 'fp32 (CPU)'}, median of {steps} steps")

    def make(**spec):
        return build_variant(ctx, opt_cfg={**ADAMW, "weight_decay": 0.1}, channels_last=False,
                             no_decay=("pos_embed", "cls_token", "dist_token"), **common, **spec)

    ctx.fig("rows", _throughput(ctx, variants, make, warmup, steps, data))


# ---------------------------------------------------------------------------------------------------- part b_syncs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_stepper(ctx: Ctx, v: Variant, env, ddp_model=None, check_every: int = 5):
    """The trainer's own per-step code: its TrainStep (ham/train/step.py) plus the loop's per-step bookkeeping
    and its stop check (ham.lifecycle.stop.TrainingStop, the DDP agreement every `check_every` steps)."""
    from ham.train.distributed import AsyncAgreement
    from ham.train.step import TrainStep
    from ham.lifecycle.stop import TrainingStop

    scheduler = torch.optim.lr_scheduler.LambdaLR(v.opt, lambda k: 1.0 / (1 + k))
    tr = SimpleNamespace(
        train_step=TrainStep(v.model, v.opt, scheduler, v.sp, forward=ddp_model,
                             amp_dtype=torch.bfloat16 if ctx.cuda else None, distributed=env.distributed),
        stop=TrainingStop(AsyncAgreement(env.device).poll if env.distributed else None, check_every),
        check_every=check_every, step=1)
    acc = {"loss": torch.zeros((), device=ctx.device), "bad": torch.zeros((), dtype=torch.bool, device=ctx.device)}

    def step(x, y) -> bool:
        loss = tr.train_step(x, y, tr.step)
        acc["loss"] += loss
        acc["bad"] |= ~torch.isfinite(loss)
        tr.step += 1
        return tr.stop.requested(tr.step)

    return tr, step


def part_b_syncs(ctx: Ctx) -> None:
    import torch.distributed as dist

    from ham.train.distributed import DDP_OPTIONS, DistEnv

    size, n = (16, 8) if ctx.quick else (64, 64)
    net = "small_cnn" if ctx.quick else "resnet18"
    x, y = batch(ctx, n, size, 10)
    steps = 10
    counts = {}
    for label, spec in (("dense +HAM", {}), ("SAM-HAM", {"sam": True}), ("rigl 90% +HAM", {"sparsifier": "rigl"}),
                        ("str 90% +HAM", {"sparsifier": "str"})):
        ctx.need(3, label)
        v = build_variant(ctx, net, 10, size, ham=HAM_ON, opt_cfg=SGD, **spec)
        _, step = trainer_stepper(ctx, v, DistEnv(device=ctx.device))
        for _ in range(3):
            step(x, y)
        sync(ctx.device)
        with count_syncs(ctx) as c:
            for _ in range(steps):
                step(x, y)
        sync(ctx.device)
        counts[label] = c[0] / steps
        del v
    # a logging step's metrics (loss mean, L1 norm, sign flips, sparsity): syncs expected, once per interval
    from ham.train.metrics import SignTracker, l1_norm

    v = build_variant(ctx, net, 10, size, ham=HAM_ON, opt_cfg=SGD)
    tracker = SignTracker(v.opt.managed_params())
    with count_syncs(ctx) as c:
        l1_norm(v.opt.managed_params())
        tracker.update()
    ctx.fig("syncs in a logging step's metrics (informational)", c[0])

    # DDP over a process group of one (nccl on a GPU, gloo here): the trainer's DDP construction, SAM's no_sync
    # first pass with bucket-view grads, and the asynchronous stop agreement
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    backend = "nccl" if ctx.cuda else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                            **({"device_id": ctx.device} if ctx.cuda else {}))
    try:
        finals = {}
        for mode in ("single", "ddp"):
            v = build_variant(ctx, net, 10, size, ham=HAM_ON, opt_cfg=SGD, sam=True)
            ddp = None
            if mode == "ddp":
                ddp = torch.nn.parallel.DistributedDataParallel(
                    v.model, device_ids=[ctx.device.index] if ctx.cuda else None, **DDP_OPTIONS)
            env = DistEnv(device=ctx.device, process_group=mode == "ddp")
            cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            try:
                tr, step = trainer_stepper(ctx, v, env, ddp_model=ddp, check_every=5)
                for _ in range(3):
                    step(x, y)
                sync(ctx.device)
                with count_syncs(ctx) as c:
                    for _ in range(steps):  # DDP: two stop checks (every 5 steps) inside
                        step(x, y)
                sync(ctx.device)
                if mode == "ddp":
                    counts["DDP (world 1, " + backend + ") SAM-HAM incl. stop checks"] = c[0] / steps
            finally:
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
            finals[mode] = [p.detach().float().clone() for p in v.model.parameters()]
            if mode == "ddp":
                # a stop signal is acted on at the check AFTER the one that saw it, on every rank alike
                tr.stop.signum = signal.SIGTERM
                answers = []
                while len(answers) < 3 * tr.check_every and not any(answers):
                    answers.append(step(x, y))
                at = answers.index(True) + 1 if any(answers) else None
                first_check = next(k + 1 for k in range(len(answers))
                                   if (tr.step - len(answers) + k + 1) % 5 == 0)
                ctx.check("async stop agreement: a SIGTERM stops at the next check but one",
                          at is not None and at == first_check + 5,
                          f"stopped {at} steps after the signal (first check after it: {first_check})")
        err = scaled_max_diff(finals["ddp"], finals["single"])
        ctx.check("DDP(world 1, bucket-view grads, no buffer broadcast) SAM-HAM == single process", err <= 1e-4,
                  f"max |diff| / max |w| per tensor {err:.1e} (limit 1e-4)")
    finally:
        dist.destroy_process_group()
    ctx.fig("syncs_per_step", counts)
    how = "torch.cuda.set_sync_debug_mode" if ctx.cuda else "Python-level stand-in (CPU dry run)"
    ctx.fig("sync counting", how)
    for label, k in counts.items():
        if ctx.cuda:
            ctx.target(f"0 host syncs per non-logging step: {label}", k == 0, f"{k:g} per step ({how})")
        else:
            ctx.check(f"0 host syncs per non-logging step: {label}", k == 0, f"{k:g} per step ({how})")


# ---------------------------------------------------------------------------------------------------- part c
def _metrics(run_dir: Path) -> list[dict]:
    f = run_dir / "metrics.jsonl"
    if not f.exists():
        return []
    rows = []
    for line in f.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def _ckpt_steps(run_dir: Path) -> list[int]:
    d = run_dir / "checkpoints"
    return sorted(int(m.group(1)) for p in d.glob("ckpt_*.pt") if (m := re.fullmatch(r"ckpt_(\d+)\.pt", p.name))) \
        if d.is_dir() else []


def _train_overrides(ctx: Ctx, model: str, steps: int, *, img: int, classes: int, batch_size: int,
                     extra=()) -> list[str]:
    per_epoch = steps // 2 if steps >= 20 else steps
    return ["experiment=quickstart", "dataset=synthetic", f"model={model}", f"dataset.img_size={img}",
            f"++dataset.options.num_classes={classes}", f"++dataset.options.train_size={per_epoch * batch_size}",
            f"++dataset.options.val_size={2 * batch_size}", f"trainer.global_batch_size={batch_size}",
            f"trainer.epochs={-(-steps // per_epoch)}", f"trainer.max_steps={steps}", "trainer.log_every_steps=5",
            f"trainer.checkpoint_every_steps={max(5, steps // 4)}", "trainer.eval_every_epochs=1",
            f"trainer.num_workers={0 if ctx.quick else 4}", "trainer.progress_bar=false",
            f"trainer.precision={'bf16' if ctx.cuda else 'fp32'}", "ham.alpha=200.0", "ham.beta=0.001",
            "optimizer.lr=0.05", *extra]


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def _launch(cmd, log: Path):
    f = open(log, "w")  # noqa: SIM115 -- the caller closes it when the process ends
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=_env()), f


def _tail(log: Path, n: int = 1500) -> str:
    try:
        return " | ".join(log.read_text()[-n:].splitlines()[-8:])
    except OSError:
        return ""


def _run(ctx: Ctx, cmd, log: Path) -> int:
    p, f = _launch(cmd, log)
    try:
        return p.wait(timeout=max(5.0, ctx.left()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise BudgetExceeded(f"{' '.join(cmd[-3:])} did not finish within the part's budget") from None
    finally:
        f.close()


def _finite_run(run_dir: Path, steps: int) -> tuple[bool, str]:
    rows = [r for r in _metrics(run_dir) if "train/loss" in r]
    summary = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        summary = json.loads((run_dir / "summary.json").read_text())
    losses = [r["train/loss"] for r in rows]
    ok = bool(rows) and all(math.isfinite(v) for v in losses) and summary.get("steps") == steps
    return ok, (f"{len(rows)} logged steps, last loss {losses[-1]:.4f}, summary steps {summary.get('steps')}"
                if rows else "no metrics written")


def _run_r50(ctx: Ctx, train, work: Path, r50: dict) -> None:
    ctx.need(15, "resnet50 low-resolution run")
    steps50 = 100 if not ctx.quick else 2
    rd = work / "r50"
    t0 = time.perf_counter()
    rc = _run(ctx, [*train, *_train_overrides(ctx, steps=steps50, **r50), f"hydra.run.dir={rd}"],
              work / "r50.log")
    ctx.fig("resnet50 run seconds", time.perf_counter() - t0)
    ok_finite, detail = _finite_run(rd, steps50)
    ctx.check(f"train.py resnet50 {r50['img']}px {steps50} steps", rc == 0 and ok_finite,
              f"exit {rc}; {detail}" + ("" if rc == 0 else f"; log: {_tail(work / 'r50.log')}"))


def part_c(ctx: Ctx) -> None:
    work = Path(tempfile.mkdtemp(prefix="ham_gpu_check_"))
    ctx.fig("work_dir", str(work))
    train = [sys.executable, str(ROOT / "train.py")]
    if ctx.quick:
        small = dict(model="small_cnn", img=16, classes=10, batch_size=8)
        r50 = dict(model="resnet50", img=32, classes=10, batch_size=2)
    else:
        small = dict(model="resnet18", img=32, classes=100, batch_size=128)
        r50 = dict(model="resnet50", img=64, classes=100, batch_size=64)

    # 1. resnet18 (CIFAR shape): SIGTERM after the first logged steps -> exit 3 + checkpoint; rerun -> resumes
    steps = 200 if not ctx.quick else 40
    rd = work / "r18"
    cmd = [*train, *_train_overrides(ctx, steps=steps, **small), f"hydra.run.dir={rd}"]
    ctx.fig("train command", " ".join(cmd[1:]))
    t0 = time.perf_counter()
    p, f = _launch(cmd, work / "r18_first.log")
    try:
        while p.poll() is None and time.perf_counter() - t0 < max(5.0, ctx.left() - 20):
            if any(r.get("step", 0) >= 10 for r in _metrics(rd)):
                break
            time.sleep(0.05)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=max(5.0, ctx.left()))
    finally:
        if p.poll() is None:
            p.kill()
        f.close()
    saved = _ckpt_steps(rd)
    ctx.fig("first run seconds", time.perf_counter() - t0)
    ctx.check("train.py: SIGTERM -> exit code 3 with a checkpoint saved", rc == 3 and bool(saved),
              f"exit {rc}, checkpoints at steps {saved}" + ("" if rc == 3 else f"; log: {_tail(work / 'r18_first.log')}"))
    last = saved[-1] if saved else None
    ctx.need(10, "the resumed run")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    # --quick resumes under torchrun (a process group of one over gloo): one process start-up less, and the
    # single-process checkpoint must load into the DDP path anyway
    resume_cmd = [*torchrun, *cmd[1:]] if ctx.quick else cmd
    t0 = time.perf_counter()
    rc = _run(ctx, resume_cmd, work / "r18_resume.log")
    ctx.fig("resumed run seconds", time.perf_counter() - t0)
    log = (work / "r18_resume.log").read_text(errors="replace")
    m = re.search(r"resumed from \S+ \(step (\d+)", log)  # the trainer's resume line
    resumed_at = int(m.group(1)) if m else None
    rows = [r for r in _metrics(rd) if "train/loss" in r]
    row_steps = [r["step"] for r in rows]
    ok_finite, detail = _finite_run(rd, steps)
    # a restart from scratch would log steps 5, 10, ... again: the logged steps must stay strictly increasing
    ctx.check("train.py: rerun resumes at the checkpoint's step and finishes with finite loss"
              + (" (rerun under torchrun --nproc_per_node=1, gloo)" if ctx.quick else ""),
              rc == 0 and last is not None and (resumed_at is None or resumed_at == last) and ok_finite
              and bool(row_steps) and row_steps == sorted(set(row_steps)) and row_steps[-1] == steps,
              f"exit {rc}, resumed at step {resumed_at if m else '(no resume line in the log)'} (checkpoint "
              f"{last}); {detail}" + ("" if rc == 0 else f"; log: {_tail(work / 'r18_resume.log')}"))

    # 2. resnet50 at low resolution (not in --quick: the same code path as run 1, another model)
    if ctx.quick:
        ctx.fig("resnet50 run", "skipped in --quick")
    else:
        _run_r50(ctx, train, work, r50)

    # 3. torchrun --nproc_per_node=1: a process group of one (nccl on a GPU), DDP + SAM's no_sync pass
    if ctx.quick:
        ctx.fig("torchrun SAM run", "skipped in --quick (the resume above ran under torchrun; DDP + SAM run "
                                    "in-process in b_syncs)")
        return
    ctx.need(15, "torchrun run")
    steps_tr = 60 if not ctx.quick else 12
    rd = work / "torchrun"
    cmd = [*torchrun, str(ROOT / "train.py"), *_train_overrides(ctx, steps=steps_tr, **small, extra=["optimizer=sam"]),
           f"hydra.run.dir={rd}"]
    t0 = time.perf_counter()
    rc = _run(ctx, cmd, work / "torchrun.log")
    ctx.fig("torchrun run seconds", time.perf_counter() - t0)
    ok_finite, detail = _finite_run(rd, steps_tr)
    backend = "nccl" if ctx.cuda else "gloo"
    ctx.check(f"torchrun --nproc_per_node=1 ({backend}) SAM-HAM {steps_tr} steps", rc == 0 and ok_finite,
              f"exit {rc}; {detail}" + ("" if rc == 0 else f"; log: {_tail(work / 'torchrun.log')}"))


# ---------------------------------------------------------------------------------------------------- report
def _versions(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda (torch built with)":
            torch.version.cuda, "platform": platform.platform()}
    from importlib import metadata

    for dist_name in ("triton", "torchvision", "timm", "numpy", "hydra-core", "omegaconf", "wandb"):
        with contextlib.suppress(metadata.PackageNotFoundError):  # versions without importing (triton: seconds)
            info[dist_name] = metadata.version(dist_name)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device"] = torch.cuda.get_device_name(device)
        info["memory GiB"] = round(props.total_memory / 2**30, 1)
        info["compute capability"] = f"{props.major}.{props.minor}"
        info["cudnn"] = torch.backends.cudnn.version()
        with contextlib.suppress(Exception):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=False).stdout.strip()
            info["driver"] = out.splitlines()[0] if out else None
    else:
        info["device"] = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    with contextlib.suppress(Exception):
        info["git commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                            text=True, cwd=ROOT, timeout=10, check=False).stdout.strip()
    return info


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return out


def write_report(ctx: Ctx, out: Path, name: str, info: dict, wall: float, argv: list[str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    n_fail = sum(not c["ok"] for c in ctx.checks)
    data = {"device_name": name, "quick": ctx.quick, "versions": info, "wall_s": wall,
            "command": " ".join(["python", "benchmarks/gpu_check.py", *argv]), "parts": ctx.parts,
            "checks": ctx.checks, "targets": ctx.targets, "figures": ctx.figures,
            "passed": n_fail == 0}
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    jpath.write_text(json.dumps(data, indent=2, default=str) + "\n")
    lines = [f"# GPU check: {info.get('device')}{' (CPU dry run, --quick)' if ctx.quick else ''}", "",
             (f"`{data['command']}` -- {wall:.0f} s in all; {len(ctx.checks) - n_fail} checks passed, "
              f"{n_fail} failed."), "", "| version | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", "## Checks", ""]
    lines += [f"- {'PASS' if c['ok'] else 'FAIL'} [{c['part']}] {c['name']}" + (f" -- {c['detail']}" if c['detail']
                                                                                 else "") for c in ctx.checks]
    if ctx.targets:
        lines += ["", "## Performance targets", ""]
        lines += [f"- {'met' if t['met'] else 'MISSED'} [{t['part']}] {t['name']} -- {t['detail']}"
                  for t in ctx.targets]
    lines += ["", "## Parts", "", "| part | status | seconds | budget s |", "|---|---|---|---|"]
    lines += [f"| {k} | {p['status']} | {p['seconds']:.1f} | {p['budget']} |" for k, p in ctx.parts.items()]
    for part, figs in ctx.figures.items():
        lines += ["", f"## {part}", ""]
        for k, v in figs.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                lines += [f"{k}:", "", *_table(v), ""]
            elif isinstance(v, dict):
                lines += [f"- {k}: " + ", ".join(f"{a}: {_fmt(b)}" for a, b in v.items())]
            else:
                lines += [f"- {k}: {_fmt(v)}"]
    for p in ctx.parts.values():
        if p.get("error"):
            lines += ["", "```", p["error"], "```"]
    mpath.write_text("\n".join(lines) + "\n")
    return mpath, jpath


def device_file_name(device: torch.device, quick: bool) -> str:
    if device.type != "cuda":
        return "cpu-quick" if quick else "cpu"
    name = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-")
    return name + ("-quick" if quick else "")


RUNNERS = {"a_correctness": part_a, "b_step": part_b_step, "b_train": part_b_train, "b_compile": part_b_compile,
           "b_deit": part_b_deit, "b_syncs": part_b_syncs, "c_e2e": part_c}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes; runs on CPU (the test suite's dry run)")
    ap.add_argument("--out", default=str(ROOT / "results" / "gpu"), help="folder for <device>.md and .json")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; allowed: {', '.join(PARTS)}")
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if device.type != "cuda" and not args.quick:
        print("no CUDA device here: use --quick for the CPU dry run", file=sys.stderr)
        return 2
    ctx = Ctx(args.quick, device)
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # as the trainer sets it (trainer.cudnn_benchmark)
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    info = _versions(device)
    print(f"gpu_check on {info.get('device')} (torch {torch.__version__}); parts: {', '.join(parts)}", flush=True)
    t_all = time.perf_counter()
    total_budget = sum(budgets[p] for p in parts) * args.budget_scale + TOTAL_GRACE_S
    for part in parts:
        budget = budgets[part] * args.budget_scale
        if time.perf_counter() - t_all > total_budget - budget / 2:
            ctx.parts[part] = {"status": "skipped: the run's total budget is spent", "seconds": 0.0,
                               "budget": budget}
            print(f"== {part}: skipped (total budget spent)", flush=True)
            continue
        ctx.part, ctx.deadline = part, time.perf_counter() + budget
        print(f"== {part} (budget {budget:.0f} s)", flush=True)
        t0 = time.perf_counter()
        status, err = "ok", None
        try:
            RUNNERS[part](ctx)
        except BudgetExceeded as e:
            status = f"cut: {e}"
            print(f"  (cut) {e}", flush=True)
        except Exception as e:  # noqa: BLE001 -- a failing part is reported and the rest still runs
            status = f"error: {type(e).__name__}: {str(e)[:300]}"
            err = traceback.format_exc()[-3000:]
            ctx.check(f"{part} ran to the end", False, f"{type(e).__name__}: {str(e)[:300]}")
            print(err, file=sys.stderr, flush=True)
        finally:
            with contextlib.suppress(Exception):
                if ctx.cuda:
                    torch.cuda.set_sync_debug_mode("default")
            free_memory(device)
        ctx.parts[part] = {"status": status, "seconds": time.perf_counter() - t0, "budget": budget,
                           **({"error": err} if err else {})}
    wall = time.perf_counter() - t_all
    mpath, jpath = write_report(ctx, Path(args.out), device_file_name(device, args.quick), info, wall, argv)
    n_fail = sum(not c["ok"] for c in ctx.checks)
    print(f"{len(ctx.checks) - n_fail} checks passed, {n_fail} failed; {wall:.0f} s; report: {mpath} and {jpath}")
    for c in ctx.checks:
        print(f"{'PASS' if c['ok'] else 'FAIL'} {c['name']}")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
