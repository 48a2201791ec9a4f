"""torchrun target for the ffcv DDP test: build the trainer (gloo), then save the images and labels this rank's
training loader delivers in epochs 0 and 1.

Usage: ffcv_ddp_worker.py OUT_DIR [overrides]"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ham.config import compose, validate
from ham.train.build import build_run
from ham.train.distributed import setup_distributed, teardown_distributed

if __name__ == "__main__":
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    cfg = compose(argv)
    env = setup_distributed()
    validate(cfg, world_size=env.world_size)
    out.mkdir(parents=True, exist_ok=True)
    loader = build_run(cfg, env).train_loader
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = [(x.clone(), y.clone()) for x, y in loader]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        torch.save((x, y), out / f"rank{env.rank}_epoch{epoch}.pt")
    dist.barrier()
    teardown_distributed()
