#!/usr/bin/env python
"""Cost of the hyperbolic step over ResNet50's parameter shapes (25.6M parameters), measured in ONE run.

    uv run python benchmarks/bench_ham_step.py [--threads 1,2] [--repeats 15] [--naive-repeats 2] [--no-cold-build]

First a host line (CPU model, the vector ISA and OpenMP the CPU kernel was built for, compiler, version and the
exact flags it was built with, load average). Then for the CPU (once per --threads value, torch.set_num_threads),
and for CUDA when a GPU is present (otherwise that section says it was skipped), prints:
  (a) the hyperbolic step (alpha=200, beta=1e-3, c=5, on the 25.5M weights with ndim >= 2) with each backend,
      as a ratio to a foreach SGD-momentum step (torch.optim.SGD(momentum=0.9, foreach=True)) on all 25.6M,
      and the fused step next to torch's fused SGD-momentum step (SGD(fused=True), one pass per tensor);
  (b) the same for straightforward per-tensor implementations: backend="reference" and a naive loop with
      clones and boolean masks, plus the fused step's speed-up over each;
  (c) peak extra memory of each step (CPU: growth of the peak RSS in a child process whose allocator returns
      freed memory to the OS at once, so every temporary shows; CUDA: torch.cuda.max_memory_allocated growth);
  plus the fused kernel's one-time cost (cold build, cached load, first call) and, on CUDA, its cost next to a
  ResNet50 training step.
Every time is also given as a multiple of the bandwidth floor measured in the same rounds: x.mul_(m) over the
same 25.5M weights (torch._foreach_mul_: read x and m, write x, the fused step's 3 accesses per element).
Timing is in rounds: each round times every variant once, back to back, and ratios are taken within a round
(so drifting load on a shared machine hits numerator and denominator alike); medians over rounds are printed, and
for the headline ratios also their quartiles over the rounds ([q1-q3]: how much the rounds disagree).
Every HAM call uses a new lr, as under a scheduler; the number of kernel builds after warm-up is printed (0).
"""

from __future__ import annotations

import argparse
import os
import platform
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
        # the bandwidth floor: x.mul_(m) over copies of the HAM tensors; m ~ 1, so x never drifts to subnormals
        self.floor_x = [p.clone() for p in self.ham_p]
        self.floor_m = [torch.exp(torch.randn_like(p) * 1e-4) for p in self.ham_p]
        self.naive_label = "naive per-tensor loop (clones, bool masks)"
        self.naive = (lambda: naive_step(self.ham_p, self.ham_g, 1e-9, ALPHA, BETA)) if with_naive else None

    def floor(self):
        torch._foreach_mul_(self.floor_x, self.floor_m)

    def _ham(self, backend):
        def run():
            self.lr *= 1.0001  # a new lr every call, as under a scheduler: must never rebuild/recompile
            hyperbolic_step_(self.ham_p, self.ham_g, lr=self.lr, alpha=ALPHA, beta=BETA, clamp=CLAMP,
                             backend=backend)
        return run


FLOOR = "bandwidth floor: x.mul_(m), same tensors"
SGD_FUSED = "torch fused SGD-momentum step"


