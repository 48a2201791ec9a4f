#!/usr/bin/env python
"""alpha/beta grids, the paper's tables and Optuna searches as Hydra multiruns of train.py, plus their results.

    python sweep.py experiment=quickstart --alpha 0 100 200 --beta 0 1e-3 --seeds 0 1
    python sweep.py --table table2 --seeds 0 1 2 --launcher slurm --partition gpu   # a 4xA100 node per job
    python sweep.py experiment=quickstart --launcher slurm --partition cpu --gpus-per-node 0 --cpus-per-task 4
    python sweep.py --search ham_optuna experiment=quickstart --trials 20     # configs/hparams_search/
    python sweep.py --table proxy --seeds 0 1 2 3 4 --report-dir results/proxy   # the CPU proxy study (time: README)
    python sweep.py --table table10 --seeds 0 1 2 data_dir=/datasets/graphs      # node classification, Tables 10-15
    python sweep.py --table node_proxy --seeds 0 1 2 3 4 --report-dir results/node_proxy   # its CPU proxy (SBM)
    python sweep.py --collect runs/sweeps/<name>          # table (results.md, runs.csv) + grid.png

Positional arguments are train.py overrides shared by every job. Each block of jobs is one
`train.py -m ... hydra.sweep.dir=runs/sweeps/<name>` (printed with --dry-run: the same thing by hand), so jobs
go to runs/sweeps/<name>/<job overrides>; rerunning the same sweep skips finished jobs and resumes the rest.
Exit codes: 0 done, 1 some job failed, 2 bad input (one line; nothing launched or created), 3 stopped by
SIGTERM/SIGUSR1 (forwarded to the running train.py, which checkpointed: rerun to resume), 130 Ctrl-C (the same,
with the shell's code for SIGINT; a second Ctrl-C stops the running train.py at once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ham.slurm import SlurmOptions


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; it must be >= 1")
    return value


def split_overrides(p: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(train.py overrides, sweep.py's own arguments). An override (`key=value`, `+key=v`, `~key`) may stand
    anywhere on the line, also after a list option (`--seeds 0 trainer.max_steps=44`); a `key=value` token is
    an option's value only right after an option that takes one value (e.g. `--extra mail-type=END`)."""
    single = {s for a in p._actions if isinstance(a, (argparse._StoreAction, argparse._AppendAction))
              and a.option_strings and a.nargs is None for s in a.option_strings}
    overrides, rest, prev, listing = [], [], None, None
    for token in argv:
        is_override = not token.startswith("-") and ("=" in token or token.startswith("~"))
        # --str-decay's values are SPARSITY=DECAY: a config key never starts with a digit
        str_decay_value = listing == "--str-decay" and token[:1].isdigit()
        if is_override and prev not in single and not str_decay_value:
            overrides.append(token)
        else:
            rest.append(token)
        prev = token if token.startswith("-") and "=" not in token else None
        listing = prev if prev is not None else (listing if not token.startswith("-") else None)
    return overrides, rest


