"""SAM: two-pass correctness against hand-written updates, ASAM, exact restore, SAM-HAM ordering, BN statistics
updated once per step, bit-exact state round trip."""

import copy
import io

import pytest
import torch
from torch import nn

from ham import HAM
from ham.optim.functional import hyperbolic_step_
from ham.optim.sam import SAM, bn_stats_frozen, sam_of

f64 = torch.float64
both_paths = pytest.mark.parametrize("foreach", [False, True], ids=["per_tensor", "foreach"])


def quad_loss(w, A, b):
    return 0.5 * ((A @ w - b) ** 2).sum()


def quad_grad(w, A, b):
    return A.T @ (A @ w - b)


def _problem(seed, rows=6, cols=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, dtype=f64, generator=g), torch.randn(rows, dtype=f64, generator=g)


@both_paths
def test_sam_step_matches_hand_written_update(foreach):
    A, b = _problem(0)
    w = nn.Parameter(torch.randn(4, dtype=f64))
    w0 = w.detach().clone()
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05, foreach=foreach)
    quad_loss(w, A, b).backward()
    g1 = w.grad.clone()
    sam.first_step()
    assert sam.pending
    w_pert = w0 + 0.05 * g1 / g1.norm()
    torch.testing.assert_close(w.detach(), w_pert)
    sam.zero_grad()
    quad_loss(w, A, b).backward()
    g2 = quad_grad(w_pert, A, b)
    torch.testing.assert_close(w.grad, g2)
    sam.step()  # second step: restore, then SGD with g2 from w0
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g2)
    assert not sam.pending


@both_paths
def test_adaptive_sam_two_passes(foreach):
    A, b = _problem(1, cols=3)
    w = nn.Parameter(torch.tensor([2.0, -0.5, 1.0], dtype=f64))
    w0 = w.detach().clone()
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.1, adaptive=True, foreach=foreach)
    quad_loss(w, A, b).backward()
    g1 = w.grad.clone()
    sam.first_step()
    w_pert = w0 + 0.1 * w0**2 * g1 / (w0.abs() * g1).norm()
    torch.testing.assert_close(w.detach(), w_pert)
    sam.zero_grad()
    quad_loss(w, A, b).backward()
    sam.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * quad_grad(w_pert, A, b))


@both_paths
def test_norm_spans_all_groups_with_per_group_rho_and_adaptive(foreach):
    a = nn.Parameter(torch.tensor([1.0, -2.0], dtype=f64))
    b = nn.Parameter(torch.tensor([[0.5, 3.0]], dtype=f64))
    frozen = nn.Parameter(torch.tensor([7.0], dtype=f64))  # no grad: not perturbed, not in the norm
    a.grad = torch.tensor([0.3, 0.4], dtype=f64)
    b.grad = torch.tensor([[-1.0, 2.0]], dtype=f64)
    sgd = torch.optim.SGD([{"params": [a, frozen]}, {"params": [b], "rho": 0.2, "adaptive": True}], lr=0.1)
    sam = SAM(sgd, rho=0.05, foreach=foreach)
    assert [g["rho"] for g in sam.param_groups] == [0.05, 0.2]
    assert [g["adaptive"] for g in sam.param_groups] == [False, True]
    a0, b0 = a.detach().clone(), b.detach().clone()
    sam.first_step()
    norm = torch.sqrt(a.grad.square().sum() + (b0.abs() * b.grad).square().sum())
    torch.testing.assert_close(a.detach(), a0 + 0.05 * a.grad / norm)
    torch.testing.assert_close(b.detach(), b0 + 0.2 * b0**2 * b.grad / norm)
    assert frozen.item() == 7.0


@both_paths
def test_restore_is_exact_even_for_weights_far_below_the_perturbation(foreach):
    # (w + e) - e would turn 1e-30 into 0 and 1.0000001 into a neighbouring float; HAM cares about tiny weights
    w = nn.Parameter(torch.tensor([1e-30, 1.0000001, -3e-8, 0.0]))
    w.grad = torch.tensor([50.0, -7.0, 3.0, 1.0])
    w0 = w.detach().clone()
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5, foreach=foreach)
    sam.first_step()
    assert not torch.equal(w.detach(), w0)
    sam.restore()
    assert torch.equal(w.detach(), w0)
    sam.restore()  # no pending step: no-op
    assert torch.equal(w.detach(), w0)


def test_saved_weights_buffer_is_reused_across_steps():
    w = nn.Parameter(torch.randn(3, 3))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    ptrs = set()
    for _ in range(3):
        w.grad = torch.randn(3, 3)
        sam.first_step()
        ptrs.add(sam._pending[0][1][0].data_ptr())
        sam.step()
    assert len(ptrs) == 1


def test_step_without_first_step_is_the_plain_base_step():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5))
    ref = nn.Parameter(w.detach().clone())
    sam = SAM(torch.optim.SGD([w], lr=0.1, momentum=0.9), rho=0.05)
    sgd = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    for _ in range(3):
        g = torch.randn(5)
        w.grad, ref.grad = g.clone(), g.clone()
        sam.step()
        sgd.step()
    assert torch.equal(w.detach(), ref.detach())


def test_closure_step_equals_manual_two_passes_and_composes_with_ham():
    A, b = _problem(2, rows=8, cols=5)

    def run(use_closure):
        W = nn.Parameter(torch.linspace(-1, 1, 5, dtype=f64).reshape(1, 5))
        opt = HAM(SAM(torch.optim.SGD([W], lr=0.05, momentum=0.9), rho=0.05), alpha=50.0, beta=1e-3)
        closure = lambda: quad_loss(W[0], A, b).backward() or quad_loss(W[0], A, b).detach()
        for _ in range(3):
            opt.zero_grad()
            if use_closure:
                opt.step(closure)
            else:
                closure()
                sam_of(opt).first_step()
                opt.zero_grad()
                closure()
                opt.step()
        return W.detach()

    assert torch.equal(run(True), run(False))


