"""Regenerate results/theory/: `python -m ham.theory [--out results/theory] [--quick]`.

  fig3_linreg.png, linreg_curves.csv, linreg_final*.csv   GD vs HAM vs HAM signed (Appendix D.1, Fig. 3), all lrs
  linreg_alpha_sweep.png                                   final distance and speed over alpha (beta = 0)
  flow_gap.png / flow_gap.csv                              Thm 4.2: discrete HAM vs its gradient flow, gap ~ lr
  fig2b_bregman.png / bregman.csv                          normalised R_alpha for several alpha (Thm 4.6)
  fig1_inverse_metric.png / .csv                           1 + alpha|x| vs GD (1) vs m*w sqrt(x^2 + gamma^2)
  README.md                                                the numbers, and what they say about the paper's claims
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ham.theory import experiments, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ham.theory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/theory", help="output folder (default: results/theory)")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke version (fewer seeds, steps, lrs)")
    args = ap.parse_args(argv)
    # the tensors are tiny ([seeds, methods, 100]): extra threads cost more than they give, and one thread
    # makes every reduction, hence every committed number, reproducible bit for bit
    torch.set_num_threads(1)
    settings = experiments.QUICK if args.quick else experiments.FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    lin = experiments.run_linreg(settings)
    summaries = report.linreg_files(out, lin, settings)
    gaps = experiments.run_flow(settings)
    report.flow_files(out, gaps)
    report.geometry_files(out)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    cmd = "python -m ham.theory" + (" --quick" if args.quick else "") + \
        ("" if args.out == "results/theory" else f" --out {args.out}")
    report.readme(out, lin, settings, summaries, gaps, seconds, cpu_seconds, args.quick, cmd)
    print(report.table(summaries, settings))
    print(f"\nwrote {out}/ in {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU (README.md has the numbers)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
