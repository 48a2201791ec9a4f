"""The paper's theory at small scale, with the functions `python -m ham.theory` uses:
Thm 4.2 (flow limit), Appendix D.1 / Thm 4.5 (implicit bias on linear regression), Lemma 4.4 / Thm 4.6 (R_alpha)."""

import itertools

import pytest
import torch

from ham.errors import ConfigError
from ham.optim import HAM
from ham.theory import bregman, flow, linreg

LRS = [2.0**-5, 2.0**-6, 2.0**-7]


# ---------------------------------------------------------------------------------------------- Thm 4.2 (flow)
def test_discrete_ham_follows_its_gradient_flow_to_first_order():
    gaps = [g for _, g in flow.flow_gap(LRS, alpha=2.0, beta=0.1, dt=2.0**-10)]
    assert gaps[-1] < 5e-3
    for a, b in itertools.pairwise(gaps):
        assert 1.8 < a / b < 2.3  # halving lr halves the gap: O(lr)


def test_flow_check_rejects_the_wrong_flow():
    # the discrete HAM iterates must NOT approach plain gradient flow (no |x| alpha term, no beta)
    A, b, x0 = flow.small_problem()
    wrong = flow.integrate_flow(A, b, x0, alpha=0.0, beta=0.0, times=[1.0], dt=2.0**-10)[0]
    gaps = [torch.linalg.vector_norm(flow.ham_iterates(A, b, x0, alpha=2.0, beta=0.1, lr=lr, times=[1.0])[0] - wrong)
            for lr in LRS]
    assert min(gaps) > 0.1
    assert gaps[-1] > 0.8 * gaps[0]  # does not shrink with lr


def test_flow_times_must_be_multiples_of_lr():
    with pytest.raises(ValueError, match="multiple"):
        flow.flow_gap([0.03], T=1.0)


# ------------------------------------------------------------------------------------ linear regression (D.1)
def _loop_with_ham_class(p: linreg.Problem, seed: int, alpha: float, variant: str, lr: float, steps: int):
    """The same experiment through the public optimizer: HAM around torch.optim.SGD."""
    Z, y = p.Z[seed], p.y[seed]
    x = torch.zeros(Z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = HAM(torch.optim.SGD([{"params": [x], "ham": True}], lr=lr), alpha=alpha, beta=0.0, clamp=None,
              variant=variant, backend="reference")
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((Z @ x - y) ** 2).mean()).backward()
        opt.step()
    return x.detach()


def test_batched_run_matches_the_ham_optimizer_class():
    p = linreg.make_problems(2)
    res = linreg.run(p, linreg.standard_methods(200.0), lr=3e-3, max_steps=300, points=5)
    for seed in range(2):
        for i, variant in ((1, "deployed"), (2, "signed")):
            ref = _loop_with_ham_class(p, seed, 200.0, variant, 3e-3, 300)
            torch.testing.assert_close(res.x[i, seed], ref, rtol=1e-10, atol=1e-12)
    # and the two variants really differ (sign flips happen), so the comparison above can tell them apart
    assert (res.x[1] - res.x[2]).abs().max() > 1e-6


def test_ham_ends_closer_to_the_sparse_ground_truth_than_gd():
    p = linreg.make_problems(3)
    res = linreg.run(p, linreg.standard_methods(200.0), lr=1e-3, max_steps=6000, points=10)
    gd, ham = res.final_dist()[0], res.final_dist()[1]
    assert (ham < gd).all()
    assert ham.mean() < 0.5 * gd.mean()
    assert res.loss[-1, 1].max() < 1e-8       # HAM interpolates the data: the difference is WHICH solution
    assert (res.hit[1e-8][1] < res.hit[1e-8][0]).all() or (res.hit[1e-8][0] < 0).all()  # and gets there sooner


