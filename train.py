#!/usr/bin/env python
"""Train with HAM -- a Hydra application (`python train.py --help` lists groups, options and flags).

    python train.py experiment=quickstart                        # offline CPU demo (~30 s idle)
    python train.py model=resnet50 ham.alpha=200 sparsifier=acdc data_dir=/data/imagenet
    python train.py -m experiment=quickstart ham.alpha=0,20,200  # a multirun grid (resumable)
    python train.py --cfg job experiment=quickstart              # print the composed config
    torchrun --nproc_per_node=4 train.py experiment=imagenet_resnet50

The app is `ham.cli.main` (`@hydra.main` over configs/train.yaml). Exit codes: 0 done, 1 failure (e.g. NaN
loss), 2 bad input (one line, nothing created), 3 preempted (checkpoint saved, or stopped before the first step:
requeue), 130 Ctrl-C (SIGINT, handled like a stop signal: checkpoint saved; a second Ctrl-C stops at once).
Rerunning the same command resumes (or skips a finished run).
"""

import sys

from ham.lifecycle import stop

stop.install()  # first: a stop signal during the imports below must end in exit 3 (requeue), not 143
try:
    from ham.cli import main
except stop.StopRequested as e:
    print(f"error: stopped by {stop.signal_name(e.signum)} before the first step; nothing new to save; "
          f"{stop.how_to_continue(e.signum)}", file=sys.stderr, flush=True)
    sys.exit(stop.exit_code(e.signum))

if __name__ == "__main__":
    try:
        code = main()
    except stop.StopRequested as e:  # in the instant between run_cli's answer and stop.exiting()
        print(f"error: stopped by {stop.signal_name(e.signum)}; {stop.how_to_continue(e.signum)}", file=sys.stderr)
        code = stop.exit_code(e.signum)
    stop.block_for_exit()  # interpreter shutdown: a late stop signal must not replace the exit code
    sys.exit(code)
