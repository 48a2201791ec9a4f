#!/usr/bin/env python
"""How fast train.py answers without training: --help, --cfg, --info and config errors (target: < 1.5 s each on
the 2-core CI machine). Each command runs `--repeats` times in a fresh process; the median wall time is shown,
next to `python -c "import torch"` measured the same way (what every answer would cost if it imported torch).

    uv run python benchmarks/bench_cli_latency.py [--repeats 5] [--out results/benchmarks/cli_latency.md]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("--help", ["--help"], 0),
    ("--cfg job (quickstart)", ["--cfg", "job", "experiment=quickstart"], 0),
    ("--info", ["--info"], 0),
    ("unknown key", ["experiment=quickstart", "trainer.epochz=3"], 2),
    ("bad value", ["experiment=quickstart", "optimizer.lr=-1"], 2),
    ("unknown group option", ["model=resnet51"], 2),
    ("missing ImageNet (the default config)", ["data_dir=/definitely/not/here"], 2),
    ("bad job in a -m sweep", ["-m", "experiment=quickstart", "optimizer.lr=0.1,-1"], 2),
]


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, cwd=cwd)
    return time.perf_counter() - t0, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        ref = [timed([sys.executable, "-c", "import torch"], cwd)[0] for _ in range(args.repeats)]
        for label, argv, want in CASES:
            runs = [timed([sys.executable, str(ROOT / "train.py"), *argv, f"hydra.run.dir={cwd / 'run'}",
                           f"hydra.sweep.dir={cwd / 'sweep'}"] if argv[0] not in ("--help", "--info") else
                          [sys.executable, str(ROOT / "train.py"), *argv], cwd) for _ in range(args.repeats)]
            codes = {c for _, c in runs}
            rows.append((label, statistics.median(t for t, _ in runs), codes == {want}))
        created = sorted(p.name for p in cwd.iterdir())
    lines = [f"`python benchmarks/bench_cli_latency.py --repeats {args.repeats}` (median wall time of fresh processes)",
             "", "| command | median s | exit code as expected |", "|---|---|---|"]
    lines += [f"| {label} | {t:.2f} | {'yes' if ok else 'NO'} |" for label, t, ok in rows]
    lines += ["", f"reference: `python -c \"import torch\"` alone: {statistics.median(ref):.2f} s",
              f"files created in the working directory by all of the above: {created or 'none'}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
