"""Training metrics: sign flips (bit-packed snapshots), L1, sparsity."""

import io
import math

import pytest
import torch

from ham.train import metrics
from ham.train.metrics import SignTracker, l1_norm, sparsity


# ------------------------------------------------------------------------------------------------ bit packing
@pytest.mark.parametrize("n", [1, 7, 63, 64, 65, 1000, 4099])
def test_packed_popcount_matches_bool_count(n):
    g = torch.Generator().manual_seed(n)
    a = torch.rand(n, generator=g) < 0.5
    b = torch.rand(n, generator=g) < 0.3
    pa, pb = metrics._pack_bits(a), metrics._pack_bits(b)
    assert pa.dtype == torch.uint8 and pa.numel() == 8 * math.ceil(n / 64)
    assert metrics._popcount(pa).item() == a.sum().item()
    assert metrics._popcount(pa & pb).item() == (a & b).sum().item()
    assert metrics._popcount(pa | pb).item() == (a | b).sum().item()


def test_popcount_of_all_ones_uses_the_sign_bit_correctly():
    ones = torch.ones(640, dtype=torch.bool)  # every int64 word is -1: the arithmetic-shift edge case
    assert metrics._popcount(metrics._pack_bits(ones)).item() == 640


# ------------------------------------------------------------------------------------------------ sign flips
def test_sign_tracker_counts_strict_flips_only():
    w = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.3, 0.0])
    t = SignTracker([w])
    # idx 0: + -> - (flip); idx 4: - -> + (flip); idx 2: + -> 0 (not a flip); idx 5: 0 -> + (not a flip).
    # Denominator: the weights that can flip, non-zero before AND now (idx 0, 1, 3, 4): a pruned one never counts
    w.copy_(torch.tensor([-1.0, -1.0, 0.0, 0.5, 0.3, 1.0]))
    assert t.update() == {"train/sign_flips": 2 / 4, "train/sign_flips_init": 2 / 4}
    # idx 0 flips back (a flip since the last log, but equal to its init sign); idx 2: 0 -> - (not a flip since
    # the last log, which saw 0, but a flip against its initial +); can flip: 5 of 6 either way
    w.copy_(torch.tensor([1.0, -1.0, -3.0, 0.5, 0.3, 1.0]))
    assert t.update() == {"train/sign_flips": 1 / 5, "train/sign_flips_init": 2 / 5}
    assert t.update() == {"train/sign_flips": 0.0, "train/sign_flips_init": 2 / 5}  # nothing changed


def test_a_pruned_weight_never_counts_and_rates_compare_across_sparsities():
    dense = torch.tensor([1.0, -1.0, 1.0, -1.0])
    sparse = torch.tensor([1.0, -1.0, 0.0, 0.0])  # half pruned, and stays pruned
    td, ts = SignTracker([dense]), SignTracker([sparse])
    dense.copy_(torch.tensor([-1.0, -1.0, -1.0, -1.0]))   # 2 of 4 live weights flip
    sparse.copy_(torch.tensor([-1.0, -1.0, 0.0, 0.0]))     # 1 of 2 live weights flips
    assert td.update()["train/sign_flips"] == ts.update()["train/sign_flips"] == 0.5


def test_theta_flip_counts_when_m_times_w_changes_sign():
    m, w = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    t = SignTracker(lambda: [m * w])  # the effective weight, recomputed at every update
    w.copy_(torch.tensor([1.0, -0.5, 1.0]))    # theta[1]: 2 -> -1 (flip); theta[2] stays -1
    m.copy_(torch.tensor([-1.0, 2.0, -1.0]))   # theta[0]: 1 -> -1 (flip, through m alone)
    assert t.update() == {"train/sign_flips": 2 / 3, "train/sign_flips_init": 2 / 3}
    w.copy_(torch.tensor([-1.0, -0.5, -1.0]))  # m and w both negative: theta[0] = 1 (flips back), theta[2] = 1
    m.copy_(torch.tensor([-1.0, 2.0, -1.0]))
    assert t.update()["train/sign_flips"] == 2 / 3