def test_misuse_is_refused():
    w = nn.Parameter(torch.randn(3))
    w.grad = torch.randn(3)
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    sam.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        sam.first_step()
    with pytest.raises(RuntimeError, match="perturbed"):
        sam.state_dict()
    with pytest.raises(RuntimeError, match="pending"):
        sam.step(lambda: None)
    sam.step()
    sam.state_dict()
    with pytest.raises(ValueError, match="rho"):
        SAM(torch.optim.SGD([w], lr=0.1), rho=-0.1)


def test_load_state_dict_drops_a_pending_perturbation():
    w = nn.Parameter(torch.randn(3))
    w.grad = torch.randn(3)
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    sd = sam.state_dict()
    sam.first_step()
    loaded = torch.tensor([1.0, 2.0, 3.0])
    with torch.no_grad():
        w.copy_(loaded)  # e.g. the model's checkpoint was loaded
    sam.load_state_dict(sd)
    assert not sam.pending
    sam.restore()
    assert torch.equal(w.detach(), loaded)


@both_paths
def test_first_step_never_syncs_with_the_host(monkeypatch, foreach):
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    for p in params:
        p.grad = torch.randn_like(p)
    groups = [{"params": params[:1], "adaptive": True}, {"params": params[1:]}]
    sam = SAM(torch.optim.SGD(groups, lr=0.1), foreach=foreach)

    def refuse(*_args, **_kw):
        raise AssertionError("host sync in first_step")

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    sam.first_step()
    sam.restore()
    monkeypatch.undo()
    assert not sam.pending


@both_paths
def test_low_precision_grads(foreach):
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16))
    w.grad = torch.tensor([300.0, 400.0, 0.0], dtype=torch.bfloat16)
    w0 = w.detach().clone()
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5, foreach=foreach)
    sam.first_step()
    assert w.dtype == torch.bfloat16
    torch.testing.assert_close(w.detach().float(), w0.float() + torch.tensor([0.3, 0.4, 0.0]), rtol=1e-2, atol=1e-2)


def test_sam_ham_hyperbolic_step_after_second_step_with_perturbed_grad_and_current_lr():
    A, b = _problem(1, rows=8, cols=5)
    W = nn.Parameter(torch.randn(1, 5, dtype=f64))  # 2-D so HAM applies
    W0 = W.detach().clone()
    opt = HAM(SAM(torch.optim.SGD([W], lr=0.05), rho=0.05), alpha=200.0, beta=1e-3)
    assert sam_of(opt) is opt.base and sam_of(torch.optim.SGD([W], lr=0.1)) is None
    opt.param_groups[0]["lr"] = 0.03  # what a scheduler does: both steps must use the current lr
    quad_loss(W[0], A, b).backward()
    g1 = W.grad.clone()
    sam_of(opt).first_step()
    opt.zero_grad()
    quad_loss(W[0], A, b).backward()
    g2 = W.grad.clone()
    opt.step()
    w_pert = W0 + 0.05 * g1 / g1.norm()
    torch.testing.assert_close(g2[0], quad_grad(w_pert[0], A, b))
    want = W0 - 0.03 * g2  # restored to W0 first, then SGD with g2, then HYP* with g2 and lr 0.03
    hyperbolic_step_([want], [g2], lr=0.03, alpha=200.0, beta=1e-3, backend="reference")
    torch.testing.assert_close(W.detach(), want)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_running_stats_updated_once_per_sam_step(momentum):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=momentum))
    ref = copy.deepcopy(model)
    for i in range(3):
        x = torch.randn(16, 3)
        model(x)  # first pass updates the stats
        with bn_stats_frozen(model):
            out = model(x + 1.0)  # second pass at a different point: must not touch them
        ref(x)
        for a, b in zip(model[1].buffers(), ref[1].buffers()):
            assert torch.equal(a, b)
        assert int(model[1].num_batches_tracked) == i + 1
        assert model[1].momentum == momentum
    # the frozen pass still normalizes with the batch's own statistics (train mode)
    torch.testing.assert_close(out.mean(0), torch.zeros(4) + model[1].bias.detach(), atol=1e-5, rtol=0)


def test_bn_momentum_restored_after_an_error():
    model = nn.Sequential(nn.BatchNorm2d(2, momentum=0.3))
    with pytest.raises(ZeroDivisionError), bn_stats_frozen(model):
        assert model[0].momentum == 0.0
        1 / 0
    assert model[0].momentum == 0.3


def _sam_train(opt, model, x, y, steps):
    sam = sam_of(opt)
    for _ in range(steps):
        nn.functional.cross_entropy(model(x), y).backward()
        sam.first_step()
        opt.zero_grad()
        with bn_stats_frozen(model):
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def _net():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_state_dict_round_trip_bit_exact():
    torch.manual_seed(0)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    model = _net()
    mk = lambda m: HAM(SAM(torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), rho=0.05, adaptive=True),
                       200.0, 1e-3)
    opt = mk(model)
    _sam_train(opt, model, x, y, 3)
    assert int(model[1].num_batches_tracked) == 3
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _sam_train(opt, model, x, y, 3)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)  # what the trainer's checkpoints go through
    model2 = _net()
    model2.load_state_dict(ck["model"])
    opt2 = HAM(SAM(torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)), 200.0, 1e-3)  # defaults differ
    opt2.load_state_dict(ck["opt"])
    g = opt2.param_groups[0]
    assert g["rho"] == 0.05 and g["adaptive"] is True and "momentum_buffer" in next(iter(opt2.state.values()))
    _sam_train(opt2, model2, x, y, 3)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
