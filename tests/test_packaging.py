"""The optimizer library stands alone: torch-only core requirements, no framework imports, a fallback warning
that says how to get the fast CPU kernel. (Building and installing the wheel/sdist into a torch-only venv is
.ci/check_dist.sh, run by CI.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORK = ("hydra", "omegaconf", "timm", "torchvision", "wandb", "sklearn", "matplotlib")


def _loaded_after(*steps: str) -> list[set[str]]:
    """In a fresh interpreter: the top-level modules each code step loads beyond what `import torch` (and the
    steps before it) loaded."""
    lines = ["import sys, json, torch", "seen = {m.split('.')[0] for m in sys.modules}", "out = []"]
    for code in steps:
        lines += [code, "now = {m.split('.')[0] for m in sys.modules}", "out.append(sorted(now - seen))",
                  "seen = now"]
    lines.append("print(json.dumps(out))")
    env = {**os.environ, "HAM_CPU_FUSED": "never"}
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300, check=True).stdout
    return [set(x) for x in json.loads(out.splitlines()[-1])]


def test_import_ham_loads_no_framework_package():
    # the framework packages ARE installed in this environment (dev extra): they must simply not be imported
    import importlib.util

    missing = [n for n in FRAMEWORK[:5] if not importlib.util.find_spec(n)]
    if missing:
        pytest.skip(f"not installed, nothing to check: {missing}")
    optimizer, framework = _loaded_after(
        "import ham\n"
        "from ham import HAM, SAM, hyperbolic_step_\n"
        "m = torch.nn.Linear(3, 2); o = HAM(SAM(torch.optim.SGD(m.parameters(), lr=0.1)), alpha=1.0)\n"
        "m(torch.randn(4, 3)).sum().backward(); o.step()\n"
        "hyperbolic_step_([m.weight.detach()], [torch.ones(2, 3)], lr=0.1, alpha=1.0, beta=0.0)",
        # the same check on code that does use the framework must see it (so the check above can fail)
        "import omegaconf",
    )
    assert "ham" in optimizer
    loaded = optimizer & set(FRAMEWORK)
    assert not loaded, f"importing/using the optimizer loaded {sorted(loaded)}"
    assert "omegaconf" in framework


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs) -> set[str]:
    import re

    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_core_requires_only_torch_and_extras_hold_the_rest():
    project = _pyproject()["project"]
    dist = project["name"]
    assert dist != "ham"  # taken on PyPI by an unrelated project
    assert _names(project["dependencies"]) == {"torch"}
    extras = project["optional-dependencies"]
    assert {"hydra-core", "omegaconf", "timm", "torchvision", "wandb"} <= _names(extras["train"])
    integrations = {"lightning", "transformers", "peft", "accelerate", "timm"}
    assert integrations <= _names(extras["examples"])
    for name, reqs in extras.items():
        if name not in ("examples", "dev", "train"):
            leaked = (integrations - {"timm"}) & _names(reqs)
            assert not leaked, f"integration packages {leaked} in [{name}]"
    # the README's `uv sync --extra dev` installs the framework and the examples' packages
    dev = [r for r in extras["dev"] if _names([r]) == {dist}]
    assert dev and "train" in dev[0] and "examples" in dev[0]
    for name in ("slurm", "hpo"):  # framework add-ons bring the framework
        assert any(r.startswith(f"{dist}[train") for r in extras[name])


def test_distribution_name_is_in_the_readme():
    dist = _pyproject()["project"]["name"]
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {dist}" in readme


def test_fallback_warning_names_the_fix(monkeypatch, tmp_path):
    from ham import hyperbolic_step_
    from ham.optim.kernels import cpu_kernel

    monkeypatch.setattr(cpu_kernel, "_STATE", {})
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler anywhere on PATH
    monkeypatch.setenv("HAM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("HAM_CPU_FUSED", raising=False)
    x, g = torch.randn(4, 4), torch.randn(4, 4)
    want = x.clone()
    hyperbolic_step_([want], [g], lr=0.1, alpha=5.0, beta=1e-3, backend="foreach")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hyperbolic_step_([x], [g], lr=0.1, alpha=5.0, beta=1e-3, backend="auto")
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert "no C compiler found" in msgs[0]
    for fix in ("install a C compiler", "apt-get install gcc", "CC=", "HAM_CPU_FUSED=never"):
        assert fix in msgs[0]
    torch.testing.assert_close(x, want)  # and the fallback computed the step
