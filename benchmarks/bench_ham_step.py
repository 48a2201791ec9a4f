#!/usr/bin/env python
"""Cost of the hyperbolic step over ResNet50's parameter shapes (25.6M parameters), measured in ONE run.

    uv run python benchmarks/bench_ham_step.py [--repeats 15] [--naive-repeats 2] [--no-cold-build]

For the CPU, and for CUDA when a GPU is present (otherwise that section says it was skipped), prints:
  (a) the hyperbolic step (alpha=200, beta=1e-3, c=5, on the 25.5M weights with ndim >= 2) with each backend,
      as a ratio to a foreach SGD-momentum step (torch.optim.SGD(momentum=0.9, foreach=True)) on all 25.6M,
      and the fused step next to torch's fused SGD-momentum step (SGD(fused=True), one pass per tensor);
  (b) the same for straightforward per-tensor implementations: backend="reference" and a naive loop with
      clones and boolean masks, plus the fused step's speed-up over each;
  (c) peak extra memory of each step (CPU: growth of the peak RSS in a child process whose allocator returns
      freed memory to the OS at once, so every temporary shows; CUDA: torch.cuda.max_memory_allocated growth);
  plus the fused kernel's one-time cost (cold build, cached load, first call) and, on CUDA, its cost next to a
  ResNet50 training step.
Timing is in rounds: each round times every variant once, back to back, and ratios are taken within a round
(so drifting load on a shared machine hits numerator and denominator alike); medians over rounds are printed.
Every HAM call uses a new lr, as under a scheduler; the number of kernel builds after warm-up is printed (0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torchvision

from ham.optim.functional import hyperbolic_step_
from ham.optim.kernels import cpu_kernel

ALPHA, BETA, CLAMP = 200.0, 1e-3, 5.0


def resnet50_tensors(device):
    torch.manual_seed(0)
    params = [p.detach().to(device).clone() for p in torchvision.models.resnet50().parameters()]
    grads = [torch.randn_like(p) * 1e-2 for p in params]
    return params, grads


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def naive_step(params, grads, lr, alpha, beta, c=CLAMP):
    """What a first implementation looks like: per tensor, clones, boolean masks, Python branching."""
    for p, g in zip(params, grads):
        x = p.clone()
        pos, neg = x > 0, x < 0
        e = torch.full_like(x, -lr * beta)
        e[pos] -= lr * alpha * g[pos]
        e[neg] += lr * alpha * g[neg]
        e = torch.clamp(e, -c, c)
        p.copy_(x * torch.exp(e))


class Setup:
    """ResNet50-shaped params/grads, an SGD-momentum optimizer over all of them, the HAM variants over ndim>=2."""

    def __init__(self, device, with_naive=True):
        self.device = device
        params, grads = resnet50_tensors(device)
        self.n_all = sum(p.numel() for p in params)
        self.ham_p = [p for p in params if p.ndim >= 2]
        self.ham_g = [g for p, g in zip(params, grads) if p.ndim >= 2]
        self.n_ham = sum(p.numel() for p in self.ham_p)
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        for p, g in zip(ps, grads):
            p.grad = g
        self.sgd = torch.optim.SGD(ps, lr=1e-9, momentum=0.9, foreach=True)
        qs = [torch.nn.Parameter(p.clone()) for p in params]
        for q, g in zip(qs, grads):
            q.grad = g
        # torch's own single-pass SGD (what the trainer now uses where torch supports it): a second unit
        self.sgd_fused = torch.optim.SGD(qs, lr=1e-9, momentum=0.9, fused=True)
        self.lr = 1e-9
        self.cases = {f"HAM step, backend={b}": self._ham(b) for b in ("fused", "foreach", "reference")}
        self.naive_label = "naive per-tensor loop (clones, bool masks)"
        self.naive = (lambda: naive_step(self.ham_p, self.ham_g, 1e-9, ALPHA, BETA)) if with_naive else None

    def _ham(self, backend):
        def run():
            self.lr *= 1.0001  # a new lr every call, as under a scheduler: must never rebuild/recompile
            hyperbolic_step_(self.ham_p, self.ham_g, lr=self.lr, alpha=ALPHA, beta=BETA, clamp=CLAMP,
                             backend=backend)
        return run


def time_rounds(s: Setup, repeats: int, naive_repeats: int):
    """Median time of each variant and median within-round ratio to the SGD step."""
    for fn in [s.sgd.step, s.sgd_fused.step, *s.cases.values()]:
        fn()  # warm-up (the fused kernel's one-time cost was measured before)
    times = {"sgd": [], "sgd_fused": []} | {k: [] for k in s.cases}
    ratios = {k: [] for k in s.cases} | {"torch fused SGD step": [], "fused HAM / torch fused SGD": []}
    for _ in range(repeats):
        t_sgd = timed(s.sgd.step, s.device)
        t_sgd_fused = timed(s.sgd_fused.step, s.device)
        times["sgd"].append(t_sgd)
        times["sgd_fused"].append(t_sgd_fused)
        ratios["torch fused SGD step"].append(t_sgd_fused / t_sgd)
        for label, fn in s.cases.items():
            t = timed(fn, s.device)
            times[label].append(t)
            ratios[label].append(t / t_sgd)
            if label == "HAM step, backend=fused":
                ratios["fused HAM / torch fused SGD"].append(t / t_sgd_fused)
    if s.naive is not None and naive_repeats > 0:  # no warm-up: nothing in it is one-time, and it is slow
        times[s.naive_label], ratios[s.naive_label] = [], []
        fused = s.cases["HAM step, backend=fused"]
        times["fused (paired with naive)"] = []
        for _ in range(naive_repeats):
            t_sgd, t_naive, t_fused = timed(s.sgd.step, s.device), timed(s.naive, s.device), timed(fused, s.device)
            times[s.naive_label].append(t_naive)
            ratios[s.naive_label].append(t_naive / t_sgd)
            times["fused (paired with naive)"].append(t_fused)
    med = {k: statistics.median(v) for k, v in times.items()}
    return med, {k: statistics.median(v) for k, v in ratios.items()}, times, ratios


def peak_extra_bytes(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    try:  # reset the peak-RSS counter (Linux)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    base = _status_kb("VmRSS:")
    fn()
    return max(0, _status_kb("VmHWM:") - base) * 1024.0


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def cpu_memory_in_child(with_naive: bool) -> dict[str, float]:
    """Run the CPU memory measurement in a child whose glibc returns every freed block to the OS at once, so
    each temporary shows in the peak RSS (that setting would slow the timed runs in this process)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    cmd = [sys.executable, __file__, "--memory-only"] + ([] if with_naive else ["--naive-repeats", "0"])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {line.split("\t")[1]: float(line.split("\t")[2]) for line in out.splitlines() if line.startswith("MEM")}


