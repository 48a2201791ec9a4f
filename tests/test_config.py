"""Config composition (every preset x every group option), the typed schema, and the bad-input contract:
exit 2, one line naming the key, no traceback, nothing created."""

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ham import registry, schema
from ham.config import CONFIG_DIR, compose, group_options, validate
from ham.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = group_options("experiment")
SWAPPABLE = ("model", "dataset", "optimizer", "schedule", "sparsifier", "ham", "logger")


@functools.cache
def _composed(*overrides: str):
    """compose(overrides), once per module: the preset x option tests below ask for the same ~200 compositions
    (Hydra's compose is ~0.2 s each). Read the result, never change it (validate only reads)."""
    return compose(list(overrides))


def test_presets_exist():
    assert {"quickstart", "cifar100_resnet18", "imagenet_resnet50", "imagenet_resnet50_200ep",
            "imagenet_deit_small"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_composes_with_every_group_option(experiment):
    base = _composed(f"experiment={experiment}")
    for group in SWAPPABLE:
        for option in group_options(group):
            overrides = [f"experiment={experiment}", f"{group}={option}"]
            if group in ("model", "dataset"):
                names = {"model": base.model.name, "dataset": base.dataset.name, group: option}
                if registry.fact("model", names["model"], "graph", False) != registry.fact(
                        "dataset", names["dataset"], "graph", False):
                    # graph models take graph datasets only (and image models images): one line, before anything
                    with pytest.raises(ConfigError):
                        validate(_composed(*overrides), check_data=False)
                    continue
            if experiment == "imagenet_deit_small_full" and group == "dataset" and option != "imagenet":
                # the preset's RandAugment/random-erasing options exist only for ImageNet
                with pytest.raises(ConfigError, match=f"dataset.options.auto_augment is not a config key; keys of "
                                                      f"dataset.options: {'in_chans' if option == 'synthetic' else ''}"):
                    validate(_composed(*overrides), check_data=False)
                continue
            cfg = _composed(*overrides)
            patch = registry.fact("model", cfg.model.name, "patch_size")
            if patch and cfg.dataset.img_size % patch:
                with pytest.raises(ConfigError, match=f"model={cfg.model.name} needs dataset.img_size"):
                    validate(cfg, check_data=False)
                continue
            validate(cfg, check_data=False)
            assert cfg[group] is not None


@pytest.mark.parametrize("group", registry.FAMILIES)
def test_every_option_is_typed_by_its_declaration(group):
    for option in group_options(group):
        cfg = compose([f"{group}={option}"])
        expected = registry.get(group, cfg[group].name).schema
        # sam.yaml is sgd plus a sam section; every other option carries the schema of its own name
        assert OmegaConf.get_type(cfg[group]) is expected, option
        assert option == "sam" or cfg[group].name == option
        yaml = CONFIG_DIR / group / f"{option}.yaml"
        if yaml.is_file() and option != "sam":  # an option file declares every key, so it documents the component
            yaml_keys = set(OmegaConf.load(yaml).keys()) - {"defaults"}
            assert yaml_keys == {f.name for f in dataclasses.fields(expected)}, option


def test_the_groups_offer_exactly_the_declared_components():
    from ham.optim.functional import BACKENDS
    from ham.optim.ham import VARIANTS

    for group in registry.FAMILIES:
        extra = {"sam"} if group == "optimizer" else set()
        assert set(group_options(group)) == set(registry.names(group)) | extra, group
    assert set(schema.HAM_VARIANTS) == set(VARIANTS) and set(schema.HAM_BACKENDS) == set(BACKENDS)


@pytest.mark.parametrize("group", ["sparsifier", "model"])
def test_declared_options_are_constructor_arguments(group):
    """Every declared option reaches the implementation (Sign-In's `source` is spread into its kwargs; a model's
    options are its `kwargs`)."""
    import inspect

    for name, decl in registry.declarations(group).items():
        params = inspect.signature(decl.implementation()).parameters
        fields = decl.schema.__dataclass_fields__
        if group == "model":
            fields = fields["kwargs"].default_factory().__dataclass_fields__
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())  # timm takes the rest as **kwargs
        for key in fields:
            if key not in ("name", "source"):
                assert key in params or open_ended, (name, key)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_group_choice_on_the_command_line_beats_the_preset(experiment):
    """`experiment=X ham=off` must really be the baseline (a preset that set ham.* values would silently win)."""
    off = compose([f"experiment={experiment}", "ham=off"])
    assert (off.ham.alpha, off.ham.beta) == (0.0, 0.0)
    for group in ("model", "optimizer", "schedule", "sparsifier"):
        for option in group_options(group):
            yaml = CONFIG_DIR / group / f"{option}.yaml"
            expected = OmegaConf.load(yaml).get("name", "sgd") if yaml.is_file() else option
            assert _composed(f"experiment={experiment}", f"{group}={option}")[group].name == expected


