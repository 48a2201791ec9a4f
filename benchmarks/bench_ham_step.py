#!/usr/bin/env python
"""Cost of the hyperbolic step over ResNet50's parameter shapes (25.6M parameters), measured in ONE run.

    uv run python benchmarks/bench_ham_step.py [--device cpu|cuda] [--repeats 15]

Prints, as ratios to a foreach SGD-momentum step (torch.optim.SGD(momentum=0.9, foreach=True)) on the same
tensors: (a) the hyperbolic step with each backend; (b) the straightforward per-tensor implementation
(backend="reference") and a naive loop with clones and boolean masks; (c) peak extra memory of the step
(CPU: peak-RSS growth with glibc returning freed memory; CUDA: max_memory_allocated growth), plus the fused
kernel's one-time compile cost. Medians over --repeats timed runs after two warm-ups.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torchvision

from ham.optim.functional import hyperbolic_step_


def resnet50_tensors(device):
    torch.manual_seed(0)
    params = [p.detach().to(device).clone() for p in torchvision.models.resnet50().parameters()]
    grads = [torch.randn_like(p) * 1e-2 for p in params]
    return params, grads


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats):
    fn(), fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def naive_step(params, grads, lr, alpha, beta, c=5.0):
    """What a first implementation looks like: per tensor, clones, boolean masks, Python branching."""
    for p, g in zip(params, grads):
        x = p.clone()
        pos, neg = x > 0, x < 0
        e = torch.full_like(x, -lr * beta)
        e[pos] -= lr * alpha * g[pos]
        e[neg] += lr * alpha * g[neg]
        e = torch.clamp(e, -c, c)
        p.copy_(x * torch.exp(e))


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_extra_bytes(fn, device):
    """Peak temporary memory of fn. CUDA: max_memory_allocated growth. CPU: growth of the peak RSS (reset via
    /proc/self/clear_refs); the benchmark re-executes itself with glibc's mmap threshold lowered so freed
    tensors go back to the OS and every temporary shows up in the peak."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    base = _status_kb("VmRSS:")
    fn()
    return max(0, _status_kb("VmHWM:") - base) * 1024


def measure_memory_in_child(args) -> dict[str, float]:
    """CPU memory is measured in a child process whose glibc returns freed memory to the OS at once (so each
    temporary shows in the peak RSS); timing stays in this normal process, where that setting would slow it."""
    import subprocess

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    cmd = [sys.executable, __file__, "--memory-only", "--device", "cpu"] + (["--skip-naive"] if args.skip_naive
                                                                            else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {line.split("\t")[1]: float(line.split("\t")[2]) for line in out.splitlines() if line.startswith("MEM")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    params, grads = resnet50_tensors(device)
    ham_p = [p for p in params if p.ndim >= 2]
    ham_g = [g for p, g in zip(params, grads) if p.ndim >= 2]
    n_all, n_ham = sum(p.numel() for p in params), sum(p.numel() for p in ham_p)

    ps = [torch.nn.Parameter(p) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g
    sgd = torch.optim.SGD(ps, lr=1e-9, momentum=0.9, foreach=True)
    t_sgd = timeit(sgd.step, device, args.repeats)

    lr = [1e-9]

    def ham(backend):
        def run():
            lr[0] *= 1.0001  # a new lr every call, as under a scheduler: must not recompile
            hyperbolic_step_(ham_p, ham_g, lr=lr[0], alpha=200.0, beta=1e-3, backend=backend)
        return run

    os.environ["HAM_CPU_FUSED"] = "always"
    t0 = time.perf_counter()
    ham("fused")()
    sync(device)
    first_call = time.perf_counter() - t0

    cases = {f"HAM step, backend={b}": ham(b) for b in ("fused", "foreach", "reference")}
    if not args.skip_naive:
        cases["naive per-tensor loop (clones, bool masks)"] = lambda: naive_step(ham_p, ham_g, 1e-9, 200.0, 1e-3)
    if args.memory_only:
        for label, fn in cases.items():
            fn()
            print(f"MEM\t{label}\t{peak_extra_bytes(fn, device)}")
        return
    mems = measure_memory_in_child(args) if device.type == "cpu" else \
        {label: peak_extra_bytes(fn, device) for label, fn in cases.items()}
    rows = []
    for label, fn in cases.items():
        reps = args.repeats if "naive" not in label else max(3, args.repeats // 5)
        rows.append((label, timeit(fn, device, reps), mems.get(label, float("nan"))))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"ResNet50 shapes: {n_all / 1e6:.1f}M parameters, {n_ham / 1e6:.1f}M stepped by HAM (ndim >= 2)")
    print(f"foreach SGD-momentum step: {t_sgd * 1e3:.2f} ms (the unit below)")
    print(f"fused kernel first call (compile/load + run): {first_call:.2f} s")
    print(f"{'':44s} {'time (ms)':>10s} {'x SGD step':>11s} {'peak extra MiB':>15s}")
    for label, t, mem in rows:
        print(f"{label:44s} {t * 1e3:10.2f} {t / t_sgd:11.2f} {mem / 2**20:15.1f}")


if __name__ == "__main__":
    main()
