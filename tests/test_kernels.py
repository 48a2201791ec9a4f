"""Fused kernels (C/OpenMP on CPU, Triton through its interpreter) against the reference formula; no rebuilds on
lr changes; clean fallback to foreach for what the kernels do not handle or when they cannot be built."""

import importlib
import sys

import pytest
import torch

from ham.optim import kernels
from ham.optim.functional import hyperbolic_step_
from ham.optim.kernels import cpu_kernel

CASES = [
    {"alpha": 200.0, "beta": 1e-3, "clamp": 5.0},  # the paper's vision setting
    {"alpha": -30.0, "beta": 0.0, "clamp": 5.0},  # nHAM, no beta
    {"alpha": 0.0, "beta": 0.2, "clamp": None},  # beta only, no clamp
    {"alpha": 5e3, "beta": 1e-2, "clamp": 1.0},  # the clamp bites
]

needs_compiler = pytest.mark.skipif(cpu_kernel._compiler() is None, reason="no C compiler: CPU kernel not built")


def _tensors(seed=0, dtype=torch.float32, sizes=((64, 3, 5, 5), (700, 300), (10,))):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=g) for s in sizes]
    for p in ps:
        p.view(-1)[:37] = 0.0  # exact zeros must stay zero
    gs = [torch.randn(p.shape, generator=g) for p in ps]
    gs[min(1, len(gs) - 1)].view(-1)[:100] = 0.0  # zero grads (beta_where_grad)
    return [p.to(dtype) for p in ps], [x.to(dtype) for x in gs]


def _signs(ps, dtype=torch.int8):
    g = torch.Generator().manual_seed(3)
    return [torch.sign(torch.randn(p.shape, generator=g)).to(dtype) for p in ps]


def _fused(ps, gs, **kw):
    """The fused entry point itself, asserting it handled every tensor (no silent foreach fallback)."""
    kw.setdefault("signs", None)
    kw.setdefault("beta_where_grad", False)
    assert kernels.fused_hyperbolic_step_(ps, gs, **kw) is None


def _reference(ps, gs, **kw):
    out = [p.float().clone() for p in ps]
    hyperbolic_step_(out, [g.float() for g in gs], backend="reference", **kw)
    return out


def _ids(tensors):
    return [id(t) for t in tensors]


def _assert_zeros_and_signs_kept(before, after):
    for p, x in zip(before, after):
        assert torch.equal(x[p == 0], p[p == 0])
        assert torch.all(torch.sign(x) * torch.sign(p) >= 0)


@needs_compiler
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("signs", [None, torch.int8, torch.float32])
@pytest.mark.parametrize("bwg", [False, True])
def test_cpu_kernel_matches_reference(case, signs, bwg):
    ps, gs = _tensors()
    ss = _signs(ps, signs) if signs is not None else None
    got = [p.clone() for p in ps]
    _fused(got, gs, lr=0.03, signs=ss, beta_where_grad=bwg, **case)
    want = _reference(ps, gs, lr=0.03, signs=ss, beta_where_grad=bwg, **case)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=0)  # exp within 2.34 ulp (1.14 on the AVX2 path)
    _assert_zeros_and_signs_kept(ps, got)


@needs_compiler
@pytest.mark.parametrize("dtype,ulp", [(torch.bfloat16, 2**-7), (torch.float16, 2**-10)])
@pytest.mark.parametrize("signed", [False, True])
def test_half_params_computed_in_fp32_and_rounded_once(dtype, ulp, signed):
    ps, gs = _tensors(dtype=dtype)
    ss = _signs(ps) if signed else None
    got = [p.clone() for p in ps]
    _fused(got, gs, lr=0.05, alpha=100.0, beta=1e-3, clamp=5.0, signs=ss)
    want = _reference(ps, gs, lr=0.05, alpha=100.0, beta=1e-3, clamp=5.0, signs=ss)
    for x, y in zip(got, want):
        # one rounding of the fp32 result: at most one unit in the last place away from the rounded reference
        torch.testing.assert_close(x.float(), y.to(dtype).float(), rtol=ulp, atol=0)
        assert (x != y.to(dtype)).float().mean() < 1e-3  # and that only on near-ties
    _assert_zeros_and_signs_kept(ps, got)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_half_value_round_trips_exactly(dtype):
    # factor exp(0) = 1: each of the 65536 bit patterns is converted to fp32 and back, unchanged (NaN stays NaN)
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    before = x.clone()
    _fused([x], [torch.zeros_like(x)], lr=0.1, alpha=1.0, beta=0.0, clamp=5.0)
    nan = torch.isnan(before)
    assert torch.equal(torch.isnan(x), nan)
    assert torch.equal(x[~nan].view(torch.int16), before[~nan].view(torch.int16))


