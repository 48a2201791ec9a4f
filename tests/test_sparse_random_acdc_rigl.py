"""random (PaI), Ac/Dc and RiGL driven by a tiny loop that calls the hooks in the trainer's order, with
ham.HAM(SGD(momentum=0.9, weight_decay>0)): exact final sparsity, zeros that survive every step, Ac/Dc phases and
momentum resets, RiGL drop/grow counts, cosine schedule, zero-initialised regrowth and skipped updates, and a
bit-exact resume from a state_dict."""

import math

import pytest
import torch
from tiny_loop import TinyLoop
from torch import nn

import ham
from ham.sparse import masks as M
from ham.sparse.base import TrainSchedule
from ham.sparse.distributions import exact_counts, layer_densities
from ham.sparse.registry import build_sparsifier
from ham.sparse.schedules import acdc_phase_epochs, drop_fraction_at

EPOCHS, SPE = 20, 4  # 80 steps
WEIGHT_DECAY = 5e-3


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))


def batch(step):
    g = torch.Generator().manual_seed(1000 + step % SPE)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


class Loop(TinyLoop):
    """The trainer's order: setup -> optimizer -> attach -> per epoch on_epoch_start -> per step the trainer's
    own step (ham.train.step.TrainStep: backward, then the hook order of ham.sparse.base.sparse_update)."""

    steps_per_epoch = SPE

    def __init__(self, name, *, init_seed=0, epochs=EPOCHS, alpha=200.0, beta=1e-3, **opts):
        self.model = tiny_model(init_seed)
        self.sp = build_sparsifier(name, **opts)
        self.sp.setup(self.model, TrainSchedule(epochs, SPE))
        assert self.sp.param_group_overrides() == []
        base = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=WEIGHT_DECAY)
        self.opt = ham.HAM(base, alpha=alpha, beta=beta)
        self.sp.attach_optimizer(self.opt)
        self.start()

    def batch(self, step):
        return batch(step)


def layer_weights(loop):
    return {n: M.weight_of(m) for n, m in M.prunable_layers(loop.model)}


def assert_pruned_entries_zero(loop):
    """Pruned weights and every shaped optimizer state of them are exactly zero."""
    weights = layer_weights(loop)
    for n, mask in loop.sp.masks.items():
        w = weights[n]
        assert torch.all(w[~mask] == 0), n
        for key, v in loop.opt.state.get(w, {}).items():
            if torch.is_tensor(v) and v.shape == w.shape:
                assert torch.all(v[~mask] == 0), (n, key)


N_PRUNABLE = sum(m.weight.numel() for _, m in M.prunable_layers(tiny_model()))


@pytest.mark.parametrize("name,opts", [("random", {"distribution": "erk"}), ("random", {"distribution": "balanced"}),
                                       ("acdc", {}), ("rigl", {"delta_t": 3})])
def test_ends_at_exact_target_and_pruned_weights_stay_zero(name, opts):
    loop = Loop(name, sparsity=0.9, **opts)
    loop.sp.REAPPLY_EVERY = 10**9  # no safety net: zeros must survive HAM, momentum and weight decay alone
    loop.run_to(EPOCHS * SPE, each_step=assert_pruned_entries_zero)
    sd = M.effective_state_dict(loop.model)
    nonzero = sum(int((sd[n + ".weight"] != 0).sum()) for n, _ in M.prunable_layers(loop.model))
    assert nonzero == round(0.1 * N_PRUNABLE)  # exact count, from the exported effective weights
    assert M.sparsity_report(sd, ["0", "3", "6"])["global"] == pytest.approx(0.9, abs=0.5 / N_PRUNABLE)
    assert sd["0.bias"].ne(0).all() and sd["1.weight"].ne(0).all()  # biases and BN are never pruned


