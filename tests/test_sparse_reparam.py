"""The reparameterizing sparsifiers (STR, Sign-In, m*w) in a tiny loop that calls the hooks in the trainer's order,
with ham.HAM around torch SGD (momentum 0.9): exact targets from the exported weights, HAM never touching a
sparsifier's own parameters, Sign-In resets, the m*w product decay, and bit-exact resume."""


import pytest
import torch
from tiny_loop import TinyLoop
from torch import nn

from ham import HAM
from ham.optim.factory import build_param_groups
from ham.sparse import masks as M
from ham.sparse import reparam
from ham.sparse.base import TrainSchedule
from ham.sparse.registry import build_sparsifier

LR, WD, MOMENTUM = 0.05, 1e-3, 0.9
EPOCHS, SPE = 8, 3  # epochs, steps per epoch


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))


PRUNABLE = [n for n, _ in M.prunable_layers(tiny_model())]
N_PRUNABLE = sum(m.weight.numel() for _, m in M.prunable_layers(tiny_model()))


class Loop(TinyLoop):
    """setup -> param groups (+ overrides) -> HAM(SGD) -> attach; per epoch on_epoch_start; per step the trainer's
    own step (ham.train.step.TrainStep: backward, then the hook order of ham.sparse.base.sparse_update)."""

    steps_per_epoch = SPE

    def __init__(self, name, *, seed=0, alpha=200.0, beta=1e-3, **opts):
        self.model = tiny_model(seed)
        self.sp = build_sparsifier(name, **opts)
        self.sp.setup(self.model, TrainSchedule(EPOCHS, SPE))
        groups = build_param_groups(self.model, weight_decay=WD, overrides=self.sp.param_group_overrides())
        self.opt = HAM(torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM, weight_decay=WD), alpha=alpha, beta=beta)
        self.sp.attach_optimizer(self.opt)
        g = torch.Generator().manual_seed(1)
        self.data = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
                     for _ in range(SPE)]
        self.start()

    def batch(self, step):
        return self.data[step % SPE]


def nonzeros(sd):
    return sum(int((sd[n + ".weight"] != 0).sum()) for n in PRUNABLE)


def effective(loop):
    return {n: loop.model.get_submodule(n).weight.detach().clone() for n in PRUNABLE}


# ------------------------------------------------------------------ STR
def test_str_exact_target_from_exported_weights_and_own_sparsity_reported():
    loop = Loop("str", sparsity=0.9, s_init=-3.0, mode="reference", exact_target=True).run(EPOCHS * SPE)
    eff = effective(loop)
    own = sum(int((w == 0).sum()) for w in eff.values()) / N_PRUNABLE
    assert 0 < own < 0.9  # STR pruned something by itself, not the target
    loop.sp.on_train_end()
    sd = loop.sp.export_state_dict(loop.model)
    assert set(sd) == set(tiny_model().state_dict())  # original keys, parametrizations folded
    assert nonzeros(sd) == round(0.1 * N_PRUNABLE)
    assert M.sparsity_report(sd, PRUNABLE)["global"] == pytest.approx(0.9, abs=0.5 / N_PRUNABLE)
    rep = loop.sp.report()
    assert rep["str_sparsity_before_projection"] == own and rep["projected"]
    # kept weights keep their effective value; only the smallest ones were zeroed
    for n in PRUNABLE:
        kept = sd[n + ".weight"] != 0
        torch.testing.assert_close(sd[n + ".weight"][kept], eff[n][kept], rtol=0, atol=0)
    kept_abs = torch.cat([sd[n + ".weight"][sd[n + ".weight"] != 0].abs() for n in PRUNABLE])
    dropped_abs = torch.cat([eff[n][sd[n + ".weight"] == 0].abs() for n in PRUNABLE])
    assert dropped_abs.max() <= kept_abs.min()  # one global magnitude order
    # a second call (a resumed, finished run) changes nothing and keeps STR's own number
    loop.sp.on_train_end()
    assert loop.sp.report()["str_sparsity_before_projection"] == own
    assert nonzeros(loop.sp.export_state_dict(loop.model)) == round(0.1 * N_PRUNABLE)


