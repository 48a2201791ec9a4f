"""torchrun target for the DDP test: train, then every rank saves its own copy of the weights.

Usage: ddp_worker.py RUN_DIR [overrides] (the trainer directly, so the test can read each rank's state)."""

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ham.config import compose, validate
from ham.train.build import build_run
from ham.train.distributed import setup_distributed, teardown_distributed
from ham.train.loop import fit

if __name__ == "__main__":
    run_dir, argv = Path(sys.argv[1]), sys.argv[2:]
    cfg = compose(argv)
    env = setup_distributed()
    validate(cfg, world_size=env.world_size, run_dir=run_dir)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml")
    run = build_run(cfg, env)
    fit(run, run_dir, env)
    torch.save(run.model.state_dict(), run_dir / f"rank{env.rank}_weights.pt")
    torch.save(run.sparsifier.state_dict(), run_dir / f"rank{env.rank}_sparsifier.pt")
    teardown_distributed()