def test_sign_tracker_over_several_tensors_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in [(3, 5), (64, 64), (7,), (2, 3, 11, 13)]]
    init = [torch.sign(p).clone() for p in params]
    t = SignTracker(params)
    for _ in range(3):
        prev = [torch.sign(p).clone() for p in params]
        for p in params:
            p.add_(0.7 * torch.randn(p.shape, generator=g))
            p[torch.rand(p.shape, generator=g) < 0.1] = 0.0  # some pruned
        can_prev = sum(((torch.sign(p) * s) != 0).sum().item() for p, s in zip(params, prev))
        can_init = sum(((torch.sign(p) * s) != 0).sum().item() for p, s in zip(params, init))
        want_prev = sum(((torch.sign(p) * s) < 0).sum().item() for p, s in zip(params, prev)) / can_prev
        want_init = sum(((torch.sign(p) * s) < 0).sum().item() for p, s in zip(params, init)) / can_init
        got = t.update()
        assert got["train/sign_flips"] == want_prev and got["train/sign_flips_init"] == want_init
        assert 0 < want_prev < 1


def test_sign_tracker_snapshots_cost_a_quarter_byte_per_weight():
    params = [torch.randn(256, 64), torch.randn(1000)]
    t = SignTracker(params)
    n = sum(p.numel() for p in params)
    assert all(s.dtype == torch.uint8 for s in (*t.init, *t.prev))
    # 2 snapshots x 2 bit planes x 1 bit, padded to 64 weights per tensor
    assert t.snapshot_nbytes() == 4 * sum(8 * math.ceil(p.numel() / 64) for p in params)
    assert t.snapshot_nbytes() <= 0.5 * n + 4 * 8 * len(params)


def test_sign_tracker_state_round_trip_is_weights_only_safe():
    w = torch.randn(100)
    t = SignTracker([w])
    w.neg_()
    t.update()
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    t2 = SignTracker([w])  # a fresh tracker would see no flips at all ...
    t2.load_state_dict(sd)  # ... the restored one remembers the initial signs and the last log's
    w[:10].neg_()
    out = t2.update()
    assert out["train/sign_flips"] == 10 / 100
    assert out["train/sign_flips_init"] == 90 / 100


def test_sign_tracker_loads_old_int8_checkpoints():
    w = torch.tensor([1.0, -2.0, 3.0, 0.0])
    old = {"init": [torch.tensor([1, 1, -1, 1], dtype=torch.int8)],
           "prev": [torch.tensor([1, -1, 1, 0], dtype=torch.int8)]}
    t = SignTracker([w])
    t.load_state_dict(old)
    assert t.update() == {"train/sign_flips": 0.0, "train/sign_flips_init": 2 / 3}  # idx 3 is 0: cannot flip


def test_sign_tracker_rejects_state_of_other_parameters():
    t = SignTracker([torch.randn(10)])
    with pytest.raises(ValueError, match="10"):
        t.load_state_dict(SignTracker([torch.randn(20)]).state_dict())
    split = SignTracker([torch.randn(4, 8), torch.randn(32)])  # same total, different tensors
    with pytest.raises(ValueError, match="different model"):
        split.load_state_dict(SignTracker([torch.randn(64)]).state_dict())
    with pytest.raises(ValueError, match="different model"):
        t.load_state_dict({"init": [torch.ones(5, dtype=torch.int8)] * 2,
                           "prev": [torch.ones(5, dtype=torch.int8)] * 2})


def test_sign_tracker_with_nothing_to_track():
    t = SignTracker([])
    assert t.update() == {"train/sign_flips": 0.0, "train/sign_flips_init": 0.0}
    t.load_state_dict(t.state_dict())
    t.load_state_dict({"init": [], "prev": []})


# ------------------------------------------------------------------------------------------------ weights
def test_l1_norm_is_mean_abs_over_all_tensors():
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 3.0, -4.0, 1.5]])
    assert l1_norm([a, b]) == (1 + 2 + 0 + 3 + 4 + 1.5) / 6
    assert l1_norm([]) == 0.0


def test_sparsity_global_and_per_layer():
    w = {"conv": torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "fc": torch.tensor([0.0, 2.0, 3.0, 4.0, 5.0, -0.0])}
    rep = sparsity(w)
    assert rep["global"] == 5 / 10
    assert rep["layers"] == {"conv": 3 / 4, "fc": 2 / 6}
    assert sparsity([w["fc"]])["layers"] == {"0": 2 / 6}
    assert sparsity({}) == {"global": 0.0, "layers": {}}


# ------------------------------------------------------------------------------------------------ accuracy