def time_rounds(s: Setup, repeats: int, naive_repeats: int):
    """Median time of each variant, and medians of its within-round ratios to the foreach SGD step ("sgd"), to
    torch's fused SGD step and to the bandwidth floor."""
    variants = {"sgd": s.sgd.step, SGD_FUSED: s.sgd_fused.step, FLOOR: s.floor, **s.cases}
    for fn in variants.values():
        fn()  # warm-up (the fused kernel's one-time cost was measured before)
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for label, fn in variants.items():
            times[label].append(timed(fn, s.device))
    if s.naive is not None and naive_repeats > 0:  # no warm-up: nothing in it is one-time, and it is slow
        fused = s.cases["HAM step, backend=fused"]
        for label in ("sgd", FLOOR, s.naive_label, "fused (paired with naive)"):
            times.setdefault(label + " (naive rounds)", [])
        for _ in range(naive_repeats):
            for label, fn in (("sgd", s.sgd.step), (FLOOR, s.floor), (s.naive_label, s.naive),
                              ("fused (paired with naive)", fused)):
                times[label + " (naive rounds)"].append(timed(fn, s.device))
        times[s.naive_label] = times.pop(s.naive_label + " (naive rounds)")

    def ratio(label, unit):
        if label == s.naive_label:
            unit += " (naive rounds)"
        return statistics.median(a / b for a, b in zip(times[label], times[unit]))

    labels = [k for k in times if not k.endswith("(naive rounds)")]
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {k: {"sgd": ratio(k, "sgd"), "floor": ratio(k, FLOOR),
               "sgd_fused": ratio(k, SGD_FUSED) if k != s.naive_label else float("nan")} for k in labels}
    for k in ("HAM step, backend=fused", SGD_FUSED):  # the spread of the headline ratios over the rounds
        for unit, key in ((FLOOR, "floor"), (SGD_FUSED, "sgd_fused")):
            out[k][key + "_spread"] = _quartiles([a / b for a, b in zip(times[k], times[unit])])
    return med, out


def _quartiles(values) -> str:
    """'[q1-q3]' of within-round ratios: how much the rounds disagree (drift and other processes' load)."""
    if len(values) < 4:
        return "[n/a]"
    q = statistics.quantiles(values, n=4)
    return f"[{q[0]:.2f}-{q[2]:.2f}]"


