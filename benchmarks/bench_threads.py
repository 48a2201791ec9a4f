#!/usr/bin/env python
"""CPU threads for the quickstart, idle and under load: `trainer.threads=auto` (one thread for this small model)
against torch's default of one thread per core, and the start-up cost of a run.

Each case runs `train.py experiment=quickstart trainer.max_steps=N` in a fresh process and a fresh directory,
alternating the settings so that drifting machine speed hits both alike. "Under load" adds one busy process
per --load (a pure-Python spin loop, like any other job sharing the machine). Reported per case: training
steps/s (steps / summary wall time), start-up seconds (process wall time minus the run's own wall time:
imports, composing, building), medians over --repeats.

    uv run python benchmarks/bench_threads.py [--steps 300] [--repeats 3] [--out results/benchmarks/threads.md]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def one_run(threads: str, steps: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=quickstart",
                        f"trainer.max_steps={steps}", f"trainer.threads={threads}", "trainer.progress_bar=false"],
                       cwd=d, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        summary = json.loads(next(Path(d).glob("runs/*/summary.json")).read_text())
    return summary["steps"] / summary["wall_time_s"], wall - summary["wall_time_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--load", type=int, default=1, help="busy processes in the 'under load' cases")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = [("auto", "auto (1 thread: 0.06M parameters)"), (str(cores), f"{cores} threads (torch's default)")]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    loads: dict[str, list[float]] = {}
    for load in ("idle", "under load"):
        for _ in range(a.repeats):
            for threads, _label in settings:
                busy = []
                if load != "idle":
                    busy = [mp.Process(target=spin, args=(time.time() + 3600,)) for _ in range(a.load)]
                    for b in busy:
                        b.start()
                try:
                    loads.setdefault(load, []).append(os.getloadavg()[0])
                    results.setdefault((load, threads), []).append(one_run(threads, a.steps))
                finally:
                    for b in busy:
                        b.kill()
                        b.join()
    host = f"{platform.processor() or platform.machine()}, {cores} usable cores, Python {platform.python_version()}"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [f"# Quickstart CPU threads: auto vs torch's default ({a.steps} steps, median of {a.repeats})", "",
             f"Host: {host}; commit {commit}; {a.load} added busy process(es) in the 'under load' rows; command: "
             f"`uv run python benchmarks/bench_threads.py --steps {a.steps} --repeats {a.repeats}`. Steps/s = "
             f"steps / the run's wall time (training, evaluation, checkpoints).", "",
             "| machine (1-min load average at the starts) | trainer.threads | training steps/s | start-up s | "
             "steps/s vs default |", "|---|---|---|---|---|"]
    for load in ("idle", "under load"):
        default = statistics.median(r[0] for r in results[(load, settings[1][0])])
        for threads, label in settings:
            rate = statistics.median(r[0] for r in results[(load, threads)])
            start = statistics.median(r[1] for r in results[(load, threads)])
            span = f"{min(loads[load]):.1f}-{max(loads[load]):.1f}"
            lines.append(f"| {'no added load' if load == 'idle' else load} ({span}) | {label} | {rate:.0f} | {start:.1f} | {rate / default:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
