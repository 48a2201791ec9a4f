#!/usr/bin/env python
"""Train with HAM: `python train.py [group=option ...] [key=value ...]`.

    python train.py experiment=quickstart                      # offline CPU demo (~2 min)
    python train.py model=resnet50 ham.alpha=200 sparsifier=acdc data_dir=/data/imagenet
    torchrun --nproc_per_node=4 train.py experiment=imagenet_resnet50
    python train.py --cfg experiment=quickstart                # print the composed config and exit

Groups: model, dataset, optimizer, schedule, sparsifier, ham, logger, experiment (see configs/).
`hydra.run.dir=DIR` picks the run directory (default: runs/<name>_<config hash>); rerunning the same command
resumes from its last checkpoint. Exit codes: 0 done, 2 bad config, 3 preempted (checkpoint saved: requeue),
1 other failure (e.g. NaN loss).
"""

import sys

from ham.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
