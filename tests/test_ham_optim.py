"""The HAM wrapper and its functional core against the formula of design.md (HYP*)."""

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ham
from ham import HAM, hyperbolic_step_

BACKENDS = ["reference", "foreach", "auto"]


def hyp(x_half, g, lr, alpha, beta, c=5.0, sign_src=None):
    """The formula written out element by element in plain Python floats."""
    s = x_half if sign_src is None else sign_src
    sign = (s > 0) - (s < 0)
    expo = -lr * (alpha * sign * g + beta)
    if c is not None:
        expo = max(-c, min(c, expo))
    return x_half * math.exp(expo)


def expected(x_half: torch.Tensor, g: torch.Tensor, lr, alpha, beta, c=5.0, sign_src=None):
    xs, gs = x_half.flatten().tolist(), g.flatten().tolist()
    ss = xs if sign_src is None else sign_src.flatten().tolist()
    out = [hyp(x, gg, lr, alpha, beta, c, s) for x, gg, s in zip(xs, gs, ss)]
    return torch.tensor(out, dtype=torch.float64).reshape(x_half.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "alpha,beta,c",
    [(200.0, 1e-3, 5.0), (200.0, 0.0, 5.0), (0.0, 0.5, 5.0), (-50.0, 1e-2, 5.0), (1e4, 0.0, 5.0),
     (1e3, 0.0, None), (3.0, 2.0, 0.1)],
)
def test_functional_step_matches_formula(backend, alpha, beta, c):
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64)
    x[0, :3] = 0.0  # exact zeros
    g = torch.randn(7, 5, dtype=torch.float64)
    lr = 0.07
    want = expected(x, g, lr, alpha, beta, c)
    got = x.clone()
    hyperbolic_step_([got], [g], lr=lr, alpha=alpha, beta=beta, clamp=c, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert torch.equal(got[0, :3], torch.zeros(3, dtype=torch.float64))


def test_clamp_is_active_on_hand_computed_case():
    x = torch.tensor([[2.0, -2.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[-10.0, -10.0, 0.0]], dtype=torch.float64)
    # exponents: -1*(100*1*-10) = 1000 -> 5 ; -1*(100*-1*-10) = -1000 -> -5 ; 0
    hyperbolic_step_([x], [g], lr=1.0, alpha=100.0, beta=0.0, clamp=5.0, backend="foreach")
    torch.testing.assert_close(x, torch.tensor([[2 * math.e**5, -2 * math.e**-5, 1.0]], dtype=torch.float64))


def test_beta_where_grad_only_decays_where_grad_nonzero():
    x = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    g = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    for backend in BACKENDS:
        y = x.clone()
        hyperbolic_step_([y], [g], lr=0.1, alpha=0.0, beta=1.0, beta_where_grad=True, backend=backend)
        torch.testing.assert_close(y, torch.tensor([1.0, math.exp(-0.1), -1.0], dtype=torch.float64))


def test_signed_variant_uses_given_signs():
    x_half = torch.tensor([0.5, -0.5], dtype=torch.float64)  # sign changed by the base step for entry 0
    old = torch.tensor([-1, -1], dtype=torch.int8)
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    for backend in BACKENDS:
        y = x_half.clone()
        hyperbolic_step_([y], [g], lr=0.01, alpha=10.0, beta=0.0, signs=[old], backend=backend)
        torch.testing.assert_close(y, expected(x_half, g, 0.01, 10.0, 0.0, sign_src=old.double()))


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 3),
    ).double()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 2, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)


BASE_OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
}


@pytest.mark.parametrize("name", list(BASE_OPTIMIZERS))
def test_wrapper_applies_formula_after_any_base_step(name):
    model = _tiny_model()
    ref = copy.deepcopy(model)
    opt = HAM(BASE_OPTIMIZERS[name](model.parameters()), alpha=200.0, beta=1e-3)
    base_ref = BASE_OPTIMIZERS[name](ref.parameters())
    x, y = _batch()
    for _ in range(3):
        for m, o in ((model, opt), (ref, base_ref)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
        # reference: base step, then the formula on ndim >= 2 tensors only
        base_ref.step()
        lr = base_ref.param_groups[0]["lr"]
        with torch.no_grad():
            for p in ref.parameters():
                if p.ndim >= 2:
                    p.copy_(expected(p, p.grad, lr, 200.0, 1e-3))
        opt.step()
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)