def host_line(device) -> str:
    """CPU model, what the CPU kernel was built for and with, threads and load: the context every figure needs."""
    model = platform.processor() or platform.machine()
    try:  # the model name, plus family/model numbers (a VM may report only "AMD EPYC")
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "model name" in fields:
            model = f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    except OSError:
        pass
    info = cpu_kernel.build_info()
    kernel = (f"kernel ISA: {info.get('isa') or 'portable'} (OpenMP: {info.get('openmp')}; fp32 path: "
              f"{info.get('fp32 path', '?')}); built by "
              f"{info.get('compiler')} with `{info.get('flags')}`") if "error" not in info else \
        f"kernel NOT built ({info['error']})"
    load = ("load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())) if hasattr(os, "getloadavg") \
        else "load n/a"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"host: {model}, {cpus} CPUs usable; {kernel}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {load}")


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


def report(device, args, s: Setup | None = None, naive_repeats: int | None = None):
    s = s or Setup(device, with_naive=args.naive_repeats > 0)
    naive_repeats = args.naive_repeats if naive_repeats is None else naive_repeats
    # (one-time cost) first fused call in this process: CPU = load the cached build (or build), CUDA = Triton JIT
    builds_before = cpu_kernel.BUILD_COUNT[0]
    first_call = timed(s.cases["HAM step, backend=fused"], device)
    builds_in_first = cpu_kernel.BUILD_COUNT[0] - builds_before
    if device.type == "cpu" and not cpu_kernel.available():
        print(f"  NOTE: fused CPU kernel unavailable here ({cpu_kernel._STATE.get('error')}); 'fused' ran foreach")
    builds_after_warmup = _kernel_builds(device)
    med, ratio = time_rounds(s, args.repeats, naive_repeats)
    rebuilds = None if builds_after_warmup is None else _kernel_builds(device) - builds_after_warmup
    if device.type == "cuda":
        mems = {label: peak_extra_bytes(fn, device) for label, fn in s.cases.items()}
        if s.naive is not None:
            mems[s.naive_label] = peak_extra_bytes(s.naive, device)
    else:
        mems = args.cpu_mems if args.cpu_mems is not None else cpu_memory_in_child(s.naive is not None)
        args.cpu_mems = mems  # the same in every thread section: measured once

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        kthreads = cpu_kernel.threads() if cpu_kernel.available() else "-"
        name = f"CPU, torch {torch.get_num_threads()} threads (the fused kernel: {kthreads})"
    print(f"== {device.type}: {name}; torch {torch.__version__}")
    if device.type == "cpu":
        print(host_line(device))
    print(f"ResNet50 shapes: {s.n_all / 1e6:.1f}M parameters, {s.n_ham / 1e6:.2f}M stepped by HAM (ndim >= 2)")
    print(f"foreach SGD-momentum step: {med['sgd'] * 1e3:.2f} ms (median; the unit of 'x SGD'); bandwidth floor "
          f"x.mul_(m) over the {s.n_ham / 1e6:.2f}M HAM weights: {med[FLOOR] * 1e3:.2f} ms (the unit of 'x floor')")
    if device.type == "cpu":
        how = "built it" if builds_in_first else "loaded the cached build"
        cold = "" if args.cold_build is None else f"; cold build (empty cache): {args.cold_build:.2f} s"
        print(f"fused kernel first call: {first_call:.3f} s ({how}){cold}")
    else:
        print(f"fused kernel first call (Triton JIT or its disk cache + run): {first_call:.3f} s")
    print(f"kernel builds/compiles during the {args.repeats} timed rounds (lr changed every call): "
          f"{'not countable' if rebuilds is None else rebuilds}")
    print(f"{'':44s} {'time (ms)':>10s} {'x SGD':>7s} {'x floor':>8s} {'peak extra MiB':>15s}")
    for label in ["sgd", SGD_FUSED, FLOOR, *s.cases, *([s.naive_label] if s.naive_label in med else [])]:
        mib = f"{mems[label] / 2**20:15.1f}" if label in mems else ""
        shown = "foreach SGD-momentum step" if label == "sgd" else label
        print(f"{shown:44s} {med[label] * 1e3:10.2f} {ratio[label]['sgd']:7.2f} {ratio[label]['floor']:8.2f} {mib}")
    fused = "HAM step, backend=fused"
    print(f"(a) fused / SGD-momentum step: {ratio[fused]['sgd']:.2f}   "
          f"foreach chain / SGD: {ratio['HAM step, backend=foreach']['sgd']:.2f}")
    print(f"(a') torch fused SGD-momentum step: {med[SGD_FUSED] * 1e3:.2f} ms = "
          f"{ratio[SGD_FUSED]['sgd']:.2f}x the foreach one; fused HAM / torch fused SGD: "
          f"{ratio[fused]['sgd_fused']:.2f} {ratio[fused]['sgd_fused_spread']}")
    print(f"(floor) fused HAM / bandwidth floor: {ratio[fused]['floor']:.2f} {ratio[fused]['floor_spread']}   "
          f"torch fused SGD / floor: {ratio[SGD_FUSED]['floor']:.2f} {ratio[SGD_FUSED]['floor_spread']} (it moves 5 "
          f"accesses per element to the floor's 3)   [q1-q3] of the {args.repeats} within-round ratios")
    line = f"(b) fused / reference: {med[fused] / med['HAM step, backend=reference']:.3f}"
    if s.naive_label in med:
        line += f"   fused / naive loop: {med['fused (paired with naive) (naive rounds)'] / med[s.naive_label]:.4f}"
    print(line)
    print(f"(c) peak extra memory, fused: {mems.get(fused, float('nan')) / 2**20:.1f} MiB")
    if device.type == "cuda" and not args.no_train_step:
        t_train = resnet50_train_step_seconds(device)
        print(f"ResNet50 training step (batch 64, 224px, bf16 autocast): {t_train * 1e3:.1f} ms; "
              f"fused HAM step = {med[fused] / t_train * 100:.2f}% of it")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default=None,
                    help="CPU thread counts to time, comma-separated, e.g. 1,2 (default: torch's current setting)")
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
    args.cpu_mems = None
    cpu = torch.device("cpu")
    counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    setup = Setup(cpu, with_naive=args.naive_repeats > 0)
    for i, n in enumerate(counts):
        torch.set_num_threads(n)
        report(cpu, args, setup, naive_repeats=args.naive_repeats if i == 0 else 0)  # the slow naive loop once
    if torch.cuda.is_available():
        report(torch.device("cuda"), args)
    else:
        print("== cuda: skipped (torch.cuda.is_available() is False: no GPU on this machine)")


if __name__ == "__main__":
    main()