def test_limits_are_the_bregman_projections_of_thm_4_5():
    # GD -> argmin ||x||_2 s.t. Zx=y; HAM -> argmin R_alpha s.t. Zx=y (up to an O(lr) discretisation gap)
    p = linreg.make_problems(2)
    res = linreg.run(p, linreg.standard_methods(200.0), lr=3e-3, max_steps=40_000, stop_loss=1e-14, points=5)
    x_l2, x_r = linreg.min_norm_solution(p), bregman.constrained_minimizer(p.Z, p.y, 200.0)
    far = torch.linalg.vector_norm(x_l2 - x_r, dim=-1)
    assert (far > 0.3).all()
    assert (torch.linalg.vector_norm(res.x[0] - x_l2, dim=-1) < 1e-5).all()
    assert (torch.linalg.vector_norm(res.x[1] - x_r, dim=-1) < 0.05 * far).all()


def test_bad_problem_size_is_a_config_error():
    with pytest.raises(ConfigError, match="support size k"):
        linreg.make_problems(1, n=10, k=11)


def test_checkpoints_are_log_spaced_and_hit_every_decade():
    pts = linreg.checkpoints(10**7, points=30)
    assert pts[0] == 1 and pts[-1] == 10**7
    assert all(10**e in pts for e in range(8))
    assert pts == sorted(set(pts))


# ------------------------------------------------------------------------------ Lemma 4.4 / Thm 4.6 (R_alpha)
@pytest.mark.parametrize("alpha", [0.5, 10.0, 200.0])
def test_r_alpha_hessian_is_the_ham_metric(alpha):
    x = torch.tensor([-1.3, -0.2, 0.05, 0.7, 2.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(bregman.r_alpha(x, alpha).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)  # separable: the Hessian is diagonal
    torch.testing.assert_close(h, 1 / bregman.inverse_metric_ham(x.detach(), alpha), rtol=1e-10, atol=0)
    torch.testing.assert_close(g.detach(), bregman.grad_r_alpha(x.detach(), alpha), rtol=1e-10, atol=1e-15)


def test_r_alpha_linear_term_makes_x0_stationary():
    x0 = torch.tensor([-0.7, 0.3, 1.5], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bregman.r_alpha(x, 10.0, x0).sum(), x)
    assert g.abs().max() < 1e-12


def test_r_alpha_goes_from_l2_to_l1_shape():
    x = torch.linspace(-1, 1, 201, dtype=torch.float64)
    small = bregman.normalized_r_alpha(x, 1e-3)
    large = bregman.normalized_r_alpha(x, 1e8)
    assert (small - x * x).abs().max() < 1e-3
    assert (large - x.abs()).abs().max() < 0.06
    assert (large - x * x).abs().max() > 0.2
    # the transition is monotone in alpha: the distance to |x| shrinks as alpha grows
    gaps = [(bregman.normalized_r_alpha(x, a) - x.abs()).abs().max() for a in (1.0, 10.0, 100.0, 1e4)]
    assert all(a > b for a, b in itertools.pairwise(gaps))


def test_constrained_minimizer_satisfies_kkt():
    p = linreg.make_problems(2)
    for alpha in (1.0, 200.0):
        x = bregman.constrained_minimizer(p.Z, p.y, alpha)
        assert (torch.einsum("sdn,sn->sd", p.Z, x) - p.y).abs().max() < 1e-9
        # grad R_alpha(x) lies in the row space of Z (a multiplier exists): its null-space part vanishes
        gr = bregman.grad_r_alpha(x, alpha)
        proj = torch.linalg.lstsq(p.Z.transpose(1, 2), gr.unsqueeze(-1)).solution
        resid = gr - (p.Z.transpose(1, 2) @ proj).squeeze(-1)
        assert resid.abs().max() < 1e-8 * (1 + gr.abs().max())


@pytest.mark.slow
def test_quick_command_writes_every_file(tmp_path):
    from ham.theory.__main__ import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("README.md", "fig3_linreg.png", "linreg_final.csv", "flow_gap.csv", "fig2b_bregman.png",
                 "fig1_inverse_metric.png", "linreg_alpha_sweep.png"):
        assert (tmp_path / name).stat().st_size > 0
