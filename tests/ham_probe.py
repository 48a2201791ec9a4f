"""Test helpers for the examples and integration tests: load an example module, and watch HAM's hyperbolic step.

``HyperbolicStepProbe`` wraps ``HAM.hyperbolic_step`` at class level (so it also sees wrappers built inside
Lightning, timm or transformers code) and, around every call, compares each managed weight before and after:
the step must keep every sign (and every exact zero), and it must change something.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from ham import HAM

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    mod_name = f"ham_example_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


class HyperbolicStepProbe:
    def __init__(self) -> None:
        self.calls = 0
        self.checked = 0          # weights compared before/after, summed over calls
        self.changed = 0          # of those, how many the hyperbolic step changed
        self.sign_changes = 0     # must stay 0 (an exact zero keeping zero counts as keeping its sign)
        self.lrs: list[float] = []  # lr of the first param group at each call
        self.managed: set[int] = set()  # ids of every tensor the step acted on

    def install(self, monkeypatch) -> "HyperbolicStepProbe":
        original = HAM.hyperbolic_step
        probe = self

        def hyperbolic_step(opt, *args, **kwargs):
            params = [p for p in opt.managed_params() if p.grad is not None]
            before = [p.detach().clone() for p in params]
            original(opt, *args, **kwargs)
            probe.calls += 1
            probe.lrs.append(float(opt.param_groups[0]["lr"]))
            for b, p in zip(before, params):
                a = p.detach()
                probe.managed.add(id(p))
                probe.checked += a.numel()
                probe.changed += int((a != b).sum())
                probe.sign_changes += int((torch.sign(a) != torch.sign(b)).sum())

        monkeypatch.setattr(HAM, "hyperbolic_step", hyperbolic_step)
        return self

    def assert_acted(self, min_calls: int = 1) -> None:
        assert self.calls >= min_calls, f"hyperbolic step ran {self.calls} times, expected >= {min_calls}"
        assert self.checked > 0
        assert self.sign_changes == 0, f"the hyperbolic step flipped {self.sign_changes} signs"
        # it multiplies by exp(nonzero) almost everywhere: most weights must have moved
        assert self.changed > 0.5 * self.checked, f"only {self.changed}/{self.checked} weights changed"


def assert_weight_tensors_differ(a: torch.nn.Module | dict, b: torch.nn.Module | dict, min_ndim: int = 2) -> int:
    """Every weight tensor (ndim >= min_ndim) with any trained entry differs between two runs; returns how many
    tensors were compared."""
    sa = a if isinstance(a, dict) else dict(a.named_parameters())
    sb = b if isinstance(b, dict) else dict(b.named_parameters())
    assert sa.keys() == sb.keys()
    compared = 0
    for name, ta in sa.items():
        if ta.ndim >= min_ndim:
            compared += 1
            assert not torch.equal(ta.detach(), sb[name].detach()), f"{name} is identical in both runs"
    assert compared > 0
    return compared