def test_str_over_pruned_brings_back_largest_dense_weights():
    loop = Loop("str", sparsity=0.5, s_init=-1.0, exact_target=True).run(SPE)  # sigmoid(-1) = 0.27: almost everything pruned
    raw = {n: M.weight_of(loop.model.get_submodule(n)).detach().clone() for n in PRUNABLE}
    before = effective(loop)
    loop.sp.on_train_end()
    assert loop.sp.report()["str_sparsity_before_projection"] > 0.5
    sd = loop.sp.export_state_dict(loop.model)
    assert nonzeros(sd) == round(0.5 * N_PRUNABLE)
    for n in PRUNABLE:
        back = (before[n] == 0) & (sd[n + ".weight"] != 0)
        torch.testing.assert_close(sd[n + ".weight"][back], raw[n][back])  # the dense value W
    scores = torch.cat([raw[n][before[n] == 0].abs() for n in PRUNABLE])
    back_scores = torch.cat([raw[n][(before[n] == 0) & (sd[n + ".weight"] != 0)].abs() for n in PRUNABLE])
    assert back_scores.min() >= scores.sort(descending=True).values[back_scores.numel() - 1]


def test_str_without_exact_target_keeps_its_own_sparsity():
    loop = Loop("str", sparsity=0.9, s_init=-3.0, exact_target=False).run(EPOCHS * SPE)
    before = effective(loop)
    loop.sp.on_train_end()
    after = effective(loop)
    assert all(torch.equal(before[n], after[n]) for n in PRUNABLE)
    sd = loop.sp.export_state_dict(loop.model)
    assert 1 - nonzeros(sd) / N_PRUNABLE == pytest.approx(loop.sp.report()["str_sparsity_before_projection"])


def test_ham_leaves_str_thresholds_to_the_base_optimizer():
    with_ham = Loop("str", sparsity=0.9, s_init=-3.0, alpha=200.0, beta=1e-3)
    plain = Loop("str", sparsity=0.9, s_init=-3.0, alpha=0.0, beta=0.0)
    s_ham, s_plain = with_ham.sp.thresholds(), plain.sp.thresholds()
    assert len(s_ham) == len(PRUNABLE) and all(s.shape == (1, 1) for s in s_ham)
    managed = {id(p) for p in with_ham.opt.managed_params()}
    assert not any(id(s) in managed for s in s_ham)
    group = next(g for g in with_ham.opt.param_groups if any(p is s_ham[0] for p in g["params"]))
    assert group["ham"] is False and group["weight_decay"] == WD  # the reference: global weight decay on s
    s0 = [s.detach().clone() for s in s_ham]
    with_ham.run(1)
    plain.run(1)
    w_ham, w_plain = M.weight_of(with_ham.model[0]), M.weight_of(plain.model[0])
    assert not torch.equal(w_ham, w_plain)  # HAM did act on the weights
    for a, b, s in zip(s_ham, s_plain, s0):
        assert not torch.equal(a, s)  # s moved (base optimizer) ...
        assert torch.equal(a, b)  # ... exactly as without HAM


def test_str_threshold_weight_decay_option():
    loop = Loop("str", sparsity=0.9, threshold_weight_decay=0.0)
    s = loop.sp.thresholds()[0]
    group = next(g for g in loop.opt.param_groups if any(p is s for p in g["params"]))
    assert group["weight_decay"] == 0.0 and group["ham"] is False
    with pytest.raises(ValueError):
        build_sparsifier("str", sparsity=0.9, threshold_weight_decay=-1.0)


# ------------------------------------------------------------------ Sign-In
def test_balanced_factors_formula():
    theta = torch.tensor([-30.0, -3.0, -0.1, -1e-6, 0.0, 1e-6, 0.5, 2.0, 100.0], dtype=torch.float64)
    for gamma in (1.0, 0.3, 0.0):
        m, w = reparam.balanced_factors(theta, gamma)
        torch.testing.assert_close(m * w, theta)
        torch.testing.assert_close(m * m - w * w, torch.full_like(theta, gamma), atol=1e-9, rtol=1e-9)
        assert torch.all(m >= 0) and torch.all(torch.sign(w) == torch.sign(theta))
    m, w = reparam.balanced_factors(theta, 0.0)  # m = sqrt|x|, w = sign(x) sqrt|x|
    torch.testing.assert_close(m, theta.abs().sqrt())