def test_user_command_composes_as_written():
    cfg = compose(["model=resnet50", "ham.alpha=200", "sparsifier=acdc"])
    assert cfg.model.name == "resnet50" and cfg.ham.alpha == 200 and cfg.sparsifier.name == "acdc"
    validate(cfg, check_data=False)


def test_paper_recipes_values():
    c = compose(["experiment=cifar100_resnet18"])
    assert (c.optimizer.lr, c.optimizer.weight_decay, c.trainer.epochs, c.trainer.global_batch_size) == \
        (0.2, 1e-4, 150, 512)
    assert (c.ham.alpha, c.ham.beta, c.optimizer.momentum, c.schedule.name) == (200, 16e-3, 0.9, "triangular")
    r = compose(["experiment=imagenet_resnet50"])
    assert (r.optimizer.lr, r.optimizer.weight_decay, r.trainer.epochs, r.trainer.global_batch_size) == \
        (0.25, 5e-5, 100, 1024)
    assert (r.ham.alpha, r.ham.beta) == (200, 1e-3)
    assert compose(["experiment=imagenet_resnet50_200ep"]).trainer.epochs == 200
    d = compose(["experiment=imagenet_deit_small"])
    assert (d.optimizer.name, d.optimizer.lr, d.optimizer.weight_decay, d.trainer.epochs) == ("adamw", 1e-3, 0.1, 300)
    s = compose(["experiment=cifar100_resnet18", "optimizer=sam"])
    assert s.optimizer.sam.rho > 0 and s.optimizer.lr == 0.2  # the preset's lr survives the group swap


def test_quickstart_composes_with_sparsifier_override():
    cfg = compose(["experiment=quickstart", "sparsifier=rigl", "sparsifier.sparsity=0.9"])
    validate(cfg)
    assert cfg.sparsifier.sparsity == 0.9


def test_signin_source_options_are_typed_by_the_source_schema():
    ok = compose(["experiment=quickstart", "sparsifier=signin", "sparsifier.mask_source=rigl",
                  "+sparsifier.source.delta_t=7"])
    validate(ok)
    with pytest.raises(ConfigError, match=r"sparsifier.source.delta_t=0 is not allowed; it must be an integer >= 1"):
        validate(compose(["experiment=quickstart", "sparsifier=signin", "sparsifier.mask_source=rigl",
                          "+sparsifier.source.delta_t=0"]))
    with pytest.raises(ConfigError, match=r"sparsifier.source.delta_t is not an option of mask_source=random"):
        validate(compose(["experiment=quickstart", "sparsifier=signin", "+sparsifier.source.delta_t=7"]))


