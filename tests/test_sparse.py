"""Sparsifiers: exact target sparsity from exported weights, zeros that stay zero through HAM/momentum/decay,
Ac/Dc phases and momentum resets, RiGL drop/grow, ERK/balanced, Sign-In resets, STR, m*w, bit-exact resume."""

import copy
import math

import pytest
import torch
from torch import nn

from ham.optim.factory import build_optimizer
from ham.sparse import masks as M
from ham.sparse import reparam
from ham.sparse.acdc import acdc_phase_epochs
from ham.sparse.base import TrainSchedule
from ham.sparse.distributions import exact_counts, layer_densities
from ham.sparse.registry import build_sparsifier
from ham.sparse.rigl import drop_fraction_at

OPT = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
HAM_ON = {"alpha": 200.0, "beta": 1e-3}
EPOCHS, STEPS_PER_EPOCH = 20, 4


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


class Run:
    """A tiny training loop calling the hooks in the trainer's order."""

    def __init__(self, name, seed=0, ham=HAM_ON, **opts):
        self.model = tiny_model(seed)
        self.sp = build_sparsifier(name, **opts)
        self.sp.setup(self.model, TrainSchedule(EPOCHS, STEPS_PER_EPOCH))
        self.opt = build_optimizer(self.model, OPT, ham, overrides=self.sp.param_group_overrides())
        self.sp.attach_optimizer(self.opt)
        self.data = batches(STEPS_PER_EPOCH)
        self.step, self.epoch = 0, 0
        self.skipped = []

    def train_epochs(self, n, check=None):
        for _ in range(n):
            self.sp.on_epoch_start(self.epoch)
            for x, y in self.data:
                nn.functional.cross_entropy(self.model(x), y).backward()
                if self.sp.before_step(self.step):
                    self.opt.step()
                else:
                    self.skipped.append(self.step)
                self.sp.after_step(self.step)
                self.opt.zero_grad(set_to_none=True)
                if check:
                    check(self)
                self.step += 1
            self.epoch += 1
        return self

    def state(self):
        return copy.deepcopy({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                              "sp": self.sp.state_dict(), "step": self.step, "epoch": self.epoch})

    def load(self, st):
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sp.load_state_dict(st["sp"])
        self.step, self.epoch = st["step"], st["epoch"]


def exported_sparsity(run):
    sd = run.sp.export_state_dict(run.model)
    layers = [n for n, _ in M.prunable_layers(tiny_model())]
    return M.sparsity_report(sd, layers)["global"], sd


def n_prunable():
    return sum(m.weight.numel() for _, m in M.prunable_layers(tiny_model()))


def masked_entries_stay_zero(run):
    for n, mask in run.sp.masks.items():
        w = M.weight_of(run.sp.layers[n])
        assert torch.all(w[~mask] == 0), n
        for v in run.opt.state.get(w, {}).values():
            if isinstance(v, torch.Tensor) and v.shape == w.shape:
                assert torch.all(v[~mask] == 0), f"optimizer state of pruned entries in {n}"


@pytest.mark.parametrize("name,opts", [("random", {}), ("rigl", {"delta_t": 3}), ("acdc", {}),
                                       ("signin", {"mask_source": "random", "period": 3}),
                                       ("signin", {"mask_source": "rigl", "delta_t": 3, "period": 4}),
                                       ("str", {"exact_target": True})])
def test_ends_at_exact_target_sparsity(name, opts):
    run = Run(name, sparsity=0.9, **opts)
    run.sp.REAPPLY_EVERY = 10**9  # no safety net: zeros must survive HAM, momentum and decay by themselves
    check = masked_entries_stay_zero if name in ("random", "rigl", "acdc") else None
    run.train_epochs(EPOCHS, check=lambda r: check(r) if check and r.sp.masks else None)
    if hasattr(run.sp, "on_train_end"):
        run.sp.on_train_end()
    s, sd = exported_sparsity(run)
    assert s == pytest.approx(0.9, abs=0.5 / n_prunable())
    assert int(round(0.1 * n_prunable())) == sum(int((sd[n + ".weight"] != 0).sum())
                                                 for n, _ in M.prunable_layers(tiny_model()))
    assert not any("parametrizations" in k for k in sd)