def masked_theta_is_zero(loop):
    for n, mask in loop.sp.source.masks.items():
        theta = loop.model.get_submodule(n).weight
        assert torch.all(theta[~mask] == 0), n


def test_signin_reset_keeps_theta_and_sets_gamma_to_one():
    loop = Loop("signin", sparsity=0.9, mask_source="random", period=2).run(2 * SPE)  # epochs 0, 1
    mods = list(loop.sp.layers.values())
    gammas = [(m * m - w * w).detach() for m, w in map(reparam.factors, mods)]
    assert not all(torch.allclose(g, torch.ones_like(g)) for g in gammas)  # training moved gamma
    theta = [mod.weight.detach().clone() for mod in mods]
    assert all(torch.count_nonzero(st["momentum_buffer"]) > 0 for p in loop.sp.factors()
               for st in [loop.opt.state[p]])
    loop.sp.on_epoch_start(2)  # a reset epoch
    assert loop.sp.resets == [2]
    for mod, t in zip(mods, theta):
        m, w = reparam.factors(mod)
        torch.testing.assert_close(mod.weight.detach(), t)
        torch.testing.assert_close((m * m - w * w).detach(), torch.ones_like(m))
        assert torch.equal(mod.weight.detach() == 0, t == 0)  # zeros stay exactly zero
    for p in loop.sp.factors():  # momentum reset (it lived in the old coordinates)
        assert torch.count_nonzero(loop.opt.state[p]["momentum_buffer"]) == 0
    masked_theta_is_zero(loop)


def test_signin_parameters_keep_identity_through_resets():
    loop = Loop("signin", sparsity=0.9, period=1)
    ids = [id(p) for p in loop.sp.factors()]
    ptrs = [p.data_ptr() for p in loop.sp.factors()]
    loop.run(3 * SPE)
    assert loop.sp.resets == [1, 2]
    assert [id(p) for p in loop.sp.factors()] == ids and [p.data_ptr() for p in loop.sp.factors()] == ptrs


@pytest.mark.parametrize("source,opts", [("random", {}), ("acdc", {"compress_epochs": [2, 6],
                                                                    "decompress_epochs": [4]}),
                                         ("rigl", {"delta_t": 2})])
def test_signin_over_mask_sources_exact_target_and_masked_entries_zero(source, opts):
    loop = Loop("signin", sparsity=0.9, mask_source=source, period=3, **opts)
    loop.sp.source.REAPPLY_EVERY = 10**9  # no safety net: zeros must stay zero on their own

    loop.run(EPOCHS * SPE, check=lambda lp: masked_theta_is_zero(lp) if lp.sp.source.masks else None)
    assert loop.sp.resets == [3, 6]
    assert loop.sp.source.masks  # ends compressed / masked
    sd = loop.sp.export_state_dict(loop.model)
    assert set(sd) == set(tiny_model().state_dict())
    assert nonzeros(sd) == round(0.1 * N_PRUNABLE)
    for n, mask in loop.sp.source.masks.items():
        assert torch.equal(sd[n + ".weight"] != 0, mask.cpu())
    if source == "rigl":
        assert loop.sp.source.updates and any(r["grown"] for u in loop.sp.source.updates
                                              for r in u["layers"].values())


def test_signin_mask_change_rebalances_zero_entries():
    loop = Loop("signin", sparsity=0.9, mask_source="acdc", period=100, compress_epochs=[1, 3],
                decompress_epochs=[2]).run(3 * SPE)  # compressed, decompressed, trained on
    assert not loop.sp.source.masks
    loop.sp.on_epoch_start(3)  # compression: theta = 0 entries get the balanced state of 0 (m = 1)
    assert loop.sp.source.masks
    for n, mask in loop.sp.source.masks.items():
        m, w = reparam.factors(loop.model.get_submodule(n))
        assert torch.all(w[~mask] == 0) and torch.all(m[~mask] == 1.0)
        assert torch.all(loop.opt.state[m]["momentum_buffer"][~mask] == 0)
        assert not torch.all(m[mask] == 1.0)  # the kept entries keep their trained m


