"""torchrun target for the DDP test: train, then every rank saves its own copy of the weights."""

import sys

import torch

from ham.cli import prepare, write_run_config
from ham.train.distributed import setup_distributed, teardown_distributed
from ham.train.loop import Trainer

if __name__ == "__main__":
    argv = sys.argv[1:]
    cfg, run_dir = prepare(argv)
    env = setup_distributed()
    if env.is_main:
        write_run_config(cfg, run_dir, argv)
    trainer = Trainer(cfg, run_dir, env)
    trainer.run()
    torch.save(trainer.model.state_dict(), run_dir / f"rank{env.rank}_weights.pt")
    torch.save(trainer.sparsifier.state_dict(), run_dir / f"rank{env.rank}_sparsifier.pt")
    teardown_distributed()
