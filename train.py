#!/usr/bin/env python
"""Train with HAM -- a Hydra application (`python train.py --help` lists groups, options and flags).

    python train.py experiment=quickstart                        # offline CPU demo (~2 min)
    python train.py model=resnet50 ham.alpha=200 sparsifier=acdc data_dir=/data/imagenet
    python train.py -m experiment=quickstart ham.alpha=0,20,200  # a multirun grid (resumable)
    python train.py --cfg job experiment=quickstart              # print the composed config
    torchrun --nproc_per_node=4 train.py experiment=imagenet_resnet50

The app is `ham.cli.main` (`@hydra.main` over configs/train.yaml). Exit codes: 0 done, 1 failure (e.g. NaN
loss), 2 bad input (one line, nothing created), 3 preempted (checkpoint saved: requeue). Rerunning the same
command resumes (or skips a finished run).
"""

import sys

from ham.cli import main

if __name__ == "__main__":
    sys.exit(main())
