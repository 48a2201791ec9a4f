"""HAM with timm's optimizer factory, a timm scheduler and timm's ModelEmaV3 (needs the `examples` extra).

    python examples/timm_optim.py [--epochs 3] [--no-ham]

`timm.optim.create_optimizer_v2` builds the base optimizer (with its decay / no-decay param groups), HAM wraps
it, and the timm scheduler is built on the WRAPPER: it writes each group's lr, which the base step and the
hyperbolic step both read. ModelEmaV3 averages the HAM-trained weights as it would any others. HAM acts on
tensors with ndim >= 2 in every group; a group opts out with ``group["ham"] = False``.
"""

from __future__ import annotations

import argparse

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch.nn import functional as F

from ham import HAM


def make_data(n: int = 256, classes: int = 4, size: int = 32, seed: int = 0):
    """Images whose class is the quadrant holding a bright square, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.3 * torch.randn(n, 3, size, size, generator=g)
    half = size // 2
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, :, r * half + 4:r * half + 12, col * half + 4:col * half + 12] += 1.0
    return x, y


def train(epochs: int = 3, use_ham: bool = True, alpha: float = 200.0, beta: float = 1e-3, lr: float = 1e-3,
          batch_size: int = 32, n: int = 256, model_name: str = "test_vit", seed: int = 0, verbose: bool = False):
    """Returns (model, ema_model)."""
    torch.manual_seed(seed)
    x, y = make_data(n=n, seed=seed)
    model = timm.create_model(model_name, pretrained=False, num_classes=4, img_size=32)
    opt = create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=0.05)
    if use_ham:
        opt = HAM(opt, alpha=alpha, beta=beta)
    steps_per_epoch = n // batch_size
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=epochs, warmup_epochs=1, warmup_lr=lr / 10,
                                   step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    ema = ModelEmaV3(model, decay=0.9)
    updates = 0
    for epoch in range(epochs):
        perm = torch.randperm(n)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            updates += 1
            sched.step_update(num_updates=updates)   # per-step lr (warmup + cosine)
            ema.update(model, step=updates)
        sched.step(epoch + 1)
        if verbose:
            with torch.no_grad():
                acc = (model.eval()(x).argmax(1) == y).float().mean().item()
                ema_acc = (ema.module(x).argmax(1) == y).float().mean().item()
            model.train()
            print(f"epoch {epoch + 1}  loss {loss.item():.4f}  train acc {acc:.3f}  EMA acc {ema_acc:.3f}  "
                  f"lr {opt.param_groups[0]['lr']:.2e}")
    return model, ema.module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-ham", action="store_true", help="plain AdamW, for comparison")
    args = ap.parse_args()
    train(epochs=args.epochs, use_ham=not args.no_ham, verbose=True)


if __name__ == "__main__":
    main()