@needs_compiler
def test_exp_range_overflow_and_underflow_like_torch():
    # x = 1, e = -g: the result is exp(-g) over the whole float range, including inf and subnormals/0
    g = -torch.cat([torch.linspace(-110.0, 95.0, 200_001), torch.linspace(-0.5, 0.5, 10_001)])
    x = torch.ones_like(g)
    _fused([x], [g], lr=1.0, alpha=1.0, beta=0.0, clamp=None)
    want = torch.exp(-g)
    assert torch.equal(torch.isinf(x), torch.isinf(want)) and torch.equal(x == 0, want == 0)
    normal = want.abs() > torch.finfo(torch.float32).tiny
    torch.testing.assert_close(x[normal], want[normal], rtol=2.5e-7, atol=0)
    torch.testing.assert_close(x[~normal], want[~normal], rtol=0, atol=2e-45)  # 1 subnormal step


@needs_compiler
@pytest.mark.parametrize("c", [5.0, 87.0])
@pytest.mark.parametrize("path", ["fp32-self", "int8-signs"])
def test_exp_within_its_ulp_bound_over_the_clamped_range(c, path):
    # x = 1, lr = alpha = 1, beta = 0: the kernel returns its exp(e) for e = -g, over the clamped range [-c, c]
    # (c <= 87), against torch.exp in float64. Two exps: fp32 weights with their own sign take the AVX2 path's
    # table exp where the build has it (exp8_narrow: 1.14 ulp measured over EVERY float in [-87, 87]); int8 signs
    # (and builds without AVX2+FMA) take exp_narrow (2.34 ulp with FMA, 2.31 without, measured the same way).
    gen = torch.Generator().manual_seed(0)
    e = torch.cat([torch.linspace(-c, c, 2_000_001), (torch.rand(1_000_000, generator=gen) * 2 - 1) * c,
                   torch.tensor([-c, c, 0.0, -0.0])])
    x = torch.ones_like(e)
    signs = [torch.ones_like(e, dtype=torch.int8)] if path == "int8-signs" else None
    _fused([x], [-e], lr=1.0, alpha=1.0, beta=0.0, clamp=c, signs=signs)
    want = torch.exp(e.double())
    w = want.float()
    ulp = (torch.nextafter(w, torch.tensor(float("inf"))) - w).double()
    err = ((x.double() - want).abs() / ulp).max().item()
    table_exp = path == "fp32-self" and cpu_kernel.build_info().get("fp32 path", "").startswith("avx2")
    assert err <= (1.2 if table_exp else 2.5), err


@needs_compiler
def test_nan_propagates_and_infinite_grads_clamp():
    # NaN in a weight or its grad gives NaN, as in the reference (the clamp must not turn NaN into -c or c); an
    # infinite grad only drives the exponent to the clamp. Sizes cover the 8-wide loop and its masked tail.
    for n in (8, 13, 1000):
        x = torch.linspace(0.5, 1.5, n)
        g = torch.zeros(n)
        g[1], g[-1] = float("nan"), float("inf")
        x[3] = float("nan")
        got = x.clone()
        _fused([got], [g], lr=0.1, alpha=200.0, beta=1e-3, clamp=5.0)
        want = _reference([x], [g], lr=0.1, alpha=200.0, beta=1e-3, clamp=5.0)[0]
        assert torch.equal(torch.isnan(got), torch.isnan(want)) and bool(torch.isnan(got[[1, 3]]).all())
        ok = ~torch.isnan(want)
        torch.testing.assert_close(got[ok], want[ok], rtol=1e-6, atol=0)


@needs_compiler
def test_results_do_not_depend_on_the_thread_split(monkeypatch):
    # the 8-wide loop, its masked tail and the range split between threads give every element the same arithmetic
    ps, gs = _tensors(sizes=((64, 3, 5, 5), (700, 300), (10,), (333, 517)))
    outs = []
    for n in (1, 2, 3):
        monkeypatch.setattr(cpu_kernel, "threads", lambda n=n: n)
        got = [p.clone() for p in ps]
        _fused(got, gs, lr=0.03, alpha=200.0, beta=1e-3, clamp=5.0)
        outs.append(got)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other))