def test_acdc_phase_epochs_reference_schedule():
    c, d = acdc_phase_epochs(100)
    assert c == [10, 20, 30, 40, 50, 60, 70, 85] and d == [15, 25, 35, 45, 55, 65, 75]
    c2, d2 = acdc_phase_epochs(200)
    assert c2 == [2 * e for e in c] and d2 == [2 * e for e in d]
    c3, d3 = acdc_phase_epochs(150)
    assert c3[0] == 15 and d3[-1] == 113 and c3[-1] == 128 and len(c3) == 8 and len(d3) == 7


def test_acdc_phases_and_momentum_resets():
    run = Run("acdc", sparsity=0.9)
    c, d = run.sp.compress_epochs, run.sp.decompress_epochs
    assert (c, d) == acdc_phase_epochs(EPOCHS)
    seen = {}

    def check(r):
        seen.setdefault(r.epoch, (r.sp.compressed, r.sp.current_sparsity() if r.sp.masks else 0.0))

    momenta = {}
    orig = run.sp.on_epoch_start

    def spy(epoch):
        orig(epoch)
        if epoch in d:  # right after a decompression every momentum buffer is zero
            momenta[epoch] = max(float(v.abs().max()) for st in run.opt.state.values()
                                 for v in st.values() if isinstance(v, torch.Tensor) and v.ndim >= 2)

    run.sp.on_epoch_start = spy
    run.train_epochs(EPOCHS, check=check)
    for e in range(EPOCHS):
        in_compressed = any(ce <= e and not any(ce < de <= e for de in d) for ce in c)
        assert seen[e][0] == in_compressed, e
        if in_compressed:
            assert seen[e][1] == pytest.approx(0.9, abs=1e-3)
    assert set(momenta) == set(d) and all(v == 0.0 for v in momenta.values())
    assert [e for e, k in run.sp.events if k == "decompress"] == d


def test_rigl_schedule_counts_and_skips():
    run = Run("rigl", sparsity=0.9, delta_t=3, drop_fraction=0.3)
    before = {}

    def check(r):
        before[r.step] = {n: m.clone() for n, m in r.sp.masks.items()}

    run.train_epochs(EPOCHS, check=check)
    t_end = int(0.75 * EPOCHS * STEPS_PER_EPOCH)
    update_steps = [u["step"] for u in run.sp.updates]
    assert update_steps == [s for s in range(1, EPOCHS * STEPS_PER_EPOCH) if s % 3 == 0 and s < t_end]
    assert run.skipped == update_steps  # optimizer skipped exactly on mask-update steps
    for u in run.sp.updates:
        a_t = 0.3 / 2 * (1 + math.cos(math.pi * u["step"] / t_end))
        assert u["drop_fraction"] == pytest.approx(a_t)
        assert drop_fraction_at(u["step"], drop_fraction=0.3, t_end=t_end) == pytest.approx(a_t)
        for n, rec in u["layers"].items():
            assert rec["dropped"] == rec["grown"] <= math.floor(a_t * rec["active"])
    assert any(rec["grown"] > 0 for u in run.sp.updates for rec in u["layers"].values())


def test_rigl_grown_weights_start_at_zero_with_zero_momentum():
    run = Run("rigl", sparsity=0.9, delta_t=3)
    run.train_epochs(1)  # steps 0..3: step 3 is an update
    old = {n: m.clone() for n, m in run.sp.masks.items()}
    x, y = run.data[0]
    nn.functional.cross_entropy(run.model(x), y).backward()
    assert run.sp.before_step(6) is False  # an update step
    for n, new in run.sp.masks.items():
        grown = new & ~old[n]
        w = M.weight_of(run.sp.layers[n])
        assert torch.all(w[grown] == 0)
        buf = run.opt.state[w]["momentum_buffer"]
        assert torch.all(buf[grown] == 0)


def test_erk_and_balanced_distributions():
    shapes = {n: tuple(m.weight.shape) for n, m in M.prunable_layers(tiny_model())}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    for dist in ("erk", "uniform", "balanced"):
        dens = layer_densities(shapes, 0.9, dist)
        counts = exact_counts(sizes, dens, 0.9)
        assert sum(counts.values()) == round(0.1 * sum(sizes.values()))
        assert all(0 <= counts[n] <= sizes[n] for n in sizes)
    erk = layer_densities(shapes, 0.9, "erk")
    assert erk["0"] > erk["6"]  # small first conv keeps more (ERK favours layers with few params)
    bal = exact_counts(sizes, layer_densities(shapes, 0.9, "balanced"), 0.9)
    free = [n for n in sizes if bal[n] < sizes[n]]
    assert max(bal[n] for n in free) - min(bal[n] for n in free) <= 1


