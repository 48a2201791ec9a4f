"""Shared sparsity helpers: prunable layers, exact top-k, effective weights, sparsity accounting, masks on weights /
grads / optimizer state, rank-0 broadcast (2-process gloo), layer-density distributions, the registry."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils import parametrize

from ham.sparse import masks as M
from ham.sparse.distributions import exact_counts, layer_densities
from ham.sparse.registry import SPARSIFIER_NAMES, build_sparsifier


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))


class Scale(nn.Module):
    def forward(self, w):
        return 2.0 * w


# ------------------------------------------------------------------ prunable layers
def test_prunable_layers_are_conv_and_linear_only():
    model = tiny_model()
    assert [n for n, _ in M.prunable_layers(model)] == ["0", "3", "6"]
    assert [n for n, _ in M.prunable_layers(model, keep_first_dense=True)] == ["3", "6"]
    assert [n for n, _ in M.prunable_layers(model, keep_last_dense=True)] == ["0", "3"]
    assert [n for n, _ in M.prunable_layers(model, keep_first_dense=True, keep_last_dense=True)] == ["3"]


# ------------------------------------------------------------------ exact top-k
def test_topk_mask_exact_count_and_deterministic_ties():
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0, 2.0, 0.5, 2.0])
    mask = M.topk_mask(scores, 3)
    assert int(mask.sum()) == 3
    # 3.0 is in; two of the four tied 2.0s, the ones with the lowest indices (2 and 3)
    assert mask.tolist() == [False, True, True, True, False, False, False]
    assert M.topk_mask(scores, 0).sum() == 0 and M.topk_mask(scores, 7).all()
    big = torch.randint(0, 5, (40, 30)).float()  # many ties
    for k in (1, 17, 600, 1199):
        m = M.topk_mask(big, k)
        assert int(m.sum()) == k
        assert big[m].min() >= big[~m].max()


def test_global_magnitude_masks_one_threshold_exact_count():
    torch.manual_seed(0)
    weights = {"a": torch.randn(8, 1, 3, 3), "b": torch.randn(16, 8, 3, 3) * 0.1, "c": torch.randn(10, 576)}
    total = sum(w.numel() for w in weights.values())
    masks = M.global_magnitude_masks(weights, 0.9)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.1 * total)
    kept_min = min(float(weights[n][masks[n]].abs().min()) for n in weights if masks[n].any())
    pruned_max = max(float(weights[n][~masks[n]].abs().max()) for n in weights)
    assert kept_min >= pruned_max  # a single global threshold, not per-layer
    # the small-magnitude layer loses more than the target: the threshold is global
    assert 1 - masks["b"].float().mean() > 0.9


# ------------------------------------------------------------------ effective weights and accounting
def test_effective_state_dict_folds_parametrizations_and_applies_masks():
    model = tiny_model()
    parametrize.register_parametrization(model[0], "weight", Scale())
    original = model[0].parametrizations.weight.original.detach().clone()
    mask = torch.rand(original.shape) > 0.5
    sd = M.effective_state_dict(model, masks={"0": mask})
    assert set(sd) == set(tiny_model().state_dict())
    torch.testing.assert_close(sd["0.weight"], 2.0 * original * mask)
    assert sd["0.weight"].device.type == "cpu" and not sd["0.weight"].requires_grad
    assert parametrize.is_parametrized(model[0])  # the model itself is unchanged
    torch.testing.assert_close(model[0].parametrizations.weight.original, original)


def test_sparsity_report_counts_effective_prunable_weights_only():
    model = tiny_model()
    with torch.no_grad():
        model[0].weight[:4] = 0  # 4 of 8 filters -> 36 of 72 zeros
        model[6].weight[:, :288] = 0  # half of the classifier
        model[0].bias.zero_()  # biases and BN never count
        model[1].weight.zero_()
    parametrize.register_parametrization(model[3], "weight", Scale())
    rep = M.sparsity_report(model)
    n = {k: m.weight.numel() for k, m in M.prunable_layers(model)}
    assert rep["layers"] == {"0": 0.5, "3": 0.0, "6": 0.5}
    assert rep["global"] == pytest.approx((n["0"] / 2 + n["6"] / 2) / sum(n.values()))
    rep_sd = M.sparsity_report(M.effective_state_dict(model), ["0", "3", "6"])
    assert rep_sd == rep
    assert M.sparsity_report(model, ["6"])["global"] == 0.5


def test_apply_masks_to_model_and_grads():
    model = tiny_model()
    masks = {n: torch.rand(m.weight.shape) > 0.7 for n, m in M.prunable_layers(model)}
    M.apply_masks_(masks, model)
    for n, m in M.prunable_layers(model):
        assert torch.all(m.weight[~masks[n]] == 0) and torch.all(m.weight[masks[n]] != 0)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    M.mask_grads_(masks, {n: m.weight for n, m in M.prunable_layers(model)})
    for n, m in M.prunable_layers(model):
        assert torch.all(m.weight.grad[~masks[n]] == 0) and m.weight.grad[masks[n]].abs().sum() > 0


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: torch.optim.AdamW(p, lr=0.1)])
def test_mask_optimizer_state_zeroes_every_shaped_state(make):
    w = nn.Parameter(torch.randn(4, 5))
    opt = make([w])
    w.grad = torch.randn(4, 5)
    opt.step()
    mask = torch.rand(4, 5) > 0.5
    M.mask_optimizer_state_(opt, w, mask)
    shaped = [v for v in opt.state[w].values() if torch.is_tensor(v) and v.shape == w.shape]
    assert shaped  # momentum_buffer / exp_avg, exp_avg_sq
    for v in shaped:
        assert torch.all(v[~mask] == 0) and torch.all(v[mask] != 0)
    if "step" in opt.state[w]:
        assert float(opt.state[w]["step"]) == 1.0  # scalars untouched
    assert M.reset_momentum_(opt) == 1
    assert all(torch.all(opt.state[w][k] == 0) for k in M.MOMENTUM_KEYS if k in opt.state[w])
    if "exp_avg_sq" in opt.state[w]:
        assert opt.state[w]["exp_avg_sq"].abs().sum() > 0  # second moments are not momentum


# ------------------------------------------------------------------ broadcast
def test_broadcast_is_a_noop_without_distributed():
    masks = {"a": torch.tensor([True, False])}
    M.broadcast_masks_(masks)
    assert masks["a"].tolist() == [True, False]


def _broadcast_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(rank)  # different masks on each rank
        masks = {"b": torch.rand(3, 4, generator=g) > 0.5, "a": torch.rand(7, generator=g) > 0.5}
        view_owner = torch.zeros(10, dtype=torch.bool)
        masks["v"] = view_owner[2:8].view(2, 3)  # a view must be filled in place too
        M.broadcast_masks_(masks)
        torch.save(masks, os.path.join(out_dir, f"r{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_broadcast_masks_gloo_two_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: no re-import of torch in the children (spawn costs ~20 s on a busy 2-core machine)
    mp.start_processes(_broadcast_worker, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    g = torch.Generator().manual_seed(0)
    want_b, want_a = torch.rand(3, 4, generator=g) > 0.5, torch.rand(7, generator=g) > 0.5
    for r in (r0, r1):
        assert torch.equal(r["a"], want_a) and torch.equal(r["b"], want_b)
        assert r["a"].dtype == torch.bool


# ------------------------------------------------------------------ layer densities
def shapes_of(model, **kw):
    return {n: tuple(m.weight.shape) for n, m in M.prunable_layers(model, **kw)}


RESNETISH = {"stem": (16, 3, 3, 3), "c1": (32, 16, 3, 3), "c2": (64, 32, 3, 3), "c3": (128, 64, 3, 3),
             "fc": (100, 128)}


@pytest.mark.parametrize("shapes", [shapes_of(tiny_model()), RESNETISH])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
@pytest.mark.parametrize("dist_name", ["uniform", "erk", "balanced"])
def test_distributions_hit_the_global_target_exactly(shapes, sparsity, dist_name):
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    dens = layer_densities(shapes, sparsity, dist_name)
    assert all(0 < d <= 1 for d in dens.values())
    assert sum(dens[n] * sizes[n] for n in sizes) == pytest.approx((1 - sparsity) * sum(sizes.values()))
    counts = exact_counts(sizes, dens, sparsity)
    assert sum(counts.values()) == round((1 - sparsity) * sum(sizes.values()))
    assert all(abs(counts[n] - dens[n] * sizes[n]) < 1 for n in sizes)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_erk_scales_raw_density_and_makes_only_the_largest_dense(sparsity):
    sizes = {n: math.prod(s) for n, s in RESNETISH.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in RESNETISH.items()}
    dens = layer_densities(RESNETISH, sparsity, "erk")
    dense = {n for n, d in dens.items() if d == 1.0}
    free = [n for n in RESNETISH if n not in dense]
    eps = {dens[n] / raw[n] for n in free}
    assert max(eps) == pytest.approx(min(eps))  # density proportional to (sum of dims) / (prod of dims)
    # dense layers are exactly those of largest raw density, and no fewer would fit: dropping the smallest-raw
    # dense layer back into the free set would push a free density above 1 (the reference's fix-up loop)
    assert all(raw[d] > raw[f] for d in dense for f in free)
    if dense:
        back = min(dense, key=lambda n: raw[n])
        pool = free + [back]
        budget = (1 - sparsity) * sum(sizes.values()) - sum(sizes[n] for n in dense if n != back)
        e = budget / sum(raw[n] * sizes[n] for n in pool)
        assert e * raw[back] > 1
    if sparsity == 0.5:
        assert "stem" in dense  # the tiny stem conv cannot take its ERK share at 50%


def test_balanced_gives_equal_nonzero_counts():
    shapes = {"a": (8, 8), "b": (64, 64), "c": (32, 128), "d": (3, 2)}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    counts = exact_counts(sizes, layer_densities(shapes, 0.9, "balanced"), 0.9)
    assert counts["d"] == 6  # too small for its share: dense, the rest shared by the others
    free = [n for n in shapes if counts[n] < sizes[n]]
    assert max(counts[n] for n in free) - min(counts[n] for n in free) <= 1
    assert sum(counts.values()) == round(0.1 * sum(sizes.values()))


def test_unknown_distribution_is_a_value_error():
    with pytest.raises(ValueError, match="distribution.*uniform, erk, balanced"):
        layer_densities({"a": (2, 2)}, 0.5, "gaussian")


# ------------------------------------------------------------------ registry
def test_registry_names_and_errors():
    assert {"dense", "random", "acdc", "rigl"} <= set(SPARSIFIER_NAMES)
    assert build_sparsifier("dense").sparsity == 0.0
    assert build_sparsifier("random", sparsity=0.9).sparsity == 0.9
    # library errors: plain ValueError/TypeError with the constructors' own argument names
    cases = [(("nope",), {}, "unknown sparsifier 'nope'.*dense"),
             (("random",), {"sparsity": 1.0}, r"^sparsity=1.0.*\[0, 1\)"),
             (("random",), {"sparsity": -0.1}, r"^sparsity.*\[0, 1\)"),
             (("random",), {"sparsity": "0.9"}, r"^sparsity.*\[0, 1\)"),
             (("random",), {"sparsity": 0.9, "bogus": 1}, "unexpected keyword argument 'bogus'"),
             (("random",), {"sparsity": 0.9, "distribution": "x"}, "^distribution.*erk"),
             (("rigl",), {"sparsity": 0.9, "delta_t": 0}, "^delta_t"),
             (("rigl",), {"sparsity": 0.9, "drop_fraction": 1.5}, r"^drop_fraction.*\(0, 1\]"),
             (("acdc",), {"sparsity": 0.9, "reset_momentum": "x"}, "^reset_momentum.*all"),
             (("acdc",), {"sparsity": 0.9, "phase_fraction": 0}, "^phase_fraction"),
             (("dense",), {"sparsity": 0.5}, "dense sparsifier has sparsity 0")]
    for args, opts, pattern in cases:
        with pytest.raises((ValueError, TypeError), match=pattern) as e:
            build_sparsifier(*args, **opts)
        assert "\n" not in str(e.value)