def cold_build_seconds() -> float:
    """Build the CPU kernel from scratch (empty cache) in a child process; seconds spent in library()."""
    with tempfile.TemporaryDirectory() as cache:
        code = ("import time, torch\nfrom ham.optim.kernels import cpu_kernel\nt = time.perf_counter()\n"
                "assert cpu_kernel.library() is not None\nprint(time.perf_counter() - t)")
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HAM_KERNEL_CACHE": cache},
                             capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def resnet50_train_step_seconds(device, batch=64, repeats=10) -> float:
    """One ResNet50 training step (forward, backward, SGD-momentum step; bf16 autocast, channels_last)."""
    model = torchvision.models.resnet50().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    return statistics.median(timed(step, device) for _ in range(repeats))


def _kernel_builds(device) -> int | None:
    """CPU: compiler runs of this process; CUDA: Triton specialisations compiled (None if not countable)."""
    if device.type == "cpu":
        return cpu_kernel.BUILD_COUNT[0]
    from ham.optim.kernels.triton_kernel import compiled_variants

    return compiled_variants()


def report(device, args):
    s = Setup(device, with_naive=args.naive_repeats > 0)
    # (one-time cost) first fused call in this process: CPU = load the cached build (or build), CUDA = Triton JIT
    builds_before = cpu_kernel.BUILD_COUNT[0]
    first_call = timed(s.cases["HAM step, backend=fused"], device)
    builds_in_first = cpu_kernel.BUILD_COUNT[0] - builds_before
    if device.type == "cpu" and not cpu_kernel.available():
        print(f"  NOTE: fused CPU kernel unavailable here ({cpu_kernel._STATE.get('error')}); 'fused' ran foreach")
    builds_after_warmup = _kernel_builds(device)
    med, ratio, _, _ = time_rounds(s, args.repeats, args.naive_repeats)
    rebuilds = None if builds_after_warmup is None else _kernel_builds(device) - builds_after_warmup
    if device.type == "cuda":
        mems = {label: peak_extra_bytes(fn, device) for label, fn in s.cases.items()}
        if s.naive is not None:
            mems[s.naive_label] = peak_extra_bytes(s.naive, device)
    else:
        mems = cpu_memory_in_child(s.naive is not None)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"== {device.type}: {name}; torch {torch.__version__}")
    print(f"ResNet50 shapes: {s.n_all / 1e6:.1f}M parameters, {s.n_ham / 1e6:.2f}M stepped by HAM (ndim >= 2)")
    print(f"foreach SGD-momentum step: {med['sgd'] * 1e3:.2f} ms (median; the unit of 'x SGD')")
    if device.type == "cpu":
        how = "built it" if builds_in_first else "loaded the cached build"
        cold = "" if args.cold_build is None else f"; cold build (empty cache): {args.cold_build:.2f} s"
        print(f"fused kernel first call: {first_call:.3f} s ({how}){cold}")
    else:
        print(f"fused kernel first call (Triton JIT or its disk cache + run): {first_call:.3f} s")
    print(f"kernel builds/compiles during the {args.repeats} timed rounds (lr changed every call): "
          f"{'not countable' if rebuilds is None else rebuilds}")
    print(f"{'':44s} {'time (ms)':>10s} {'x SGD':>7s} {'peak extra MiB':>15s}")
    for label in [*s.cases, *([s.naive_label] if s.naive_label in med else [])]:
        mib = mems.get(label, float("nan")) / 2**20
        print(f"{label:44s} {med[label] * 1e3:10.2f} {ratio[label]:7.2f} {mib:15.1f}")
    fused = med["HAM step, backend=fused"]
    print(f"(a) fused / SGD-momentum step: {ratio['HAM step, backend=fused']:.2f}   "
          f"foreach chain / SGD: {ratio['HAM step, backend=foreach']:.2f}")
    print(f"(a') torch fused SGD-momentum step: {med['sgd_fused'] * 1e3:.2f} ms = "
          f"{ratio['torch fused SGD step']:.2f}x the foreach one; fused HAM / torch fused SGD: "
          f"{ratio['fused HAM / torch fused SGD']:.2f}")
    line = f"(b) fused / reference: {fused / med['HAM step, backend=reference']:.3f}"
    if s.naive_label in med:
        line += f"   fused / naive loop: {med['fused (paired with naive)'] / med[s.naive_label]:.4f}"
    print(line)
    print(f"(c) peak extra memory, fused: {mems.get('HAM step, backend=fused', float('nan')) / 2**20:.1f} MiB")
    if device.type == "cuda" and not args.no_train_step:
        t_train = resnet50_train_step_seconds(device)
        print(f"ResNet50 training step (batch 64, 224px, bf16 autocast): {t_train * 1e3:.1f} ms; "
              f"fused HAM step = {fused / t_train * 100:.2f}% of it")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds")
    ap.add_argument("--naive-repeats", type=int, default=2, help="timed calls of the slow naive loop (0: skip)")
    ap.add_argument("--no-cold-build", action="store_true", help="skip timing a from-scratch CPU kernel build")
    ap.add_argument("--no-train-step", action="store_true", help="CUDA: skip timing a ResNet50 training step")
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_only:  # child of cpu_memory_in_child
        s = Setup(torch.device("cpu"), with_naive=args.naive_repeats > 0)
        cases = dict(s.cases) | ({s.naive_label: s.naive} if s.naive is not None else {})
        for label, fn in cases.items():
            if label != s.naive_label:
                fn()  # warm-up: one-time allocations are not the step's temporaries
            print(f"MEM\t{label}\t{peak_extra_bytes(fn, torch.device('cpu'))}")
        return
    args.cold_build = None if args.no_cold_build else cold_build_seconds()
    report(torch.device("cpu"), args)
    if torch.cuda.is_available():
        report(torch.device("cuda"), args)
    else:
        print("== cuda: skipped (torch.cuda.is_available() is False: no GPU on this machine)")


if __name__ == "__main__":
    main()