def test_random_masks_fixed_seeded_and_distributed_as_asked():
    a, b = Loop("random", sparsity=0.9, init_seed=1), Loop("random", sparsity=0.9, init_seed=2)
    assert all(torch.equal(a.sp.masks[n], b.sp.masks[n]) for n in a.sp.masks)  # mask seed, not init seed
    c = Loop("random", sparsity=0.9, init_seed=1, seed=7)
    assert any(not torch.equal(a.sp.masks[n], c.sp.masks[n]) for n in a.sp.masks)
    first = {n: m.clone() for n, m in a.sp.masks.items()}
    a.run_to(3 * SPE)
    assert all(torch.equal(first[n], a.sp.masks[n]) for n in first)  # fixed during training
    shapes = {n: tuple(m.shape) for n, m in first.items()}
    sizes = {n: m.numel() for n, m in first.items()}
    want = exact_counts(sizes, layer_densities(shapes, 0.9, "erk"), 0.9)
    assert {n: int(m.sum()) for n, m in first.items()} == want


# ------------------------------------------------------------------ Ac/Dc
def test_acdc_reference_schedule_and_its_scaling():
    c, d = acdc_phase_epochs(100)
    assert c == [10, 20, 30, 40, 50, 60, 70, 85]
    assert d == [15, 25, 35, 45, 55, 65, 75]
    c2, d2 = acdc_phase_epochs(200)
    assert (c2, d2) == ([2 * e for e in c], [2 * e for e in d])
    # 150 epochs: each boundary is floor(fraction * 150 + 0.5)
    c3, d3 = acdc_phase_epochs(150)
    assert c3 == [math.floor(f * 150 + 0.5) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85)]
    assert d3 == [math.floor(f * 150 + 0.5) for f in (0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75)]
    assert c3 == [15, 30, 45, 60, 75, 90, 105, 128] and d3 == [23, 38, 53, 68, 83, 98, 113]


def momentum_norms(loop):
    """{param name: |momentum_buffer|_max} for every parameter with a buffer (weights, biases, BN)."""
    out = {}
    for pn, p in loop.model.named_parameters():
        buf = loop.opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[pn] = float(buf.abs().max())
    return out


@pytest.mark.parametrize("reset", ["all", "pruned_layers"])
def test_acdc_phases_global_masks_and_momentum_resets(reset):
    loop = Loop("acdc", sparsity=0.9, reset_momentum=reset)
    c, d = loop.sp.compress_epochs, loop.sp.decompress_epochs
    assert (c, d) == acdc_phase_epochs(EPOCHS)
    after_start, before_start = {}, {}
    hook = loop.sp.on_epoch_start

    def spy(epoch):
        before_start[epoch] = {n: w.detach().clone() for n, w in layer_weights(loop).items()}
        hook(epoch)
        after_start[epoch] = (loop.sp.compressed, momentum_norms(loop),
                              {n: m.clone() for n, m in loop.sp.masks.items()})

    loop.sp.on_epoch_start = spy
    loop.run_to(EPOCHS * SPE)
    for e in range(EPOCHS):
        compressed, moms, masks = after_start[e]
        assert compressed == (loop.sp.phase_at(e) == "compressed"), e
        if e in c:  # a global magnitude threshold over all layers, hit exactly
            w = before_start[e]
            assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * N_PRUNABLE)
            kept_min = min(float(w[n][masks[n]].abs().min()) for n in w if masks[n].any())
            pruned_max = max(float(w[n][~masks[n]].abs().max()) for n in w)
            assert kept_min >= pruned_max
        if e in d:
            assert not masks  # all ones again
            weights = before_start[e]
            assert any(bool((weights[n] == 0).any()) for n in weights)  # pruned weights restart from zero
            prunable = {n + ".weight" for n in weights}
            assert all(v == 0 for k, v in moms.items() if k in prunable)
            others = [v for k, v in moms.items() if k not in prunable]
            assert others and all((v == 0) == (reset == "all") for v in others)
        elif e > 0:
            assert any(v > 0 for v in moms.values())  # no reset at other phase changes
    assert [e for e, k in loop.sp.events if k == "decompress"] == d
    assert [e for e, k in loop.sp.events if k == "compress"] == c
    assert loop.sp.compressed  # ends in the final compressed phase