def test_one_dim_tensors_untouched_and_group_overrides():
    model = _tiny_model()
    conv_w, conv_b = model[0].weight, model[0].bias
    lin_w = model[4].weight
    groups = [
        {"params": [conv_w, conv_b]},                                       # default: ndim >= 2 only
        {"params": [lin_w], "ham_alpha": -10.0, "ham_beta": 0.5},           # own alpha/beta
        {"params": list(model[1].parameters()) + [model[4].bias], "ham": False},
    ]
    base = torch.optim.SGD(groups, lr=0.1)
    opt = HAM(base, alpha=200.0, beta=1e-3)
    assert {id(p) for p in opt.managed_params()} == {id(conv_w), id(lin_w)}
    x, y = _batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        half = before[n] - 0.1 * grads[n]
        if n == "0.weight":
            want = expected(half, grads[n], 0.1, 200.0, 1e-3)
        elif n == "4.weight":
            want = expected(half, grads[n], 0.1, -10.0, 0.5)
        else:
            want = half  # biases and BN params: plain SGD
        torch.testing.assert_close(p.detach(), want, rtol=1e-10, atol=1e-12, msg=n)


def test_alpha_beta_zero_is_plain_base_optimizer():
    model, ref = _tiny_model(), _tiny_model()
    opt = HAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), alpha=0.0, beta=0.0)
    base = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x, y = _batch()
    for _ in range(3):
        for m, o in ((model, opt), (ref, base)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=20),
    st.floats(-1e4, 1e4), st.floats(-10, 10), st.floats(1e-6, 10.0),
    st.sampled_from(BACKENDS), st.sampled_from([5.0, None]),
)
def test_multiplicative_step_never_flips_a_sign(values, alpha, beta, lr, backend, clamp):
    x = torch.tensor(values, dtype=torch.float64)
    g = torch.linspace(-50, 50, len(values), dtype=torch.float64)
    y = x.clone()
    hyperbolic_step_([y], [g], lr=lr, alpha=alpha, beta=beta, clamp=clamp, backend=backend)
    # sign(y) == sign(x) wherever y did not underflow to zero; zeros stay zero
    assert torch.all((torch.sign(y) == torch.sign(x)) | (y == 0))
    assert torch.all(y[x == 0] == 0)


def test_grad_scaler_skipped_step_skips_hyperbolic_step():
    model = _tiny_model().float()
    opt = HAM(torch.optim.SGD(model.parameters(), lr=0.1), alpha=200.0, beta=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = _batch()
    loss = torch.nn.functional.cross_entropy(model(x.float()), y)
    scaler.scale(loss).backward()
    model[0].weight.grad[0, 0, 0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(opt)
    scaler.update()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)  # neither the base step nor the hyperbolic step ran (beta alone would shrink)
    assert scaler.get_scale() < 2.0**8
    # a finite step goes through, with unscaled grads driving both steps
    opt.zero_grad()
    model2 = copy.deepcopy(model)
    ref = HAM(torch.optim.SGD(model2.parameters(), lr=0.1), alpha=200.0, beta=0.5)
    loss = torch.nn.functional.cross_entropy(model(x.float()), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    torch.nn.functional.cross_entropy(model2(x.float()), y).backward()
    ref.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_lr_scheduler_drives_both_steps():
    model = _tiny_model()
    opt = HAM(torch.optim.SGD(model.parameters(), lr=1.0), alpha=0.0, beta=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5**k)
    w = model[4].weight
    for k in range(3):
        opt.zero_grad()
        w.grad = torch.zeros_like(w)  # only the beta term acts: w <- w * exp(-lr * beta)
        before = w.detach().clone()
        opt.step()
        sched.step()
        torch.testing.assert_close(w.detach(), before * math.exp(-(0.5**k)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.125)
    # a scheduler built on the base optimizer drives HAM too (they share param groups)
    sched2 = torch.optim.lr_scheduler.StepLR(opt.base, 1, gamma=0.1)
    sched2.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)


def _train(opt, model, steps, x, y, sched=None):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def test_state_dict_round_trip_is_bit_exact():
    x, y = _batch()
    model = _tiny_model()
    mk = lambda m: HAM(torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True), alpha=200, beta=1e-3)
    opt = mk(model)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    _train(opt, model, 4, x, y, sched)
    ckpt = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
            "sched": sched.state_dict()}
    assert set(ckpt["opt"]) == {"state", "param_groups"}
    _train(opt, model, 4, x, y, sched)

    resumed = _tiny_model(seed=123)
    resumed.load_state_dict(ckpt["model"])
    opt2 = mk(resumed)
    opt2.load_state_dict(ckpt["opt"])
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, 10)
    sched2.load_state_dict(ckpt["sched"])
    assert opt2.param_groups is opt2.base.param_groups
    _train(opt2, resumed, 4, x, y, sched2)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_state_dict_equals_base_state_dict_and_keeps_no_extra_state():
    model = _tiny_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = HAM(base, alpha=200, beta=1e-3, variant="signed")
    x, y = _batch()
    _train(opt, model, 2, x, y)
    sd, base_sd = opt.state_dict(), base.state_dict()
    assert sd["param_groups"] == base_sd["param_groups"]
    assert all(torch.equal(sd["state"][k]["momentum_buffer"], base_sd["state"][k]["momentum_buffer"])
               for k in base_sd["state"])
    for st_ in opt.state.values():
        assert set(st_) == {"momentum_buffer"}  # nothing persistent added by HAM


