"""Presets that can give their paper cell: STR reaches its target by itself, RigL's ERK covers the first layer,
DeiT-Small's Table 8 recipe is the light one, and the metrics follow the effective weights."""

import json
from pathlib import Path

import pytest
import torch

from ham.cli import main
from ham.config import compose

QUICK = ["experiment=quickstart", "trainer.epochs=4", "trainer.eval_every_epochs=4", "trainer.log_every_steps=20",
         "trainer.progress_bar=false"]


def run(tmp_path: Path, *args: str) -> dict:
    assert main([*QUICK, *args, f"hydra.run.dir={tmp_path}"]) == 0
    return json.loads((tmp_path / "summary.json").read_text())


def prunable(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if k.endswith("weight") and v.ndim >= 2}


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_str_budget_mode_reaches_the_target_by_itself(tmp_path, target):
    """Our budget controller (opt-in; STR as published is the default): STR's own sparsity is the target."""
    s = run(tmp_path, "sparsifier=str", f"sparsifier.sparsity={target}", "sparsifier.mode=budget",
            "sparsifier.exact_target=true")
    own = s["sparsifier"]["str_sparsity_before_projection"]
    assert abs(own - target) < 0.005, own  # STR's own sparsity, before any projection
    before = s["before_train_end"]
    assert before["val/top1"] > 60 and abs(before["sparsity"] - target) < 0.005  # 10 classes: chance is 10 %
    assert abs(s["val/top1"] - before["val/top1"]) < 3  # the projection moved (almost) nothing
    sd = prunable(torch.load(tmp_path / "model_final.pt", weights_only=True))
    total = sum(v.numel() for v in sd.values())
    assert sum(int((v == 0).sum()) for v in sd.values()) == round(target * total)


def test_str_reference_mode_is_the_default():
    cfg = compose(["experiment=quickstart", "sparsifier=str"])
    from ham.sparse.registry import build_sparsifier

    opts = {k: v for k, v in cfg.sparsifier.items() if k != "name"}
    sp = build_sparsifier("str", **opts)
    assert sp.mode == "reference" and not sp.exact_target
    sp.schedule = type("S", (), {"total_steps": 100})()
    sp.layers = {}
    sp.after_step(9)  # no controller in reference mode: nothing to touch, nothing raised


def test_rigl_preset_prunes_the_first_layer_and_hits_the_exact_sparsity(tmp_path):
    s = run(tmp_path, "sparsifier=rigl", "sparsifier.sparsity=0.9")
    sd = prunable(torch.load(tmp_path / "model_final.pt", weights_only=True))
    total = sum(v.numel() for v in sd.values())
    assert sum(int((v == 0).sum()) for v in sd.values()) == round(0.9 * total)
    rep = s["sparsifier"]
    assert rep["delta_t_batch"] == 4096 and rep["n_updates"] >= 10  # min_updates on a short run


def test_rigl_preset_erk_makes_resnet50s_first_layer_sparse():
    from ham.models import build_model
    from ham.sparse.base import TrainSchedule
    from ham.sparse.registry import build_sparsifier

    cfg = compose(["experiment=imagenet_resnet50", "sparsifier=rigl"])
    opts = {k: v for k, v in cfg.sparsifier.items() if k != "name"}
    sp = build_sparsifier("rigl", **opts)
    model = build_model("resnet50", 1000, img_size=224)
    sp.setup(model, TrainSchedule(100, 1251, global_batch_size=1024))
    # ERK over every layer, as the reference: conv1 gets ERK's density (0.42 at 90 %), not a forced dense layer
    assert sp.masks["conv1"].float().mean().item() == pytest.approx(0.42, abs=0.01)
    assert sp.delta_t == 400
    total = sum(m.numel() for m in sp.masks.values())
    assert sum(int((~m).sum()) for m in sp.masks.values()) == round(0.9 * total)


def test_rigl_delta_t_is_scaled_from_the_reference_batch():
    from ham.sparse.base import TrainSchedule
    from ham.sparse.rigl import RigL

    sp = RigL(sparsity=0.9, delta_t=100, delta_t_batch=4096, min_updates=10)
    sp.t_end = int(0.75 * 100 * 1251)
    assert sp.effective_delta_t(TrainSchedule(100, 1251, global_batch_size=1024)) == 400
    assert round(sp.t_end / 400) == 235  # ~ the reference's updates at batch 4096 (313 steps/epoch)
    assert RigL(sparsity=0.9, delta_t=100).effective_delta_t(TrainSchedule(100, 1251, 1024)) == 100


def test_deit_small_table8_preset_is_the_light_recipe():
    d = compose(["experiment=imagenet_deit_small"])
    assert (d.optimizer.name, d.optimizer.lr, d.optimizer.weight_decay, d.trainer.epochs,
            d.trainer.global_batch_size, d.schedule.name) == ("adamw", 1e-3, 0.1, 300, 1024, "triangular")
    assert d.trainer.mixup is None and d.dataset.options.auto_augment is None and d.dataset.options.re_prob == 0
    full = compose(["experiment=imagenet_deit_small_full"])
    assert full.trainer.mixup.cutmix_alpha == 1.0 and full.dataset.options.auto_augment


def test_metrics_follow_the_effective_weights(tmp_path):
    """STR: L1 of the thresholded weights (zeros included) is below the raw weights' L1 at 90 % sparsity."""
    run(tmp_path, "sparsifier=str", "sparsifier.sparsity=0.9", "trainer.epochs=2")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "train/l1_norm" in r][-1]
    sd = torch.load(tmp_path / "model_final.pt", weights_only=True)
    eff = [v for k, v in sd.items() if v.ndim >= 2]
    want = sum(float(v.abs().sum()) for v in eff) / sum(v.numel() for v in eff)
    assert last["train/l1_norm"] == pytest.approx(want, rel=0.05)
    assert 0 <= last["train/sign_flips"] <= 1


def test_fig4_l1_curves_from_two_run_dirs_in_one_command(tmp_path):
    import subprocess
    import sys

    for name, ham in (("ham", []), ("base", ["ham=off"])):
        assert main([*QUICK, "trainer.epochs=1", *ham, f"hydra.run.dir={tmp_path / name}"]) == 0
    out = tmp_path / "l1.png"
    p = subprocess.run([sys.executable, "-m", "ham.train.plots", str(tmp_path / "ham"), str(tmp_path / "base"),
                        "--labels", "HAM", "baseline", "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p.stderr
    p = subprocess.run([sys.executable, "-m", "ham.train.plots", str(tmp_path / "nope")], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "no metrics.jsonl" in p.stderr