def test_signin_reset_keeps_theta_and_sets_gamma_one():
    run = Run("signin", sparsity=0.9, mask_source="random", period=2)
    run.train_epochs(2)  # epochs 0, 1: no reset yet
    mod = next(iter(run.sp.layers.values()))
    m, w = reparam.factors(mod)
    assert not torch.allclose(m * m - w * w, torch.ones_like(m))  # training moved gamma away from 1
    theta = (m * w).detach().clone()
    run.sp.on_epoch_start(2)  # a reset epoch
    m, w = reparam.factors(mod)
    torch.testing.assert_close((m * w).detach(), theta)
    torch.testing.assert_close((m * m - w * w).detach(), torch.ones_like(m))
    assert run.sp.resets == [2]
    assert all(torch.all(v == 0) for p in (m, w) for v in run.opt.state[p].values())


def test_signin_reset_formula():
    theta = torch.tensor([-3.0, -0.1, 0.0, 0.5, 2.0], dtype=torch.float64)
    m, w = reparam.balanced_factors(theta)
    torch.testing.assert_close(m * w, theta)
    torch.testing.assert_close(m * m - w * w, torch.ones_like(theta))


def test_str_thresholds_not_touched_by_ham():
    run = Run("str", sparsity=0.9, s_init=-3.0)
    s_params = run.sp.thresholds()
    groups = [g for g in run.opt.param_groups if any(p is s_params[0] for p in g["params"])]
    assert len(groups) == 1 and groups[0]["ham"] is False
    assert not any(p is s for p in run.opt.managed_params() for s in s_params)
    # one step: s moves exactly as plain SGD (momentum 0 at the first step) would move it
    x, y = run.data[0]
    nn.functional.cross_entropy(run.model(x), y).backward()
    before = [s.detach().clone() for s in s_params]
    grads = [s.grad.clone() for s in s_params]
    run.opt.step()
    wd = groups[0]["weight_decay"]
    for s, b, g in zip(s_params, before, grads):
        torch.testing.assert_close(s.detach(), b - OPT["lr"] * (g + wd * b))


def test_str_reports_its_own_sparsity():
    run = Run("str", sparsity=0.9, s_init=-3.0).train_epochs(3)
    run.sp.on_train_end()
    assert 0.0 <= run.sp.report()["str_sparsity_before_projection"] < 0.9


def test_mw_export_and_product_weight_decay_gradient():
    run = Run("mw", ham={"alpha": 0.0, "beta": 0.0}, product_weight_decay=0.01)
    mod = run.model[0]
    m, w = reparam.factors(mod)
    sd = run.sp.export_state_dict(run.model)
    torch.testing.assert_close(sd["0.weight"], (m * w).detach())
    assert set(sd) == set(tiny_model().state_dict())
    m.grad, w.grad = None, None
    reparam.add_product_weight_decay_grad_(mod, 0.01)
    mm, ww = m.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (0.005 * ((mm * ww) ** 2).sum()).backward()
    torch.testing.assert_close(m.grad, mm.grad)
    torch.testing.assert_close(w.grad, ww.grad)
    assert all(g["weight_decay"] == 0.0 for g in run.opt.param_groups if any(p is m for p in g["params"]))


@pytest.mark.parametrize("name,opts,stop_epoch", [("acdc", {}, 3), ("rigl", {"delta_t": 3}, 5),
                                                  ("signin", {"mask_source": "rigl", "delta_t": 3, "period": 2}, 5)])
def test_resume_mid_run_is_bit_exact(name, opts, stop_epoch):
    full = Run(name, sparsity=0.9, **opts).train_epochs(EPOCHS // 2)
    part = Run(name, sparsity=0.9, **opts).train_epochs(stop_epoch)
    if name == "acdc":
        assert part.sp.compressed  # resuming inside a compressed phase
    st = part.state()
    resumed = Run(name, seed=99, sparsity=0.9, **opts)
    resumed.load(st)
    resumed.train_epochs(EPOCHS // 2 - stop_epoch)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
