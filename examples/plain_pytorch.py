"""HAM in a plain PyTorch training loop (needs only torch and this package).

    python examples/plain_pytorch.py [--steps 300] [--no-ham]

The only HAM-specific line is the wrapping of the optimizer; the scheduler is built on the wrapper and drives the
learning rate of both the base step and the hyperbolic step.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

from ham import HAM


def make_data(n: int = 1024, dim: int = 32, classes: int = 4, seed: int = 0):
    """Synthetic classification: a random linear teacher on Gaussian inputs, only 4 of the 32 features matter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    teacher = torch.zeros(dim, classes)
    teacher[:4] = torch.randn(4, classes, generator=g)
    return x, (x @ teacher).argmax(dim=1)


def build_model(dim: int = 32, classes: int = 4, width: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, classes))


def train(steps: int = 300, use_ham: bool = True, alpha: float = 20.0, beta: float = 1e-3, lr: float = 0.05,
          batch_size: int = 64, width: int = 64, seed: int = 0, log_every: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    x, y = make_data(seed=seed)
    model = build_model(width=width)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-5)
    if use_ham:
        opt = HAM(opt, alpha=alpha, beta=beta)                      # <- the one HAM line
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            acc = (model(x).argmax(1) == y).float().mean().item()
            lr_now = sched.get_last_lr()[0]
            print(f"step {step + 1:4d}  loss {loss.item():.4f}  train acc {acc:.3f}  lr {lr_now:.4f}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--no-ham", action="store_true", help="plain SGD, for comparison")
    args = ap.parse_args()
    train(steps=args.steps, use_ham=not args.no_ham, log_every=max(1, args.steps // 5))


if __name__ == "__main__":
    main()