def parse_str_decay(items: list[str]) -> dict[float, tuple[float | None, float]]:
    """`0.8=1e-5` or `0.8=1e-5,-3200` -> {0.8: (s_init, decay)} (s_init None when not given: table3's published
    -3200, proxy_mnist's preset value)."""
    out = {}
    for item in items:
        try:
            target, rest = item.split("=", 1)
            parts = rest.split(",")
            decay, s_init = float(parts[0]), float(parts[1]) if len(parts) > 1 else None
            t = float(target)
        except (ValueError, IndexError):
            raise ValueError(f"{item!r} is not SPARSITY=DECAY[,S_INIT] (e.g. 0.8=1e-5)") from None
        if not 0 < t < 1 or decay < 0:
            raise ValueError(f"{item!r}: need 0 < SPARSITY < 1 and DECAY >= 0")
        out[t] = (s_init, decay)
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="train.py overrides shared by all jobs (anywhere on the line)")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0, 200.0],
                   help="grid of ham.alpha values (default: %(default)s)")
    p.add_argument("--beta", type=float, nargs="+", default=[0.0, 1e-3],
                   help="grid of ham.beta values (default: %(default)s; a single value gives a 1-D grid)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every cell (default: %(default)s)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--table", choices=["table2", "table3", "table7", "table8", "proxy", "proxy_mnist", "str_decay", "table10", "table11",
                                          "table13", "table14", "node_grid", "node_proxy"],
                      help="run one of the paper's tables instead of an alpha/beta grid (proxy_mnist: the second CPU proxy, "
                           "str_decay: STR's sparsity per threshold decay; node classification: "
                           "table10/11 HAM vs baseline, table13/14 + nHAM, node_grid the alpha/beta tuning, "
                           "node_proxy the CPU study)")
    what.add_argument("--search", metavar="NAME", help="a configs/hparams_search/NAME.yaml search (e.g. ham_optuna)")
    p.add_argument("--trials", type=positive_int, help="--search: number of trials (default: the search config's)")
    p.add_argument("--proxy-sparsity", type=float, default=0.95, help="--table proxy: the sparse rows' sparsity")
    p.add_argument("--str-decay", nargs="+", default=[], metavar="SPARSITY=DECAY[,S_INIT]",
                   help="--table table3 / proxy_mnist: STR's threshold decay (and s_init; default: table3 the published "
                        "-3200, proxy_mnist the preset's) per target without a published pair (table3: only 90 %% has "
                        "one), e.g. 0.8=1e-5 0.95=4e-5; calibrate with --table str_decay")
    p.add_argument("--decays", type=float, nargs="+", default=[],
                   help="--table str_decay: the threshold weight decays to try (STR as published, one cell each)")
    p.add_argument("--hams", nargs="+", default=["off", "default"],
                   help="--table str_decay: the ham options compared (default: %(default)s)")
    p.add_argument("--parallel", type=positive_int, default=1,
                   help="local: run this many jobs at once (one multirun per seed and block; e.g. 2 one-thread jobs "
                        "on 2 cores)")
    p.add_argument("--name", help="sweep name (default: derived from the table/overrides plus a hash)")
    p.add_argument("--root", default="runs/sweeps", help="parent directory of sweeps")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--nproc", type=positive_int, default=1, help="local: DDP processes per job (hydra submitit_local)")
    SlurmOptions.add_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="check every job, print the commands and exit")
    p.add_argument("--collect", metavar="SWEEP_DIR", help="only collect results of an existing sweep")
    p.add_argument("--metric", default=None, help="summary key the tables report (default: val/top1; node "
                                                  "tables: val/best, the best validation metric, as the paper)")
    p.add_argument("--report-dir", type=Path, help="also copy results.md, runs.csv and plots here "
                                                   "(e.g. results/proxy)")
    overrides, rest = split_overrides(p, argv)
    args = p.parse_intermixed_args(rest)
    args.overrides = [*overrides, *args.overrides]
    return args