def test_add_param_group_and_zero_grad():
    a, b = torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(4, 4))
    opt = HAM(torch.optim.SGD([a], lr=0.1), alpha=1.0, beta=0.0)
    opt.add_param_group({"params": [b], "lr": 0.01})
    assert opt.param_groups[1]["ham_alpha"] == 1.0 and len(opt.managed_params()) == 2
    (a.sum() + b.sum()).backward()
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_bad_arguments_raise_clear_errors():
    p = [torch.nn.Parameter(torch.randn(2, 2))]
    with pytest.raises(ValueError, match="variant"):
        HAM(torch.optim.SGD(p, lr=0.1), variant="nope")
    with pytest.raises(ValueError, match="alpha"):
        HAM(torch.optim.SGD(p, lr=0.1), alpha=float("nan"))
    with pytest.raises(ValueError, match="clamp"):
        HAM(torch.optim.SGD(p, lr=0.1), clamp=-1.0)
    with pytest.raises(TypeError):
        HAM(object())


def test_signed_variant_differs_only_where_sign_flipped():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([[0.01, -0.01, 1.0]], dtype=torch.float64))
    g = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    outs = {}
    for variant in ("deployed", "signed"):
        p = torch.nn.Parameter(w.detach().clone())
        opt = HAM(torch.optim.SGD([p], lr=0.02), alpha=10.0, beta=0.0, variant=variant)
        p.grad = g.clone()
        opt.step()
        outs[variant] = p.detach()
    # entry 0 crossed zero in the base step (0.01 - 0.02 < 0): the variants disagree there only
    assert outs["deployed"][0, 0] != outs["signed"][0, 0]
    assert torch.equal(outs["deployed"][0, 1:], outs["signed"][0, 1:])


def test_max_weight_norm_clips_each_stepped_tensor_and_only_those():
    """ham.max_weight_norm (the authors' code: 1000): after the step, a stepped tensor above the bound is scaled
    back to it; a tensor below it and a tensor HAM does not step are untouched."""
    torch.manual_seed(0)
    big = torch.nn.Parameter(torch.randn(8, 8) * 10)    # norm ~80
    small = torch.nn.Parameter(torch.randn(4, 4) * 0.01)
    bias = torch.nn.Parameter(torch.randn(8) * 10)      # ndim 1: not stepped
    opt = ham.HAM(torch.optim.SGD([big, small, bias], lr=0.01), alpha=1.0, beta=0.0, max_weight_norm=5.0)
    for p in (big, small, bias):
        p.grad = torch.randn_like(p)
    ref = ham.HAM(torch.optim.SGD([q := big.detach().clone().requires_grad_(), s := small.detach().clone()
                                   .requires_grad_()], lr=0.01), alpha=1.0, beta=0.0)
    q.grad, s.grad = big.grad.clone(), small.grad.clone()
    bias_before = bias.detach().clone() - 0.01 * bias.grad
    opt.step()
    ref.step()
    assert torch.allclose(big.norm(), torch.tensor(5.0)) and torch.allclose(big, q * (5.0 / q.norm()))
    assert torch.equal(small, s)  # below the bound: exactly the plain HAM step
    assert torch.equal(bias, bias_before) and bias.norm() > 5  # plain SGD, never clipped
    with pytest.raises(ValueError, match="max_weight_norm"):
        ham.HAM(torch.optim.SGD([big], lr=0.1), max_weight_norm=0)


def test_step_biases_puts_every_non_norm_bias_in_a_stepped_group():
    from ham.optim.factory import build_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LayerNorm(144), torch.nn.Linear(144, 3))
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    plain = build_optimizer(model, sgd, {"alpha": 200, "beta": 1e-3})
    paper = build_optimizer(model, sgd, {"alpha": 200, "beta": 1e-3, "step_biases": True})
    conv, bn, ln, fc = model[0], model[1], model[3], model[4]
    assert {id(p) for p in plain.managed_params()} == {id(conv.weight), id(fc.weight)}  # the authors' code
    assert {id(p) for p in paper.managed_params()} == {id(conv.weight), id(fc.weight), id(conv.bias), id(fc.bias)}
    stepped = [g for g in paper.param_groups if g.get("ham") is True]
    assert len(stepped) == 1 and stepped[0]["weight_decay"] == 0.0  # biases keep their no-decay
    assert not {id(p) for p in (bn.weight, bn.bias, ln.weight, ln.bias)} & {id(p) for p in paper.managed_params()}