def test_missing_data_dir_is_a_config_error(tmp_path):
    cfg = compose(["experiment=cifar100_resnet18", f"data_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "nowhere" in str(e.value) and "\n" not in str(e.value)


def test_config_dir_mirrors_package_groups():
    for group in ("model", "dataset", "optimizer", "schedule", "sparsifier", "ham", "logger", "experiment"):
        assert (CONFIG_DIR / group).is_dir()


# ---------------------------------------------------------------- the CLI contract, table-driven
def _corrupt_run_dir(tmp_path):
    rd = tmp_path / "corrupt"
    (rd / "checkpoints").mkdir(parents=True)
    (rd / "checkpoints" / "ckpt_000000010.pt").write_bytes(b"\x00" * 100)
    (rd / "checkpoints" / "ckpt_000000020.pt").write_bytes(b"")
    return rd


# (extra args, text the one line must contain). Every case: experiment=quickstart first.
BAD = [
    (["model=resnet51"], "model=resnet51"),
    (["sparsifier=nope"], "sparsifier=nope"),
    (["optimizer=lion"], "optimizer=lion"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer.lr=abc"], "optimizer.lr"),
    (["optimizer.momentum=1.5"], "optimizer.momentum"),
    (["optimizer=adamw", "optimizer.betas=[0.9]"], "optimizer.betas"),
    (["optimizer=adamw", "optimizer.momentum=0.9"], "optimizer.momentum"),
    (["optimizer=sam", "optimizer.sam.rho=0"], "optimizer.sam.rho"),
    (["sparsifier.sparsity=0.5"], "sparsifier.sparsity"),
    (["sparsifier=random", "sparsifier.sparsity=1.0"], "sparsifier.sparsity"),
    (["sparsifier=random", "sparsifier.distribution=gauss"], "sparsifier.distribution"),
    (["sparsifier=rigl", "sparsifier.delta_t=0"], "sparsifier.delta_t"),
    (["sparsifier=rigl", "sparsifier.drop_fraction=0"], "sparsifier.drop_fraction"),
    (["sparsifier=rigl", "sparsifier.s_init=1"], "sparsifier.s_init"),
    (["sparsifier=acdc", "trainer.epochs=5"], "trainer.epochs=5"),
    (["sparsifier=acdc", "sparsifier.reset_momentum=some"], "sparsifier.reset_momentum"),
    (["sparsifier=str", "sparsifier.threshold_weight_decay=-1"], "sparsifier.threshold_weight_decay"),
    (["sparsifier=signin", "sparsifier.period=0"], "sparsifier.period"),
    (["sparsifier=signin", "sparsifier.mask_source=str"], "sparsifier.mask_source"),
    (["sparsifier=signin", "+sparsifier.source.delta_t=5"], "sparsifier.source.delta_t"),
    (["sparsifier=mw", "sparsifier.gamma=-1"], "sparsifier.gamma"),
    (["trainer.epochs=-3"], "trainer.epochs"),
    (["trainer.epochs=ten"], "trainer.epochs"),
    (["trainer.epochz=3"], "trainer.epochz"),
    (["+trainer.foo=1"], "trainer.foo"),
    (["+foo=1"], "foo"),
    (["trainer.global_batch_size=100000"], "trainer.global_batch_size"),
    (["trainer.precision=fp8"], "trainer.precision"),
    (["trainer.channels_last=maybe"], "trainer.channels_last"),
    (["trainer.label_smoothing=1"], "trainer.label_smoothing"),
    (["ham.alpha=big"], "ham.alpha"),
    (["ham.alpha=nan"], "ham.alpha"),
    (["ham.clamp=0"], "ham.clamp"),
    (["ham.variant=sideways"], "ham.variant"),
    (["ham.backend=cuda"], "ham.backend"),
    (["schedule.name=step"], "schedule.name"),
    (["dataset.options.val_fraction=2"], "dataset.options.val_fraction"),
    (["dataset.loader=dali"], "dataset.loader"),
    (["model=deit_small"], "dataset.img_size"),
    (["model=resnet50", "model.kwargs.zero_init=true"], "model.kwargs.zero_init"),
    (["logger=wandb", "logger.wandb.mode=loud"], "logger.wandb.mode"),
    (["seed=-1"], "seed"),
    (["resume=/definitely/not/here.pt"], "resume"),
    (["dataset=cifar100", "data_dir=/definitely/not/here"], "data_dir"),
    (["hydra.job.chdir=maybe"], "hydra.job.chdir"),
    ("CORRUPT", "every checkpoint is unreadable"),
    # groups that are null by default cannot be filled from the command line (OmegaConf): one line, not a traceback
    (["trainer.mixup={mixup_alpha:0.8}"], "trainer.mixup"),
    (["++trainer.mixup={prob:2}"], "trainer.mixup"),
    (["trainer.mixup.mixup_alpha=0.8"], "trainer.mixup"),
    (["optimizer.sam.rho=0.1"], "optimizer.sam"),
    # interpolations name the key they sit in
    (["ham.alpha=${oc.env:HAM_TEST_NO_SUCH_VAR}"], "ham.alpha"),
    (["ham.alpha=${oc.env:HOME}"], "ham.alpha"),
    (["ham.alpha=${optimizer.nonexistent}"], "ham.alpha"),
    (["data_dir=${oc.env:HAM_TEST_NO_SUCH_VAR}"], "data_dir"),
    # override grammar names the override; run dirs the filesystem refuses
    (["ham.alpha=[1,"], "ham.alpha=[1,"),
    (["hydra.run.dir=/proc/ham_run"], "hydra.run.dir"),
    (["hydra.run.dir=" + "x" * 5000], "hydra.run.dir"),
    (["sparsifier=snip", "sparsifier.batches=0"], "sparsifier.batches"),
    (["ham.max_weight_norm=0"], "ham.max_weight_norm"),
    (["ham.step_biases=sometimes"], "ham.step_biases"),
]


def _bad_run(tmp_path, extra):
    """As users type it: no hydra.run.dir (the default run dir would appear under work/), except for the
    damaged run dir, which is given."""
    work = tmp_path / "work"
    work.mkdir()
    if extra == "CORRUPT":
        return work, ["experiment=quickstart", f"hydra.run.dir={_corrupt_run_dir(tmp_path)}"]
    return work, ["experiment=quickstart", *extra]


def _files(tmp_path):
    return sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("extra,key", BAD, ids=[(" ".join(a) if isinstance(a, list) else a)[:60] for a, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, extra, key):
    """The whole table in-process: train.py's own entry (ham.cli.main), its exit code and output."""
    from ham.cli import main

    work, argv = _bad_run(tmp_path, extra)
    before = _files(tmp_path)
    monkeypatch.chdir(work)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out[-500:], err[-2000:])
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out + err
    assert key in lines[0] and "Traceback" not in err
    assert _files(tmp_path) == before  # nothing created


# the end-to-end promise through a real `python train.py` process: a few cases of each kind (Hydra's own
# composition errors, the schema's checks, a cross-key rule, the run dir's checkpoints)
SUBPROCESS_CASES = ["model=resnet51", "optimizer.lr=abc", "+foo=1", "sparsifier=acdc trainer.epochs=5", "CORRUPT"]


@pytest.mark.parametrize("extra,key", [c for c in BAD if (" ".join(c[0]) if isinstance(c[0], list) else c[0])
                                       in SUBPROCESS_CASES], ids=SUBPROCESS_CASES)
def test_cli_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, extra, key):
    work, argv = _bad_run(tmp_path, extra)
    before = _files(tmp_path)
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], capture_output=True, text=True, cwd=work,
                       timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stdout + p.stderr
    assert key in lines[0] and "Traceback" not in p.stderr
    assert _files(tmp_path) == before  # nothing created


def test_bad_job_in_a_multirun_fails_before_any_job_runs(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "experiment=quickstart",
                        "optimizer.lr=0.1,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "optimizer.lr=-1" in lines[0], p.stdout + p.stderr
    assert not (tmp_path / "sweep").exists()


def test_config_check_does_not_import_torch():
    """--cfg and every config error are answered before torch, timm or wandb is imported (fast answers)."""
    code = ("import sys; from ham.cli import main; "
            "rc = main(['--cfg', 'job', 'experiment=quickstart']); "
            "rc2 = main(['experiment=quickstart', 'optimizer.lr=-1', 'hydra.run.dir=/nonexistent/x']); "
            "print('RESULT', rc, rc2, [m for m in ('torch', 'timm', 'wandb', 'torchvision') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "RESULT 0 2 []" in p.stdout, p.stdout[-1000:] + p.stderr[-2000:]


# paths the other entry points take: one line, exit 2, nothing created (ffcv_write checks its paths and sources
# before it needs ffcv's libraries; --out /proc/x fails at creation, after that check)
def _ffcv_write_cases(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return [(["--dataset", "digits", "--out", "/proc/ham_x"], "--out /proc/ham_x"),
            (["--dataset", "digits", "--out", str(a_file)], f"--out {a_file} is a file"),
            (["--dataset", "cifar100", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "X")],
             "has no CIFAR-100"),
            (["--dataset", "cifar100", "--out", str(tmp_path / "X")], "--data-dir is required")]


def test_ffcv_write_bad_paths_exit_2_with_one_line_and_create_nothing(tmp_path, capsys):
    from ham.data.ffcv_write import main as ffcv_write

    for argv, text in _ffcv_write_cases(tmp_path):
        before = _files(tmp_path)
        rc = ffcv_write(argv)
        out, err = capsys.readouterr()
        if "needs ffcv" in err:  # no ffcv libraries here: the same one line, from the earlier check
            assert rc == 2 and len(err.strip().splitlines()) == 1
            continue
        assert rc == 2 and text in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert _files(tmp_path) == before, argv


@pytest.mark.parametrize("flag", ["--num-workers 0", "--chunksize 0", "--jpeg-quality 200", "--max-resolution 0",
                                  "--val-fraction 2", "--compress-probability 3", "--num-workers x"])
def test_ffcv_write_numbers_out_of_range_exit_2(tmp_path, capsys, flag):
    from ham.data.ffcv_write import main as ffcv_write

    with pytest.raises(SystemExit) as e:  # argparse's own exit: usage + one error line
        ffcv_write(["--dataset", "digits", "--out", str(tmp_path / "Y"), *flag.split()])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip().splitlines()[-1].startswith("python -m ham.data.ffcv_write: error: ")
    assert flag.split()[0] in err.strip().splitlines()[-1] and not any(tmp_path.iterdir())


def test_unknown_completion_shell_is_one_line(tmp_path, monkeypatch, capsys):
    from ham.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["-sc", "install=nosuchshell"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == "error: -sc install=nosuchshell: no completion for 'nosuchshell'; allowed: bash, fish, zsh"
    assert not any(tmp_path.iterdir())
