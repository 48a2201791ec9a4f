"""Run by .ci/check_dist.sh inside a fresh venv holding only torch and the built ham-optim package."""

import sys
from pathlib import Path

import torch

import ham
from ham import HAM, SAM, hyperbolic_step_  # noqa: F401

# the installed package, not the source tree
assert "site-packages" in Path(ham.__file__).parts, ham.__file__

# the five-line training example of the README
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = HAM(torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9), alpha=20, beta=1e-3)
x = torch.randn(128, 4, generator=torch.Generator().manual_seed(0))
y = x[:, :1] * 2 - x[:, 1:2]
losses = []
for _ in range(60):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
assert losses[-1] < 0.2 * losses[0], losses

framework = {"hydra", "omegaconf", "timm", "torchvision", "wandb", "sklearn", "matplotlib"}
loaded = framework & {name.split(".")[0] for name in sys.modules}
assert not loaded, f"the optimizer imported framework packages: {sorted(loaded)}"

from ham.optim.kernels import cpu_kernel  # noqa: E402

print(f"ham-optim OK from {Path(ham.__file__).parent}: loss {losses[0]:.3f} -> {losses[-1]:.4f}, "
      f"fused CPU kernel: {'yes' if cpu_kernel.available() else 'no (foreach fallback)'}")