@needs_compiler
def test_tensor_lr_is_handled_and_equals_float_lr():
    ps, gs = _tensors()
    a, b, c = ([p.clone() for p in ps] for _ in range(3))
    _fused(a, gs, lr=torch.tensor(0.03), alpha=200.0, beta=1e-3, clamp=5.0)
    _fused(b, gs, lr=torch.tensor(0.03, dtype=torch.float64), alpha=200.0, beta=1e-3, clamp=5.0)
    _fused(c, gs, lr=0.03, alpha=200.0, beta=1e-3, clamp=5.0)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, z) and torch.equal(y, z)


@needs_compiler
def test_many_tensors_split_across_threads(monkeypatch):
    # sizes straddle the per-thread split points (64-element aligned) and include empty and 1-element tensors
    sizes = [(0,), (1,), (63,), (65,), (100_003,), (7,), (3, 40_001), (129,), (70_000,)]
    ps, gs = _tensors(sizes=sizes)
    got = [p.clone() for p in ps]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        _fused(got, gs, lr=0.02, alpha=300.0, beta=1e-2, clamp=5.0)
    finally:
        torch.set_num_threads(old)
    for x, y in zip(got, _reference(ps, gs, lr=0.02, alpha=300.0, beta=1e-2, clamp=5.0)):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=0)


@needs_compiler
def test_changing_lr_never_rebuilds_or_reloads():
    ps, gs = _tensors()
    hyperbolic_step_(ps, gs, lr=1e-3, alpha=200.0, beta=1e-3, backend="fused")
    builds, lib = cpu_kernel.BUILD_COUNT[0], cpu_kernel.library()
    for k in range(20):
        hyperbolic_step_(ps, gs, lr=1e-3 * (1 + k), alpha=200.0 + k, beta=1e-3 * k, backend="fused")
    assert cpu_kernel.BUILD_COUNT[0] == builds and cpu_kernel.library() is lib


@needs_compiler
def test_build_is_cached_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("HAM_KERNEL_CACHE", str(tmp_path))
    cc, builds = cpu_kernel._compiler(), cpu_kernel.BUILD_COUNT[0]
    first = cpu_kernel._build(cc)
    assert cpu_kernel.BUILD_COUNT[0] == builds + 1 and first.parent == tmp_path
    assert cpu_kernel._build(cc) == first and cpu_kernel.BUILD_COUNT[0] == builds + 1  # second process: a load
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left behind


@needs_compiler
def test_unhandled_tensors_are_returned_untouched_and_stepped_by_foreach():
    ps, gs = _tensors()
    nc = torch.randn(40, 60)[:, ::2]  # a strided view: not dense, no flat storage to step
    mixed = torch.randn(5, 5, dtype=torch.float64)  # no kernel for fp64
    leaf = torch.randn(6, 6, requires_grad=True)  # grad mode on: foreach must raise autograd's error
    params = [ps[0], nc, ps[1], mixed]
    grads = [gs[0], torch.randn(40, 30), gs[1], torch.randn(5, 5, dtype=torch.float64)]
    before = [p.clone() for p in params]
    kw = {"lr": 0.1, "alpha": 50.0, "beta": 0.1, "clamp": 5.0, "signs": None, "beta_where_grad": False}
    rest = kernels.fused_hyperbolic_step_(params, grads, **kw)
    assert _ids(rest[0]) == _ids([nc, mixed]) and _ids(rest[1]) == _ids([grads[1], grads[3]]) and rest[2] is None
    assert torch.equal(nc, before[1]) and torch.equal(mixed, before[3])
    assert not torch.equal(ps[0], before[0])
    # through the public entry point, the returned ones go through foreach
    nc2 = torch.zeros(40, 60)[:, ::2].copy_(before[1])
    hyperbolic_step_([nc2], [grads[1]], backend="fused", **{k: kw[k] for k in ("lr", "alpha", "beta", "clamp")})
    ref = _reference([before[1]], [grads[1]], lr=0.1, alpha=50.0, beta=0.1, clamp=5.0)[0]
    torch.testing.assert_close(nc2, ref, rtol=1e-5, atol=0)
    assert _ids(kernels.fused_hyperbolic_step_([leaf], [torch.ones(6, 6)], **kw)[0]) == _ids([leaf])
    with torch.no_grad():
        assert kernels.fused_hyperbolic_step_([leaf], [torch.ones(6, 6)], **kw) is None


