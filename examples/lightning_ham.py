"""HAM in PyTorch Lightning: ``configure_optimizers`` returns the wrapper (needs the `examples` extra).

    python examples/lightning_ham.py [--epochs 4] [--no-ham] [--dir lightning_run]

Lightning sees an ordinary torch optimizer: it calls ``step(closure)`` (HAM runs the base step with the closure,
then the hyperbolic step), steps the LR scheduler, and saves/restores ``optimizer.state_dict()`` -- which is the
base optimizer's, so ``trainer.fit(..., ckpt_path=...)`` resumes exactly. Rerunning with the same ``--dir``
resumes from ``last.ckpt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ham import HAM


class Classifier(L.LightningModule):
    def __init__(self, dim: int = 16, classes: int = 3, width: int = 32, lr: float = 0.05, use_ham: bool = True,
                 alpha: float = 20.0, beta: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, classes))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9)
        if hp.use_ham:
            opt = HAM(opt, alpha=hp.alpha, beta=hp.beta)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)   # stepped once per epoch
        return {"optimizer": opt, "lr_scheduler": sched}


def make_loader(n: int = 256, dim: int = 16, classes: int = 3, batch_size: int = 32, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x[:, :classes] + 0.1 * torch.randn(n, classes, generator=g)).argmax(1)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def fit(run_dir: str | Path, epochs: int, use_ham: bool = True, resume: bool = True, seed: int = 0,
        n: int = 256, verbose: bool = False) -> Classifier:
    """Train to ``epochs`` epochs in ``run_dir``, resuming from ``run_dir/last.ckpt`` if it exists."""
    L.seed_everything(seed, verbose=False)
    model = Classifier(use_ham=use_ham)
    ckpt = ModelCheckpoint(dirpath=run_dir, save_last=True, save_top_k=0)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, default_root_dir=run_dir,
                        callbacks=[ckpt], logger=False, enable_progress_bar=verbose,
                        enable_model_summary=verbose, num_sanity_val_steps=0)
    last = Path(run_dir) / "last.ckpt"
    trainer.fit(model, make_loader(n=n, seed=seed), ckpt_path=str(last) if resume and last.exists() else None)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--no-ham", action="store_true", help="plain SGD, for comparison")
    ap.add_argument("--dir", default="lightning_run")
    args = ap.parse_args()
    model = fit(args.dir, args.epochs, use_ham=not args.no_ham, verbose=True)
    print("final train loss", float(model.trainer.callback_metrics["train_loss"]))


if __name__ == "__main__":
    main()
