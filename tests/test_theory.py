"""The paper's theory at small scale: Thm 4.2 flow limit, the linear-regression claim, R_alpha."""

import torch

from ham.optim.functional import hyperbolic_step_
from ham.theory import bregman, flow, linreg


def test_discrete_ham_follows_gradient_flow_to_first_order():
    gaps = flow.flow_gap([0.02, 0.01, 0.005])
    errs = [g for _, g in gaps]
    assert errs[-1] < 2e-3
    for a, b in zip(errs, errs[1:]):
        assert 1.7 < a / b < 2.3  # halving lr halves the gap: O(lr)


def test_flow_check_detects_a_wrong_flow():
    # the same comparison against a flow without the |x| alpha term must NOT shrink with lr
    A, b, x0 = flow.small_problem()
    wrong = flow.integrate_flow(A, b, x0, alpha=0.0, beta=0.0, T=1.0)
    x = flow.ham_iterates(A, b, x0, alpha=2.0, beta=0.1, lr=0.005, T=1.0)
    assert torch.linalg.vector_norm(x - wrong) > 0.1


def test_batched_step_equals_library_step():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    gr = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    a, b = x.clone(), x.clone()
    linreg.hyperbolic_batched_(a, gr, lr=0.01, alpha=torch.tensor(200.0, dtype=torch.float64), beta=1e-3,
                               clamp=5.0, sign_src=a)
    hyperbolic_step_([b], [gr], lr=0.01, alpha=200.0, beta=1e-3, clamp=5.0, backend="reference")
    torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_ham_ends_closer_to_sparse_ground_truth_than_gd():
    p = linreg.make_problems(3)
    res = linreg.run(p, linreg.standard_runs(200.0), lr=1e-3, steps=6000, points=10)
    final = res["dist"][-1].mean(0)  # [GD, HAM, signed]
    assert final[1] < 0.5 * final[0]
    # both interpolate the data (under-determined): the difference is WHICH solution, i.e. the implicit bias
    assert res["loss"][-1, :, 1].max() < 1e-8


def test_alpha_zero_is_gradient_descent():
    p = linreg.make_problems(2)
    res = linreg.run(p, linreg.alpha_runs([0.0]), lr=1e-3, steps=2000, points=5)
    x = torch.zeros_like(p.x_star)
    for _ in range(2000):
        gr, _ = linreg.grad_and_loss(p, x[:, None, :])
        x = x - 1e-3 * gr[:, 0]
    torch.testing.assert_close(res["x"][:, 0], x, rtol=1e-12, atol=1e-14)


def test_r_alpha_hessian_is_inverse_ham_metric():
    x = torch.tensor([-1.3, -0.2, 0.05, 0.7, 2.0], dtype=torch.float64)
    for alpha in (0.5, 10.0, 200.0):
        h = 1e-5
        second = (bregman.r_alpha(x + h, alpha) - 2 * bregman.r_alpha(x, alpha) + bregman.r_alpha(x - h, alpha)) / h**2
        torch.testing.assert_close(second, 1 / bregman.inverse_metric_ham(x, alpha), rtol=1e-4, atol=0)


def test_r_alpha_goes_from_l2_to_l1_shape():
    x = torch.linspace(-1, 1, 201, dtype=torch.float64)
    small = bregman.normalized_r_alpha(x, 1e-3)
    large = bregman.normalized_r_alpha(x, 1e6)
    assert (small - x * x).abs().max() < 1e-3
    assert (large - x.abs()).abs().max() < 0.1
    assert (large - x * x).abs().max() > 0.2
