#!/usr/bin/env python
"""alpha/beta grids and the paper's tables: expand -> launch (local or SLURM) -> collect a table + heatmap.

    python sweep.py experiment=quickstart --alpha 0 100 200 --beta 0 1e-3 --seeds 0 1
    python sweep.py --table table2 --seeds 0 1 2 --launcher slurm --partition gpu --gpus-per-node 4
    python sweep.py --collect runs/sweeps/<name>          # table (results.md, runs.csv) + grid.png

Positional arguments are train.py overrides shared by every job. Jobs go to runs/sweeps/<name>/<job>; rerunning
the same sweep skips finished jobs and resumes unfinished ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ham import sweep


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="train.py overrides shared by all jobs")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0, 200.0])
    p.add_argument("--beta", type=float, nargs="+", default=[0.0, 1e-3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--table", choices=["table2", "table3", "table7", "table8"],
                   help="run one of the paper's tables instead of an alpha/beta grid")
    p.add_argument("--name", help="sweep name (default: derived from the table or overrides)")
    p.add_argument("--root", default="runs/sweeps", help="parent directory of sweeps")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--nproc", type=int, default=1, help="local: processes per job (torchrun)")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--timeout-min", type=int, default=24 * 60)
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then collect")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument("--collect", metavar="SWEEP_DIR", help="only collect results of an existing sweep")
    p.add_argument("--metric", default="val/top1")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.collect:
        d = Path(args.collect)
        if not (d / "sweep.json").is_file():
            print(f"error: {d} is not a sweep directory (no sweep.json)", file=sys.stderr)
            return 2
        print(sweep.write_reports(d, args.metric))
        return 0
    if args.table:
        jobs = sweep.table_jobs(args.table, args.seeds)
        name = args.name or args.table
    else:
        jobs = sweep.grid_jobs([], args.alpha, args.beta, args.seeds)
        name = args.name or ("grid_" + "_".join(o.replace("=", "-").replace("/", "-") for o in args.overrides)
                             if args.overrides else "grid")
    extra = list(args.overrides)

    # validate every job's config up front: a typo fails here, not in the 40th SLURM job
    from ham.cli import prepare
    from ham.errors import ConfigError

    for job in jobs:
        try:
            prepare([*job.overrides, *extra])
        except ConfigError as e:
            print(f"error: job {job.name}: {e}", file=sys.stderr)
            return 2

    sweep_dir = Path(args.root) / name
    if args.dry_run:
        for job in jobs:
            print(" ".join(sweep.train_command(job, sweep_dir / job.name, extra, args.nproc)))
        return 0
    sweep.write_manifest(sweep_dir, jobs, extra)
    print(f"sweep {name}: {len(jobs)} jobs in {sweep_dir}", flush=True)
    if args.launcher == "local":
        codes = sweep.launch_local(jobs, sweep_dir, extra, args.nproc)
        failed = {k: v for k, v in codes.items() if v != 0}
    else:
        sweep.launch_slurm(jobs, sweep_dir, extra, partition=args.partition, nodes=args.nodes,
                           gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                           timeout_min=args.timeout_min, account=args.account, wait=args.wait)
        failed = {}
        if not args.wait:
            print(f"submitted; collect later with: python sweep.py --collect {sweep_dir}")
            return 0
    print(sweep.write_reports(sweep_dir, args.metric))
    if failed:
        print(f"error: {len(failed)} job(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