def test_acdc_explicit_epoch_lists_override_fractions():
    loop = Loop("acdc", epochs=8, sparsity=0.5, compress_epochs=[1, 5], decompress_epochs=[3])
    loop.run_to(8 * SPE)
    assert loop.sp.events == [(1, "compress"), (3, "decompress"), (5, "compress")]
    assert [loop.sp.phase_at(e) for e in range(8)] == ["dense", "compressed", "compressed", "dense", "dense",
                                                      "compressed", "compressed", "compressed"]


def test_acdc_on_epoch_start_twice_is_a_noop():
    loop = Loop("acdc", sparsity=0.9).run_to(2 * SPE + 1)  # inside epoch 2 (compressed)
    masks = {n: m.clone() for n, m in loop.sp.masks.items()}
    loop.sp.on_epoch_start(2)
    assert loop.sp.events == [(2, "compress")]
    assert all(torch.equal(masks[n], loop.sp.masks[n]) for n in masks)


# ------------------------------------------------------------------ RiGL
def test_rigl_schedule_counts_and_skipped_updates():
    loop = Loop("rigl", sparsity=0.9, delta_t=3, drop_fraction=0.3)
    masks_before, weights_before, grads = {}, {}, {}
    hook = loop.sp.before_step

    def spy(step):
        masks_before[step] = {n: m.clone() for n, m in loop.sp.masks.items()}
        weights_before[step] = {n: w.detach().clone() for n, w in layer_weights(loop).items()}
        grads[step] = {n: w.grad.clone() for n, w in layer_weights(loop).items()}
        return hook(step)

    loop.sp.before_step = spy
    loop.run_to(EPOCHS * SPE)
    t_end = int(0.75 * EPOCHS * SPE)
    updates = [u["step"] for u in loop.sp.updates]
    assert updates == list(range(3, t_end, 3))
    assert loop.skipped == updates  # the optimizer is skipped exactly on mask-update steps
    weights_now = {}
    for u in loop.sp.updates:
        s = u["step"]
        a_t = 0.3 / 2 * (1 + math.cos(math.pi * s / t_end))
        assert u["drop_fraction"] == pytest.approx(a_t, abs=1e-12)
        assert drop_fraction_at(s, drop_fraction=0.3, t_end=t_end) == pytest.approx(a_t, abs=1e-12)
        weights_now = weights_before[s + 1]  # the weights right after the update step
        for n, old in masks_before[s].items():
            new = masks_before[s + 1][n]
            w_old, w_new, g = weights_before[s][n], weights_now[n], grads[s][n]
            active = int(old.sum())
            k = math.floor(a_t * active)
            assert u["layers"][n]["n_drop"] == k and int(new.sum()) == active
            kept = old & new
            # the k smallest-magnitude active weights were dropped (some may be regrown at once)
            stay = torch.topk(w_old.abs().flatten() * old.flatten() - (~old.flatten()).float(), active - k).indices
            kept_by_magnitude = torch.zeros(old.numel(), dtype=torch.bool)
            kept_by_magnitude[stay] = True
            kept_by_magnitude = kept_by_magnitude.view_as(old)
            assert torch.equal(kept_by_magnitude & new, kept_by_magnitude)
            # grown (net-new or regrown): the k largest |dense grad| among the not-kept entries
            grown = new & ~kept_by_magnitude
            assert int(grown.sum()) == k
            if k:
                assert float(g[grown].abs().min()) >= float(g[~kept_by_magnitude & ~grown].abs().max())
            assert torch.all(w_new[new & ~old] == 0)  # new connections start at zero
            assert torch.all(w_new[~new] == 0)
            assert torch.equal(w_new[kept], w_old[kept])  # the optimizer did not step
    assert any(rec["grown"] > 0 for u in loop.sp.updates for rec in u["layers"].values())
    # after t_end no mask changes any more
    final = {n: m.clone() for n, m in loop.sp.masks.items()}
    assert all(torch.equal(masks_before[t_end + 1][n], final[n]) for n in final)


