"""Node classification (paper Tables 10-15): the task seam, the GNN models, HAM on exactly the convolution and
attention parameters, beta masked where grad != 0, learning on generated SBM graphs, bit-exact resume, the real
datasets' offline paths (files made here in PyG's / Platonov et al.'s formats), one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from ham.cli import main as train_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["experiment=node_sbm", "trainer.epochs=60", "trainer.checkpoint_every_steps=20", "trainer.log_every_steps=10",
         "trainer.progress_bar=false"]


def run(args, run_dir):
    return train_main([*args, f"hydra.run.dir={run_dir}"])


def summary(run_dir):
    return json.loads((Path(run_dir) / "summary.json").read_text())


# ------------------------------------------------------------------ models and HAM's parameters
def _model(conv, **kw):
    from ham.models import build_model

    return build_model(conv, num_classes=3, in_chans=8, residual=True, norm="ln", pre_linear=True, **kw)


@pytest.mark.parametrize("conv", ["gcn", "gat", "gatv2", "sage"])
def test_ham_steps_exactly_the_convolutions(conv):
    """HAM's managed tensors are the convolutions' weights, biases and attention vectors; the input/residual/
    output linear layers and the norms get Adam's step alone (appendix D.4)."""
    from ham.optim.factory import build_optimizer

    torch.manual_seed(0)
    model = _model(conv)
    opt = build_optimizer(model, {"name": "adam", "lr": 0.01, "weight_decay": 5e-4, "no_weight_decay_1d": False},
                          {"alpha": 100.0, "beta": 0.01, "beta_where_grad": True}, ham_params=model.ham_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    managed = {names[id(p)] for p in opt.managed_params()}
    expected = {f"convs.{n}" for n, _ in model.convs.named_parameters()}
    assert managed == expected
    assert all(n.startswith("convs.") for n in managed)
    if conv.startswith("gat"):
        assert any("att" in n for n in managed)  # the attention parameters
    if conv in ("gcn", "sage"):
        assert any(n.endswith("bias") for n in managed)  # the convolution biases (ndim 1) too
    assert not any(n.startswith(("lins.", "norms.", "classifier.", "lin_in.")) for n in managed)


def _one_step(model_seed, ham_cfg, conv="gcn"):
    from ham.optim.factory import build_optimizer
    from ham.tasks.node import Graph

    torch.manual_seed(model_seed)
    model = _model(conv, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 8, generator=g)
    x[:, 0] = 0.0  # a feature that is always 0: its weights in the first layers get grad == 0
    edge_index = torch.randint(0, 20, (2, 60), generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    opt = build_optimizer(model, {"name": "adam", "lr": 0.01, "weight_decay": 0.0, "no_weight_decay_1d": False},
                          ham_cfg, ham_params=model.ham_parameters())
    torch.nn.functional.cross_entropy(model(Graph(x, edge_index)), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    return model, grads


def test_ham_changes_only_ham_parameters_and_beta_is_masked_where_grad_is_zero():
    base, _ = _one_step(0, {"alpha": 0.0, "beta": 0.0})
    ham, grads = _one_step(0, {"alpha": 0.0, "beta": 0.1, "beta_where_grad": True})
    unmasked, _ = _one_step(0, {"alpha": 0.0, "beta": 0.1, "beta_where_grad": False})
    b, h, u = dict(base.named_parameters()), dict(ham.named_parameters()), dict(unmasked.named_parameters())
    for n in b:
        if n.startswith("convs."):
            zero = grads[n] == 0
            # beta where grad != 0 only: there exactly the reference factor exp(-lr * beta); elsewhere the base step
            assert torch.equal(h[n][zero], b[n][zero]), n
            expected = b[n][~zero] * torch.exp(torch.tensor(-0.01 * 0.1))
            torch.testing.assert_close(h[n][~zero], expected, rtol=1e-6, atol=0)
            if zero.any():
                assert not torch.equal(u[n][zero], b[n][zero])  # unmasked beta decays them too
        else:
            assert torch.equal(h[n], b[n]), n  # not a HAM parameter: the base step alone
    assert (grads["lin_in.weight"][:, 0] == 0).all()


# ------------------------------------------------------------------ training end to end
@pytest.mark.parametrize("homophily,model", [(0.7, "gcn"), (0.2, "sage")])
def test_learns_on_sbm_well_above_chance(tmp_path, homophily, model):
    assert run([*SMALL, f"model={model}", f"dataset.options.homophily={homophily}"], tmp_path / "r") == 0
    s = summary(tmp_path / "r")
    assert s["val/best"] > 55 and s["test/at_best_val"] > 50  # 5 classes: chance is 20 %
    assert {"val/acc", "test/acc", "val/best", "test/at_best_val", "best_step"} <= set(s)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val/acc" in r for r in rows) == 60  # evaluated after every step (Luo et al.)
    assert max(r["val/acc"] for r in rows if "val/acc" in r) == pytest.approx(s["val/best"])


def test_resume_from_a_mid_run_checkpoint_is_bit_exact(tmp_path):
    args = [*SMALL, "model=gat", "trainer.keep_checkpoints=5"]
    assert run(args, tmp_path / "ref") == 0
    ckpt = tmp_path / "ref" / "checkpoints" / "ckpt_000000020.pt"
    assert ckpt.is_file()
    assert run([*args, f"resume={ckpt}"], tmp_path / "resumed") == 0
    a = torch.load(tmp_path / "ref" / "model_final.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model_final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = summary(tmp_path / "ref"), summary(tmp_path / "resumed")
    for k in ("val/acc", "test/acc", "val/best", "test/at_best_val", "best_step", "train/loss"):
        assert sa[k] == sb[k], k


def test_ham_on_vs_off_differs_only_in_the_convolutions(tmp_path):
    """One step: every tensor the hyperbolic step owns differs from the baseline; the classifier does not
    (its step depends only on its own gradient, which one step cannot change)."""
    one = [*SMALL, "trainer.max_steps=1", "model.kwargs.dropout=0.0"]
    assert run([*one, "ham=off"], tmp_path / "off") == 0
    assert run([*one, "ham.alpha=100", "ham.beta=0.1"], tmp_path / "on") == 0
    a = torch.load(tmp_path / "off" / "model_final.pt", weights_only=True)
    b = torch.load(tmp_path / "on" / "model_final.pt", weights_only=True)
    assert all(not torch.equal(a[k], b[k]) for k in a if k.startswith("convs."))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("classifier."))


# ------------------------------------------------------------------ bad input: exit 2, one line, nothing created
def _cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("args,words", [
    (["experiment=node_sbm", "trainer.global_batch_size=8"], ["trainer.global_batch_size=8", "=1"]),
    (["experiment=quickstart", "dataset=sbm", "trainer.global_batch_size=1"], ["model=small_cnn", "gcn"]),
    (["experiment=quickstart", "model=gcn"], ["model=gcn", "small_cnn"]),
    (["experiment=node_sbm", "dataset=cora", "data_dir=EMPTY"], ["Cora", "Planetoid", "nothing is downloaded"]),
    (["experiment=node_sbm", "dataset=chameleon", "data_dir=EMPTY"], ["Chameleon", "chameleon_filtered.npz"]),
    (["experiment=node_sbm", "dataset=amazon-photo", "data_dir=EMPTY"], ["Amazon-Photo", "amazon_electronics_photo"]),
])
def test_bad_input_is_one_line(tmp_path, args, words):
    (tmp_path / "empty").mkdir()
    args = [a.replace("EMPTY", str(tmp_path / "empty")) for a in args]
    r = _cli(args, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ the real datasets' code paths, offline
def _hetero_npz(path, n=60, classes=3, splits=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    masks = np.zeros((splits, n), bool), np.zeros((splits, n), bool), np.zeros((splits, n), bool)
    for i in range(splits):
        perm = rng.permutation(n)
        masks[0][i, perm[:30]], masks[1][i, perm[30:45]], masks[2][i, perm[45:]] = True, True, True
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, node_features=rng.normal(size=(n, 5)).astype(np.float32) + y[:, None], node_labels=y,
             edges=rng.integers(0, n, (200, 2)), train_masks=masks[0], val_masks=masks[1], test_masks=masks[2])
    return masks


def test_real_dataset_paths_read_files_and_pick_split_by_seed(tmp_path):
    from ham.data.graphs import real

    masks = _hetero_npz(tmp_path / "roman_empire" / "raw" / "roman_empire.npz")  # PyG HeterophilousGraphDataset
    fmasks = _hetero_npz(tmp_path / "geom-gcn" / "chameleon" / "chameleon_filtered.npz", seed=1)
    for seed in (0, 3, 13):
        g = real(str(tmp_path), name="roman-empire", seed=seed)
        assert g.split == seed % 10 and torch.equal(g.train_mask, torch.as_tensor(masks[0][seed % 10]))
        f = real(str(tmp_path), name="chameleon", seed=seed)
        assert torch.equal(f.test_mask, torch.as_tensor(fmasks[2][seed % 10]))
    ei = g.edge_index
    assert (ei[0] == ei[1]).sum() == g.num_nodes  # one self loop per node (Luo et al.'s preprocessing)
    assert g.metric == "acc" and g.num_classes == 3


def test_train_on_a_real_dataset_layout(tmp_path):
    _hetero_npz(tmp_path / "data" / "minesweeper" / "raw" / "minesweeper.npz", classes=2)
    rd = tmp_path / "run"
    assert run([*SMALL, "dataset=minesweeper", f"data_dir={tmp_path / 'data'}", "trainer.epochs=5"], rd) == 0
    s = summary(rd)
    assert "val/rocauc" in s and "test/rocauc" in s and 0 <= s["val/best"] <= 100


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from ham.tasks.node import roc_auc

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (300,), generator=g)
    score = torch.round(torch.rand(300, generator=g) * 20) / 20 + 0.1 * y  # with ties
    assert roc_auc(score, y) == pytest.approx(roc_auc_score(y.numpy(), score.numpy()), abs=1e-12)


# ------------------------------------------------------------------ presets, paper tables, sweep tables
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "experiment" / "node").glob("*.yaml"))


def test_every_node_preset_composes_with_table12_values():
    from omegaconf import OmegaConf

    from ham import registry
    from ham.config import compose, validate
    from ham.sweep import NODE_HETEROPHILIC, NODE_HOMOPHILIC, NODE_MODELS

    assert len(PRESETS) == 39 == len(NODE_HOMOPHILIC + NODE_HETEROPHILIC) * len(NODE_MODELS)
    ref = json.loads((ROOT / "results" / "paper_reference.json").read_text())["table12_node_best_alpha_beta"]
    for name in PRESETS:
        cfg = compose([f"experiment=node/{name}"])
        validate(cfg, check_data=False)
        dataset, model = name.rsplit("_", 1)
        assert (cfg.dataset.name, cfg.model.name) == (dataset, model)
        label = registry.get("model", model).label
        assert [cfg.ham.alpha, cfg.ham.beta] == ref[dataset][label], name
        assert cfg.ham.beta_where_grad and cfg.optimizer.name == "adam" and cfg.trainer.global_batch_size == 1
        assert OmegaConf.select(cfg, "optimizer.no_weight_decay_1d") is False


def test_paper_node_tables_are_consistent():
    ref = json.loads((ROOT / "results" / "paper_reference.json").read_text())
    for small, big in (("table10_node_homophilic", "table13_node_homophilic_nham"),
                       ("table11_node_heterophilic", "table14_node_heterophilic_nham")):
        a, b = ref[small], ref[big]
        assert a["columns"] == b["columns"]
        for row in ("GCN", "GCN+HAM", "GAT", "GAT+HAM", "SAGE", "SAGE+HAM"):
            assert a[row] == b[row] and len(a[row]) == len(a["columns"])
        assert all(len(b[f"{m}+nHAM"]) == len(a["columns"]) for m in ("GCN", "GAT", "SAGE"))
    for key in ("table12_node_best_alpha_beta", "table15_node_best_alpha_beta_nham"):
        cells = [v for k, d in ref[key].items() if not k.startswith("_") for v in d.values()]
        assert len(cells) == 39
        grid = {1, 10, 100, 200} if "nham" not in key else {-1, -10, -100, -200}
        assert all(a in grid and b in (0, 0.01, 0.1) for a, b in cells)
    assert ref["table10_node_homophilic"]["GCN+HAM"][0] == [81.44, 0.43]  # cora, by hand from the paper


def test_node_sweep_tables_cells_and_collection(tmp_path):
    from omegaconf import OmegaConf

    from ham import sweep
    from ham.config import compose

    blocks = sweep.table_blocks("table13", [0, 1])
    assert len(blocks) == 2 + 24  # baseline, HAM (every preset), one nHAM block per preset
    assert len(blocks[0].jobs()) == 24 * 2
    assert blocks[2].overrides == ["experiment=node/cora_gcn", "ham.alpha=-10", "ham.beta=0.01", "seed=0,1"]
    assert len(sweep.table_blocks("node_grid", [0])[1].jobs()) == 39 * 12
    assert sweep.paper_value("table13", "SAGE+nHAM", "cora") == (81.0, 0.35)
    # a finished table10 sweep collects ours beside the paper's numbers (val/best)
    sweep_dir = tmp_path / "sw"
    sweep.write_manifest(sweep_dir, table="table10", blocks=blocks[:2], extra=[], expected=4)
    for i, (over, best) in enumerate([(["ham.alpha=0", "ham.beta=0"], 80.0), ([], 82.0)]):
        for seed in (0, 1):
            cfg = compose(["experiment=node/cora_gcn", *over, f"seed={seed}"])
            job = sweep_dir / f"job{i}{seed}"
            job.mkdir()
            (job / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            (job / "summary.json").write_text(json.dumps({"val/best": best + seed, "test/at_best_val": 1.0}))
    text = sweep.write_reports(sweep_dir)
    assert "| GCN+HAM | cora | 82.50 ± 0.71 | 2 | 81.44 ± 0.43 | ok |" in text
    assert "| GCN | cora | 80.50 ± 0.71 | 2 | 81.32 ± 0.30 | ok |" in text


def test_readme_node_commands_as_typed_then_rerun_answers(tmp_path):
    """The README's node block as a user types it, in a fresh directory (no hydra.run.dir): the run lands in
    runs/node_sbm_dense_<hash>/ and typing it again answers from the finished run."""
    from tests.test_readme import argv, commands

    cmds = commands("node")
    assert len(cmds) == 2 and all("experiment=node_sbm" in c for c in cmds)
    for c in cmds:
        r = subprocess.run(argv(c), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "best val (%)" in r.stdout
    dirs = sorted((tmp_path / "runs").glob("node_sbm_dense_*"))
    assert len(dirs) == 2
    again = subprocess.run(argv(cmds[0]), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already finished" in again.stderr, again.stderr[-2000:]


def test_every_node_preset_runs_with_smoke_cpu(tmp_path):
    """smoke=cpu works for the node presets too: a small generated graph of the dataset's shape, no files."""
    from ham.config import compose, validate

    for name in PRESETS:
        cfg = compose([f"experiment=node/{name}", "smoke=cpu"])
        validate(cfg)
    assert run(["experiment=node/roman-empire_gcn", "smoke=cpu"], tmp_path / "smoke") == 0
    assert summary(tmp_path / "smoke")["steps"] == 4
