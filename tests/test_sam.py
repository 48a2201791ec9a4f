"""SAM two-pass correctness, SAM-HAM ordering, BN statistics updated once, bit-exact state round trip."""

import copy

import torch
from torch import nn

from ham import HAM
from ham.optim.functional import hyperbolic_step_
from ham.optim.sam import SAM, bn_stats_frozen, sam_of


def quad_loss(w, A, b):
    return 0.5 * ((A @ w - b) ** 2).sum()


def test_sam_step_matches_hand_written_update():
    torch.manual_seed(0)
    A, b = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    w = nn.Parameter(torch.randn(4, dtype=torch.float64))
    w0 = w.detach().clone()
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    quad_loss(w, A, b).backward()
    g1 = w.grad.clone()
    sam.first_step()
    w_pert = w0 + 0.05 * g1 / g1.norm()
    torch.testing.assert_close(w.detach(), w_pert)
    sam.zero_grad()
    quad_loss(w, A, b).backward()
    g2 = A.T @ (A @ w_pert - b)
    torch.testing.assert_close(w.grad, g2)
    sam.step()  # second step: restore, then SGD with g2 from w0
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g2)
    assert not sam.pending


def test_adaptive_sam_perturbation():
    w = nn.Parameter(torch.tensor([2.0, -0.5, 1.0], dtype=torch.float64))
    w.grad = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.1, adaptive=True)
    w0, g = w.detach().clone(), w.grad.clone()
    sam.first_step()
    want = w0 + 0.1 * w0**2 * g / (w0.abs() * g).norm()
    torch.testing.assert_close(w.detach(), want)


def test_sam_ham_hyperbolic_step_after_second_step_with_perturbed_grad():
    torch.manual_seed(1)
    A, b = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    W = nn.Parameter(torch.randn(1, 5, dtype=torch.float64))  # 2-D so HAM applies
    W0 = W.detach().clone()
    opt = HAM(SAM(torch.optim.SGD([W], lr=0.05), rho=0.05), alpha=200.0, beta=1e-3)
    assert sam_of(opt) is opt.base
    quad_loss(W[0], A, b).backward()
    g1 = W.grad.clone()
    sam_of(opt).first_step()
    opt.zero_grad()
    quad_loss(W[0], A, b).backward()
    g2 = W.grad.clone()
    opt.step()
    w_pert = W0 + 0.05 * g1 / g1.norm()
    torch.testing.assert_close(g2[0], A.T @ (A @ w_pert[0] - b))
    want = W0 - 0.05 * g2
    hyperbolic_step_([want], [g2], lr=0.05, alpha=200.0, beta=1e-3, backend="reference")
    torch.testing.assert_close(W.detach(), want)


def test_bn_running_stats_updated_once_per_sam_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ref = copy.deepcopy(model)
    x = torch.randn(16, 3)
    model(x)  # first pass updates the stats
    with bn_stats_frozen(model):
        model(x + 1.0)  # second pass at a different point: must not touch them
    ref(x)
    for a, b in zip(model[1].buffers(), ref[1].buffers()):
        assert torch.equal(a, b)
    assert model[1].momentum == ref[1].momentum


def test_restore_undoes_a_first_step():
    w = nn.Parameter(torch.randn(3, 3))
    w0 = w.detach().clone()
    w.grad = torch.randn(3, 3)
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    sam.first_step()
    assert not torch.equal(w.detach(), w0)
    sam.restore()
    torch.testing.assert_close(w.detach(), w0)


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


def test_state_dict_round_trip_bit_exact():
    torch.manual_seed(0)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    mk = lambda m: HAM(SAM(torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), rho=0.05), 200.0, 1e-3)
    opt = mk(model)
    _sam_train(opt, model, x, y, 3)
    ck = copy.deepcopy((model.state_dict(), opt.state_dict()))
    _sam_train(opt, model, x, y, 3)
    model2 = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model2.load_state_dict(ck[0])
    opt2 = mk(model2)
    opt2.load_state_dict(ck[1])
    assert opt2.param_groups[0]["rho"] == 0.05 and "momentum_buffer" in next(iter(opt2.state.values()))
    _sam_train(opt2, model2, x, y, 3)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
