"""SNIP (ham/sparse/snip.py), the proof that a sparsifier is one implementation plus one declaration: the masks
are SNIP's (|w x grad| at init, one global top-k, exact count), no update happens on the scoring batches, the
masks then stay fixed through training and resume, and the whole app knows it from its declaration alone."""

import copy
import io

import torch
from test_sparse_random_acdc_rigl import SPE, Loop, assert_pruned_entries_zero, batch, layer_weights

from ham import registry
from ham.config import compose, group_options, validate
from ham.sparse import masks as M


def test_masks_are_the_global_top_k_of_weight_times_gradient():
    loop = Loop("snip", sparsity=0.8)
    init = {n: w.detach().clone() for n, w in layer_weights(loop).items()}
    # SNIP's score by hand, from a copy of the same model at init on the same first batch
    ref = copy.deepcopy(loop.model)
    x, y = batch(0)
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    scores = {n: (M.weight_of(m) * M.weight_of(m).grad).abs() for n, m in M.prunable_layers(ref)}
    expected = M.global_magnitude_masks(scores, 0.8)

    loop.run(1)
    assert loop.skipped == [0]  # the scoring batch is not an update
    total = sum(m.numel() for m in expected.values())
    assert sum(int(m.sum()) for m in loop.sp.masks.values()) == round(0.2 * total)
    for n, w in layer_weights(loop).items():
        assert torch.equal(loop.sp.masks[n], expected[n]), n
        assert torch.equal(w.detach(), torch.where(expected[n], init[n], torch.zeros_like(init[n]))), n


def test_scores_summed_over_several_batches_then_fixed_masks_through_training():
    loop = Loop("snip", sparsity=0.9, batches=3)
    loop.run(3)
    assert loop.skipped == [0, 1, 2] and loop.sp.pruned
    masks = {n: m.clone() for n, m in loop.sp.masks.items()}
    loop.run_to(6 * SPE, each_step=assert_pruned_entries_zero)
    assert loop.skipped == [0, 1, 2]
    assert all(torch.equal(masks[n], m) for n, m in loop.sp.masks.items())
    assert abs(loop.sp.current_sparsity() - 0.9) < 1e-3


def test_resume_in_the_middle_of_scoring_is_bit_exact():
    straight = Loop("snip", sparsity=0.9, batches=3).run(8)
    first = Loop("snip", sparsity=0.9, batches=3).run(2)
    blob = first.checkpoint()
    resumed = Loop("snip", sparsity=0.9, batches=3, init_seed=5)  # other init: everything must come from the file
    resumed.restore(blob).run(6)
    for (n, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n
    buf = io.BytesIO()
    torch.save(resumed.sp.state_dict(), buf)  # plain tensors and values only (weights_only loads)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def test_the_app_knows_snip_from_its_declaration():
    """No option file, no name list: the group option, the defaults, the checks and the table label all come
    from `@declare("sparsifier", "snip", ...)` in ham/sparse/options.py."""
    assert "snip" in group_options("sparsifier") and registry.get("sparsifier", "snip").label == "SNIP"
    cfg = compose(["experiment=quickstart", "sparsifier=snip", "sparsifier.sparsity=0.95"])
    assert (cfg.sparsifier.name, cfg.sparsifier.batches, cfg.sparsifier.sparsity) == ("snip", 1, 0.95)
    validate(cfg, check_data=False)
    import pytest

    from ham.errors import ConfigError
    with pytest.raises(ConfigError, match=r"sparsifier.batches=0 is not allowed; it must be an integer >= 1"):
        validate(compose(["experiment=quickstart", "sparsifier=snip", "sparsifier.batches=0"]), check_data=False)
    from ham.sweep import cell_of
    row, _ = cell_of("proxy", {"ham": {"alpha": 0, "beta": 0}, "sparsifier": {"name": "snip", "sparsity": 0.95}})
    assert row == "SNIP s=0.95"
