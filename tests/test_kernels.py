"""Fused kernels (compiled CPU, Triton) against the reference formula; no recompiles on lr changes; fallback."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ham.optim import kernels
from ham.optim.functional import hyperbolic_step_
from ham.optim.kernels import cpu_compiled

CASES = [dict(alpha=200.0, beta=1e-3, clamp=5.0), dict(alpha=-30.0, beta=0.0, clamp=5.0),
         dict(alpha=0.0, beta=0.2, clamp=None), dict(alpha=5e3, beta=1e-2, clamp=1.0)]


def _tensors(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(64, 3, 5, 5, generator=g), torch.randn(700, 300, generator=g), torch.randn(10, generator=g)]
    for p in ps:
        p.view(-1)[:37] = 0.0
    gs = [torch.randn(p.shape, generator=g) for p in ps]
    gs[1].view(-1)[100:200] = 0.0
    return [p.to(dtype) for p in ps], [x.to(dtype) for x in gs]


@pytest.fixture
def force_fused(monkeypatch):
    monkeypatch.setenv("HAM_CPU_FUSED", "always")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bwg", [False, True])
def test_compiled_cpu_matches_reference(force_fused, case, signed, bwg):
    ps, gs = _tensors()
    signs = [torch.sign(torch.randn(p.shape, generator=torch.Generator().manual_seed(3))).to(torch.int8)
             for p in ps] if signed else None
    a, b = [p.clone() for p in ps], [p.clone() for p in ps]
    hyperbolic_step_(a, gs, lr=0.03, signs=signs, beta_where_grad=bwg, backend="fused", **case)
    hyperbolic_step_(b, gs, lr=0.03, signs=signs, beta_where_grad=bwg, backend="reference", **case)
    assert cpu_compiled.available(), cpu_compiled._BROKEN
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=2e-6, atol=0)
        assert torch.all((x == 0) == (y == 0)) and torch.all(torch.sign(x) * torch.sign(y) >= 0)


def test_bf16_params_computed_in_fp32(force_fused):
    ps, gs = _tensors(dtype=torch.bfloat16)
    a = [p.clone() for p in ps]
    hyperbolic_step_(a, gs, lr=0.05, alpha=100.0, beta=1e-3, backend="fused")
    for x, p, g in zip(a, ps, gs):
        want = p.float().clone()
        hyperbolic_step_([want], [g.float()], lr=0.05, alpha=100.0, beta=1e-3, backend="reference")
        torch.testing.assert_close(x, want.to(torch.bfloat16), rtol=0, atol=0)


def test_changing_lr_never_recompiles(force_fused):
    ps, gs = _tensors()
    hyperbolic_step_(ps, gs, lr=1e-3, alpha=200.0, beta=1e-3, backend="fused")
    before = cpu_compiled.COMPILE_COUNT[0]
    from torch._dynamo.utils import counters

    frames_before = counters["stats"]["unique_graphs"]
    for k in range(20):
        hyperbolic_step_(ps, gs, lr=1e-3 * (1 + k), alpha=200.0, beta=1e-3, backend="fused")
    assert cpu_compiled.COMPILE_COUNT[0] == before
    assert counters["stats"]["unique_graphs"] == frames_before


def test_non_contiguous_and_tensor_lr_fall_back_to_foreach(force_fused):
    a = torch.randn(40, 30).t()  # non-contiguous
    assert not a.is_contiguous()
    g = torch.randn(30, 40)
    b = a.contiguous()
    hyperbolic_step_([a], [g], lr=torch.tensor(0.1), alpha=50.0, beta=0.1, backend="fused")
    hyperbolic_step_([b], [g], lr=0.1, alpha=50.0, beta=0.1, backend="reference")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_small_models_stay_on_foreach_under_auto(monkeypatch):
    monkeypatch.delenv("HAM_CPU_FUSED", raising=False)
    calls = []
    monkeypatch.setattr(cpu_compiled, "cpu_hyperbolic_", lambda *a, **k: calls.append(1) or True)
    ps, gs = _tensors()  # ~0.2M elements < CPU_MIN_NUMEL
    rest = kernels.fused_hyperbolic_step_(ps, gs, lr=0.1, alpha=1.0, beta=0.0, clamp=5.0, signs=None,
                                          beta_where_grad=False)
    assert not calls and len(rest[0]) == len(ps)


def test_compile_failure_falls_back_cleanly(monkeypatch, force_fused):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpu_compiled, "_COMPILED", {})
    monkeypatch.setattr(cpu_compiled, "_BROKEN", [])
    monkeypatch.setattr(torch, "compile", lambda fn, **k: broken)
    ps, gs = _tensors()
    a, b = [p.clone() for p in ps], [p.clone() for p in ps]
    hyperbolic_step_(a, gs, lr=0.1, alpha=10.0, beta=1e-3, backend="fused")
    hyperbolic_step_(b, gs, lr=0.1, alpha=10.0, beta=1e-3, backend="reference")
    assert not cpu_compiled.available()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_triton_kernel_in_interpreter_matches_reference():
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from ham.optim.kernels.triton_kernel import triton_hyperbolic_
        from ham.optim.functional import hyperbolic_step_
        g = torch.Generator().manual_seed(0)
        for signed in (False, True):
            for bwg in (False, True):
                for alpha, beta, c in ((200.0, 1e-3, 5.0), (-20.0, 0.5, float("inf"))):
                    x = torch.randn(5000, generator=g); x[:64] = 0
                    gr = torch.randn(5000, generator=g); gr[100:200] = 0
                    s = torch.sign(torch.randn(5000, generator=g)).to(torch.int8) if signed else None
                    y = x.clone()
                    triton_hyperbolic_(x, gr, lr=0.02, alpha=alpha, beta=beta, clamp=c, signs=s, beta_where_grad=bwg)
                    hyperbolic_step_([y], [gr], lr=0.02, alpha=alpha, beta=beta, clamp=None if c == float("inf") else c,
                                     signs=None if s is None else [s], beta_where_grad=bwg, backend="reference")
                    torch.testing.assert_close(x, y, rtol=2e-6, atol=0)
                    assert torch.equal(x[:64], torch.zeros(64))
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-2000:]