def test_rigl_grown_weights_have_zero_momentum():
    loop = Loop("rigl", sparsity=0.9, delta_t=3).run_to(3)  # steps 0-2 build momentum
    old = {n: m.clone() for n, m in loop.sp.masks.items()}
    x, y = batch(3)
    nn.functional.cross_entropy(loop.model(x), y).backward()
    assert loop.sp.before_step(3) is False
    n_grown = 0
    for n, new in loop.sp.masks.items():
        w = layer_weights(loop)[n]
        grown = new & ~old[n]
        n_grown += int(grown.sum())
        assert torch.all(w[grown] == 0)
        assert torch.all(loop.opt.state[w]["momentum_buffer"][grown] == 0)
        assert torch.all(loop.opt.state[w]["momentum_buffer"][~new] == 0)
    assert n_grown > 0


def test_rigl_dropped_weight_can_be_regrown_and_keeps_its_value():
    layer = nn.Linear(4, 1, bias=False)
    sp = build_sparsifier("rigl", sparsity=0.5, delta_t=1, drop_fraction=1.0, distribution="uniform")
    sp.setup(nn.Sequential(layer), TrainSchedule(1, 100))
    with torch.no_grad():
        sp.masks["0"] = torch.tensor([[True, True, False, False]])
        layer.weight.copy_(torch.tensor([[0.1, 2.0, 0.0, 0.0]]))
    layer.weight.grad = torch.tensor([[5.0, 0.0, 1.0, 0.0]])
    a_t = drop_fraction_at(1, drop_fraction=1.0, t_end=sp.t_end)
    assert math.floor(a_t * 2) == 1  # one weight dropped (0.1), one regrown
    sp.update_masks(1)
    # 0.1 is dropped, then regrown (largest |grad|): the reference's reinit_when_same=False keeps its value
    assert sp.masks["0"].tolist() == [[True, True, False, False]]
    assert layer.weight.tolist() == [[pytest.approx(0.1), 2.0, 0.0, 0.0]]
    assert sp.updates[-1]["layers"]["0"] == {"active": 2, "n_drop": 1, "dropped": 0, "grown": 0}


# ------------------------------------------------------------------ bit-exact resume
@pytest.mark.parametrize("name,opts,stop", [("acdc", {}, 4 * SPE + 2),     # mid-epoch, compressed phase
                                            ("rigl", {"delta_t": 3}, 22),   # between updates 21 and 24
                                            ("random", {}, 9)])
def test_resume_from_state_dict_is_bit_exact(name, opts, stop):
    end = 12 * SPE
    full = Loop(name, sparsity=0.9, **opts).run_to(end)
    part = Loop(name, sparsity=0.9, **opts).run_to(stop)
    if name == "acdc":
        assert part.sp.compressed and part.step % SPE != 0
    if name == "rigl":
        assert not part.sp.is_update_step(stop) and part.sp.n_updates == len(range(3, stop, 3))
    blob = part.checkpoint()
    del part
    resumed = Loop(name, init_seed=99, sparsity=0.9, **opts)  # new objects, another init
    resumed.restore(blob)
    resumed.run_to(end)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(torch.equal(full.sp.masks[n], resumed.sp.masks[n]) for n in full.sp.masks)
    assert set(full.sp.masks) == set(resumed.sp.masks)


def test_reports_for_the_summary():
    acdc = Loop("acdc", sparsity=0.9).run_to(4 * SPE)
    rep = acdc.sp.report()
    assert rep["compress_epochs"] == acdc_phase_epochs(EPOCHS)[0] and rep["events"] == [[2, "compress"],
                                                                                         [3, "decompress"]]
    rigl = Loop("rigl", sparsity=0.9, delta_t=3).run_to(10)
    assert rigl.sp.report()["n_updates"] == 3 and rigl.sp.report()["t_end"] == 60
    rnd = Loop("random", sparsity=0.9, distribution="uniform")
    assert all(d == pytest.approx(0.1, abs=0.01) for d in rnd.sp.report()["layer_density"].values())