@needs_compiler
def test_version_counter_bumped_like_an_inplace_op():
    p, g = torch.randn(100), torch.randn(100)
    v = p._version
    _fused([p], [g], lr=0.1, alpha=1.0, beta=0.0, clamp=5.0)
    assert p._version > v


def test_build_failure_falls_back_to_foreach(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_kernel, "_STATE", {})
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setenv("HAM_KERNEL_CACHE", str(tmp_path))
    ps, gs = _tensors()
    a = [p.clone() for p in ps]
    with pytest.warns(RuntimeWarning, match="foreach"):
        hyperbolic_step_(a, gs, lr=0.1, alpha=10.0, beta=1e-3, backend="fused")
    assert not cpu_kernel.available() and "compiler failed" in cpu_kernel._STATE["error"]
    for x, y in zip(a, _reference(ps, gs, lr=0.1, alpha=10.0, beta=1e-3)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=0)
    hyperbolic_step_(a, gs, lr=0.1, alpha=10.0, beta=1e-3, backend="fused")  # no second attempt, no warning


def test_cpu_kernel_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("HAM_CPU_FUSED", "never")
    ps, gs = _tensors()
    rest = kernels.fused_hyperbolic_step_(ps, gs, lr=0.1, alpha=1.0, beta=0.0, clamp=5.0, signs=None,
                                          beta_where_grad=False)
    assert _ids(rest[0]) == _ids(ps)


def test_cpu_tensors_never_reach_triton(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "_triton_ok", lambda: True)
    fake = type(sys)("ham.optim.kernels.triton_kernel")
    fake.triton_hyperbolic_list_ = lambda *a, **k: calls.append(a)
    monkeypatch.setitem(sys.modules, "ham.optim.kernels.triton_kernel", fake)
    monkeypatch.setenv("HAM_CPU_FUSED", "never")
    ps, gs = _tensors()
    kernels.fused_hyperbolic_step_(ps, gs, lr=0.1, alpha=1.0, beta=0.0, clamp=5.0, signs=None,
                                   beta_where_grad=False)
    assert not calls


@needs_compiler
def test_ham_optimizer_with_scheduler_fused_equals_reference():
    from ham.optim.ham import HAM

    def run(backend):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
        opt = HAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), alpha=200.0, beta=1e-3,
                  variant="signed", backend=backend)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        x, y = torch.randn(32, 20), torch.randint(0, 3, (32,))
        for _ in range(6):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
        return [p.detach() for p in model.parameters()]

    builds = cpu_kernel.BUILD_COUNT[0]
    fused = run("fused")
    assert cpu_kernel.BUILD_COUNT[0] - builds <= 1  # at most the first build of this process
    for x, y in zip(fused, run("reference")):  # 1-ulp differences of exp, amplified by 6 training steps
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@pytest.fixture
def interpreted_triton_kernel(monkeypatch):
    """triton_kernel imported under TRITON_INTERPRET=1 (kernels run on CPU tensors with numpy), for this test
    only: the production module (if any) is put back afterwards."""
    pytest.importorskip("triton", reason="triton not importable: the CUDA kernel cannot be checked here")
    name = "ham.optim.kernels.triton_kernel"
    saved = sys.modules.pop(name, None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    try:
        yield importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)
        if saved is not None:
            sys.modules[name] = saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bwg", [False, True])