def main(argv: list[str]) -> int:
    from ham import sweep
    from ham.errors import ConfigError

    args = parse(argv)
    if args.collect:
        d = Path(args.collect)
        if not (d / "sweep.json").is_file():
            print(f"error: {d} is not a sweep directory (no sweep.json)", file=sys.stderr)
            return 2
        print(sweep.write_reports(d, args.metric))
        sweep.copy_reports(d, args.report_dir)
        return 0
    extra = list(args.overrides)
    try:
        how = sweep.Launch(launcher=args.launcher, nproc=args.nproc, parallel=args.parallel,
                           slurm=SlurmOptions.from_args(args) if args.launcher == "slurm" else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    needs = []  # the plugins this request uses: one line naming the extra, before anything is checked or written
    if args.launcher == "slurm":
        needs.append(("slurm", "--launcher slurm"))
    elif args.nproc > 1:
        needs.append(("slurm", f"--nproc {args.nproc} (Hydra's submitit_local launcher)"))
    if args.search:
        needs.append(("hpo", f"--search {args.search}"))
    from ham.extras import missing_message

    for extra_name, what in needs:
        problem = missing_message(extra_name, what)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        str_decay = parse_str_decay(args.str_decay)
    except ValueError as e:
        print(f"error: --str-decay: {e}", file=sys.stderr)
        return 2
    if args.table == "str_decay" and not args.decays:
        print("error: --table str_decay needs --decays (e.g. --decays 0 5e-4 1e-3 2e-3 4e-3)", file=sys.stderr)
        return 2
    if args.table:
        blocks = sweep.table_blocks(args.table, args.seeds, proxy_sparsity=args.proxy_sparsity,
                                    str_decay=str_decay, decays=args.decays, hams=args.hams)
        exp = "imagenet_resnet50 sparsifier.s_init=-3200" if args.table == "table3" else args.table
        for target in sweep.missing_str_cells(args.table, str_decay):
            print(f"note: STR s={sweep.fmt(target)} is not run: no published (s_init, decay) pair for it; calibrate "
                  f"with `python sweep.py --table str_decay experiment={exp} --decays ...` and pass --str-decay "
                  f"{sweep.fmt(target)}=DECAY", file=sys.stderr)
    elif args.search:
        blocks = [sweep.Block([f"hparams_search={args.search}", f"seed={sweep.values(args.seeds)}"])]
    else:
        blocks = sweep.grid_blocks([], args.alpha, args.beta, args.seeds)
    try:
        # every job composed and checked here: a typo fails now, not in the 40th SLURM job. On SLURM the data
        # usually lives only on the compute nodes (each job checks it there); --dry-run never touches it.
        n = sweep.check_jobs(blocks, extra, check_data=args.launcher == "local" and not args.dry_run,
                             world_size=how.world_size())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    launch_extra = list(extra)
    if args.search:
        n = args.trials or n
        if args.trials:
            launch_extra.append(f"hydra.sweeper.n_trials={args.trials}")
    if args.name is not None and (not args.name or Path(args.name).name != args.name or args.name in (".", "..")):
        print(f"error: --name {args.name!r} is not allowed; allowed: one directory name (no '/', not '..'), "
              f"created under --root {args.root}", file=sys.stderr)
        return 2
    name = args.name or sweep.sweep_name(args.table, args.search, blocks, extra)
    if args.parallel > 1 and args.launcher == "local":  # after naming: the same sweep with or without --parallel
        blocks = sweep.split_for_parallel(blocks, args.parallel)
    sweep_dir = Path(args.root) / name
    if args.dry_run:
        for block in blocks:
            print(" ".join(sweep.multirun_command(block, sweep_dir, launch_extra, how)))
        return 0
    if how.launcher == "slurm":  # before anything is written: a request this cluster refuses is one line, exit 2
        refused = how.slurm.check()
        if refused:
            print(f"error: SLURM refuses the job resources ({how.slurm.describe()}): {refused}; choose them with "
                  f"--partition, --gpus-per-node (0 on a CPU partition), --tasks-per-node, --cpus-per-task, --time",
                  file=sys.stderr)
            return 2
    sweep.write_manifest(sweep_dir, table=args.table, blocks=blocks, extra=extra, expected=n)
    print(f"sweep {name}: {n} jobs in {len(blocks)} multirun(s) in {sweep_dir}", flush=True)
    codes = sweep.launch(blocks, sweep_dir, launch_extra, how)
    print(sweep.write_reports(sweep_dir, args.metric))
    sweep.copy_reports(sweep_dir, args.report_dir)
    failed = [c for c in codes if c != 0]
    if failed:
        print(f"error: {len(failed)} of {len(codes)} multirun(s) ended with a failed job (exit codes {codes}); "
              f"rerun the same command to resume", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C before or after the launch (during it, train.py's own handling answers)
        print("error: interrupted by SIGINT (Ctrl-C); finished jobs are kept, rerun the same command to resume; "
              "exit 130", file=sys.stderr, flush=True)
        sys.exit(130)
