"""Config composition (every preset x every group option) and the bad-input contract (exit 2, one line)."""

import subprocess
import sys
from pathlib import Path

import pytest

from ham.config import CONFIG_DIR, compose, group_options, validate
from ham.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = group_options("experiment")
SWAPPABLE = ("model", "dataset", "optimizer", "schedule", "sparsifier", "ham", "logger")


def test_presets_exist():
    assert {"quickstart", "cifar100_resnet18", "imagenet_resnet50", "imagenet_resnet50_200ep",
            "imagenet_deit_small"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_composes_with_every_group_option(experiment):
    for group in SWAPPABLE:
        for option in group_options(group):
            cfg, _ = compose([f"experiment={experiment}", f"{group}={option}"])
            validate(cfg, check_data=False)
            assert cfg[group] is not None


def test_user_command_composes_as_written():
    cfg, _ = compose(["model=resnet50", "ham.alpha=200", "sparsifier=acdc"])
    assert cfg.model.name == "resnet50" and cfg.ham.alpha == 200 and cfg.sparsifier.name == "acdc"
    validate(cfg, check_data=False)


def test_paper_recipes_values():
    c, _ = compose(["experiment=cifar100_resnet18"])
    assert (c.optimizer.lr, c.optimizer.weight_decay, c.trainer.epochs, c.trainer.global_batch_size) == \
        (0.2, 1e-4, 150, 512)
    assert (c.ham.alpha, c.ham.beta, c.optimizer.momentum, c.schedule.name) == (200, 16e-3, 0.9, "triangular")
    r, _ = compose(["experiment=imagenet_resnet50"])
    assert (r.optimizer.lr, r.optimizer.weight_decay, r.trainer.epochs, r.trainer.global_batch_size) == \
        (0.25, 5e-5, 100, 1024)
    assert (r.ham.alpha, r.ham.beta) == (200, 1e-3)
    assert compose(["experiment=imagenet_resnet50_200ep"])[0].trainer.epochs == 200
    d, _ = compose(["experiment=imagenet_deit_small"])
    assert (d.optimizer.name, d.optimizer.lr, d.optimizer.weight_decay, d.trainer.epochs) == ("adamw", 1e-3, 0.1, 300)
    s, _ = compose(["experiment=cifar100_resnet18", "optimizer=sam"])
    assert s.optimizer.sam.rho > 0 and s.optimizer.lr == 0.2  # the preset's lr survives the group swap


def test_quickstart_composes_with_sparsifier_override():
    cfg, _ = compose(["experiment=quickstart", "sparsifier=rigl", "sparsifier.sparsity=0.9"])
    validate(cfg)
    assert cfg.sparsifier.sparsity == 0.9


BAD = [
    (["model=resnet51"], "model=resnet51"),
    (["sparsifier=nope"], "sparsifier=nope"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer.lr=abc"], "optimizer.lr"),
    (["sparsifier.sparsity=1.0"], "sparsifier.sparsity"),
    (["sparsifier.sparsity=-0.1"], "sparsifier.sparsity"),
    (["trainer.epochs=-3"], "trainer.epochs"),
    (["trainer.epochs=ten"], "trainer.epochs"),
    (["ham.alpha=big"], "ham.alpha"),
    (["ham.variant=sideways"], "ham.variant"),
    (["trainer.epochz=3"], "trainer.epochz"),
    (["hydra.job.name=x"], "hydra.job.name"),
]


@pytest.mark.parametrize("overrides,key", BAD)
def test_bad_values_raise_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        cfg, _ = compose(["experiment=quickstart", *overrides])
        validate(cfg)
    msg = str(e.value)
    assert key in msg and "\n" not in msg


def test_missing_data_dir_is_a_config_error(tmp_path):
    cfg, _ = compose(["experiment=cifar100_resnet18", f"data_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "nowhere" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args", [["experiment=quickstart", "optimizer.lr=-1"], ["model=resnet51"],
                                  ["experiment=imagenet_resnet50", "data_dir=/definitely/not/here"]])
def test_cli_exits_2_with_one_line_and_creates_nothing(tmp_path, args):
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wandb").exists()


def test_config_dir_mirrors_package_groups():
    for group in ("model", "dataset", "optimizer", "schedule", "sparsifier", "ham", "logger", "experiment"):
        assert (CONFIG_DIR / group).is_dir()