def test_triton_kernel_in_interpreter_matches_reference(interpreted_triton_kernel, dtype, signed, bwg):
    g = torch.Generator().manual_seed(0)
    n = 5000  # 3 programs of BLOCK=2048, the last one masked
    for alpha, beta, c, lr in ((200.0, 1e-3, 5.0, 0.02), (-20.0, 0.5, float("inf"), 0.02),
                               (0.0, 0.2, 1.0, torch.tensor(0.05))):  # tensor lr: read through its pointer
        x = torch.randn(n, generator=g)
        x[:64] = 0
        gr = torch.randn(n, generator=g)
        gr[100:200] = 0
        s = torch.sign(torch.randn(n, generator=g)).to(torch.int8) if signed else None
        x, gr = x.to(dtype), gr.to(dtype)
        before = x.clone()
        interpreted_triton_kernel.triton_hyperbolic_(x, gr, lr=lr, alpha=alpha, beta=beta, clamp=c, signs=s,
                                                     beta_where_grad=bwg)
        want = _reference([before], [gr], lr=lr, alpha=alpha, beta=beta, clamp=None if c == float("inf") else c,
                          signs=None if s is None else [s], beta_where_grad=bwg)[0]
        tol = 1e-6 if dtype == torch.float32 else 2**-7
        torch.testing.assert_close(x.float(), want.to(dtype).float(), rtol=tol, atol=0)
        _assert_zeros_and_signs_kept([before], [x])


# ---------------------------------------------------------------- dense non-contiguous layouts (channels_last)
def _layout_cases(dtype=torch.float32, signs=False):
    """(params, grads, signs) in the layouts a channels_last ResNet has, plus a transposed matrix; every operand
    of one parameter in the same layout. Includes [K, C, 1, 1] convs (size-1 dims: arbitrary strides)."""
    g = torch.Generator().manual_seed(5)
    cl = torch.channels_last
    shapes = [((64, 3, 7, 7), cl), ((256, 64, 1, 1), cl), ((33, 17, 3, 3), cl), ((300, 70), "t"), ((5000,), None),
              ((1,), None), ((0, 3), None)]

    def make(shape, layout, kind):
        t = torch.randn(shape, generator=g)
        if kind == "p":
            t.view(-1)[:29] = 0.0  # exact zeros must stay zero
        t = torch.sign(t).to(torch.int8) if kind == "s" else t.to(dtype)
        if layout == "t":
            return t.t().contiguous().t() if t.ndim == 2 else t
        return t.contiguous(memory_format=layout) if layout is not None else t

    ps = [make(s, lay, "p") for s, lay in shapes]
    gs = [make(s, lay, "g") for s, lay in shapes]
    ss = [make(s, lay, "s") for s, lay in shapes] if signs else None
    assert not ps[0].is_contiguous() and not ps[3].is_contiguous()
    return ps, gs, ss


def test_dense_layout_detection():
    from ham.optim.kernels import dense_layout

    x = torch.randn(8, 4, 3, 3)
    assert dense_layout(x) is not None and dense_layout(x.to(memory_format=torch.channels_last)) is not None
    assert dense_layout(x.permute(2, 0, 3, 1)) is not None
    assert dense_layout(x[:, ::2]) is None and dense_layout(x[:, :2]) is None
    assert dense_layout(torch.randn(4, 1).expand(4, 3)) is None  # overlapping (stride 0)
    w = torch.randn(16, 8, 1, 1)
    assert dense_layout(w) == dense_layout(w.to(memory_format=torch.channels_last))  # same element order
    assert dense_layout(x) != dense_layout(x.to(memory_format=torch.channels_last))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("signed", [False, True])
def test_cpu_kernel_steps_channels_last_and_transposed_as_flat_storage(dtype, signed):
    ps, gs, ss = _layout_cases(dtype, signed)
    got = [p.clone(memory_format=torch.preserve_format) for p in ps]
    _fused(got, gs, lr=0.03, alpha=200.0, beta=1e-3, clamp=5.0, signs=ss, beta_where_grad=True)  # none left over
    want = _reference(ps, gs, lr=0.03, alpha=200.0, beta=1e-3, clamp=5.0, signs=ss, beta_where_grad=True)
    tol = 1e-6 if dtype == torch.float32 else 2**-7
    for x, y, p in zip(got, want, ps):
        assert x.stride() == p.stride()  # stepped in place, layout untouched
        torch.testing.assert_close(x.float(), y.to(dtype).float(), rtol=tol, atol=0)
    _assert_zeros_and_signs_kept(ps, got)