def test_signin_product_weight_decay_form():
    loop = Loop("signin", sparsity=0.9, weight_decay_form="product", product_weight_decay=0.01)
    for p in loop.sp.factors():
        group = next(g for g in loop.opt.param_groups if any(q is p for q in g["params"]))
        assert group["weight_decay"] == 0.0
    loop.run(SPE)
    masked_theta_is_zero(loop)


def test_signin_bad_options_are_value_errors():
    for bad in ({"mask_source": "snip"}, {"weight_decay_form": "l1"}, {"period": 0}):
        with pytest.raises(ValueError):
            build_sparsifier("signin", sparsity=0.9, **bad)


# ------------------------------------------------------------------ m*w
def test_mw_exports_effective_weights_under_original_keys():
    loop = Loop("mw", alpha=0.0, beta=0.0).run(SPE)
    sd = loop.sp.export_state_dict(loop.model)
    assert set(sd) == set(tiny_model().state_dict())
    for n in PRUNABLE:
        m, w = reparam.factors(loop.model.get_submodule(n))
        assert torch.equal(sd[n + ".weight"], (m * w).detach())
    fresh = tiny_model()
    fresh.load_state_dict(sd)  # loads into the plain architecture
    x = loop.data[0][0]
    loop.model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), loop.model(x).detach())


def test_mw_initialisation_keeps_the_function():
    plain = tiny_model()
    sp = build_sparsifier("mw")
    model = tiny_model()
    sp.setup(model, TrainSchedule(1, 1))
    for n in PRUNABLE:
        m, w = reparam.factors(model.get_submodule(n))
        torch.testing.assert_close((m * w).detach(), plain.get_submodule(n).weight.detach())
        torch.testing.assert_close((m * m - w * w).detach(), torch.ones_like(m))


def test_mw_product_weight_decay_gradient_matches_autograd():
    wd = 0.01
    loop = Loop("mw", alpha=0.0, beta=0.0, product_weight_decay=wd).run(SPE)  # a trained, unbalanced pair
    pairs = [reparam.factors(loop.model.get_submodule(n)) for n in PRUNABLE]
    for m, w in pairs:
        m.grad, w.grad = torch.zeros_like(m), torch.zeros_like(w)
    loop.sp.before_step(loop.step)
    for m, w in pairs:
        mm, ww = m.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        (wd / 2 * ((mm * ww) ** 2).sum()).backward()
        torch.testing.assert_close(m.grad, mm.grad)
        torch.testing.assert_close(w.grad, ww.grad)
    # m and w have no plain weight decay; HAM never steps m
    managed = {id(p) for p in loop.opt.managed_params()}
    for m, w in pairs:
        for p in (m, w):
            group = next(g for g in loop.opt.param_groups if any(q is p for q in g["params"]))
            assert group["weight_decay"] == 0.0
        assert id(m) not in managed


def test_mw_rejects_sparsity():
    with pytest.raises(ValueError):
        build_sparsifier("mw", sparsity=0.5)


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("name,opts", [
    ("str", {"sparsity": 0.9, "s_init": -3.0}),
    ("signin", {"sparsity": 0.9, "mask_source": "random", "period": 2}),
    ("signin", {"sparsity": 0.9, "mask_source": "rigl", "delta_t": 2, "period": 3}),
    ("signin", {"sparsity": 0.9, "mask_source": "acdc", "compress_epochs": [2, 6], "decompress_epochs": [4],
                "period": 3}),
    ("mw", {"alpha": 0.0, "beta": 0.0}),  # the Fig. 2a baseline runs without HAM
])
@pytest.mark.parametrize("stop", [3 * SPE, 3 * SPE + 1])  # at an epoch boundary and mid-epoch
def test_state_dict_round_trip_continues_bit_exactly(name, opts, stop):
    total = EPOCHS * SPE
    full = Loop(name, **opts).run(total)
    part = Loop(name, **opts).run(stop)
    blob = part.checkpoint()
    resumed = Loop(name, seed=99, **opts).restore(blob).run(total - stop)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert full.sp.state_dict().keys() == resumed.sp.state_dict().keys()
    if name == "str":
        full.sp.on_train_end()
        resumed.sp.on_train_end()
    if hasattr(full.sp, "report"):
        assert full.sp.report() == resumed.sp.report()
    a, b = full.sp.export_state_dict(full.model), resumed.sp.export_state_dict(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