def test_operands_in_different_layouts_go_to_foreach():
    p = torch.randn(16, 8, 3, 3).to(memory_format=torch.channels_last)
    g = torch.randn(16, 8, 3, 3)  # contiguous: element i in memory is another weight's gradient
    s = torch.sign(torch.randn(16, 8, 3, 3)).to(torch.int8)
    kw = {"lr": 0.1, "alpha": 50.0, "beta": 0.1, "clamp": 5.0, "beta_where_grad": False}
    rest = kernels.fused_hyperbolic_step_([p], [g], signs=None, **kw)
    assert rest is not None and rest[0][0] is p
    rest = kernels.fused_hyperbolic_step_([p], [g.contiguous(memory_format=torch.channels_last)], signs=[s], **kw)
    assert rest is not None and rest[0][0] is p  # the sign tensor's layout differs
    before = p.clone()
    hyperbolic_step_([p], [g], backend="fused", lr=0.1, alpha=50.0, beta=0.1, clamp=5.0)
    torch.testing.assert_close(p, _reference([before], [g], lr=0.1, alpha=50.0, beta=0.1, clamp=5.0)[0],
                               rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("signed", [False, True])
def test_triton_list_kernel_in_interpreter_channels_last_one_launch(interpreted_triton_kernel, monkeypatch, dtype,
                                                                   signed):
    tk = interpreted_triton_kernel
    launches = []
    real = tk._hyperbolic_list_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(tk, "_hyperbolic_list_kernel", Counting())
    ps, gs, ss = _layout_cases(dtype, signed)
    for lr in (0.02, torch.tensor(0.05)):  # float, and a tensor read through its pointer
        got = [p.clone(memory_format=torch.preserve_format) for p in ps]
        launches.clear()
        tk.triton_hyperbolic_list_(got, gs, ss, lr=lr, alpha=200.0, beta=1e-3, clamp=5.0, beta_where_grad=True)
        assert len(launches) == 1  # the whole list in one launch
        assert launches[0][0] == sum(-(-p.numel() // tk.BLOCK) for p in ps)
        want = _reference(ps, gs, lr=lr, alpha=200.0, beta=1e-3, clamp=5.0, signs=ss, beta_where_grad=True)
        tol = 1e-6 if dtype == torch.float32 else 2**-7
        for x, y in zip(got, want):
            torch.testing.assert_close(x.float(), y.to(dtype).float(), rtol=tol, atol=0)
        _assert_zeros_and_signs_kept(ps, got)
    # the block map and the offset table are cached: stepping the same tensors again builds neither
    n_maps, n_tabs = len(tk._block_maps), len(tk._offset_tables)
    tk.triton_hyperbolic_list_(got, gs, ss, lr=0.01, alpha=1.0, beta=0.0, clamp=float("inf"),
                               beta_where_grad=False)
    assert (len(tk._block_maps), len(tk._offset_tables)) == (n_maps, n_tabs)


def test_triton_list_kernel_in_interpreter_views_at_unaligned_offsets(interpreted_triton_kernel):
    # grads as views into one flat buffer (as DDP's gradient_as_bucket_view makes them), at offsets that are not
    # multiples of 16 elements: the kernel must not assume the alignment it uses for vectorised loads otherwise
    g = torch.Generator().manual_seed(7)
    xbuf, gbuf = torch.randn(20_000, generator=g), torch.randn(20_000, generator=g)
    for offsets in ((0, 4096, 8192), (3, 4101, 8195)):  # 2100 elements each: no overlap
        ps = [xbuf[o:o + 2100].view(30, 70) for o in offsets]
        gs = [gbuf[o:o + 2100].view(30, 70) for o in offsets]
        want = _reference(ps, gs, lr=0.02, alpha=200.0, beta=1e-3, clamp=5.0)
        interpreted_triton_kernel.triton_hyperbolic_list_(ps, gs, None, lr=0.02, alpha=200.0, beta=1e-3,
                                                          clamp=5.0, beta_where_grad=False)
        for x, y in zip(ps, want):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=0)


def test_kernel_threads_follow_the_ranks_share_of_the_cores(monkeypatch):
    # torch's default (a thread per core in every process) would oversubscribe a host shared by several ranks: the
    # kernel takes at most this rank's share (the trainer's rule, ham/optim/cpu_threads.py), one where that is one
    from ham.optim import cpu_threads

    for key in ("LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_CPUS_PER_TASK", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
                "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert cpu_kernel.threads() == 16
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun on one host, before/without init_process_group
    assert cpu_kernel.threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert cpu_kernel.threads() == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # trainer.threads=1 (or a small model): kept
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert cpu_kernel.threads() == 1
