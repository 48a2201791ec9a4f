"""What a newcomer ran into (issue 16), each answered: extras named, overrides anywhere on sweep.py's line,
W&B without a login, submitit's console, results with one seed, threads and workers chosen for the machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ham import extras
from ham.config import explain_hydra_error
from ham.optim import cpu_threads
from ham.train import threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sweep as sweep_cli  # noqa: E402  (the script at the repository root)


# ---------------------------------------------------------------- extras
def test_a_plugin_option_without_its_extra_names_the_extra(monkeypatch):
    from hydra.errors import MissingConfigException

    monkeypatch.setattr(extras, "installed", lambda extra: False)
    for missing, extra in (("hydra/launcher/submitit_local", "slurm"), ("hydra/launcher/submitit_slurm", "slurm"),
                           ("hydra/sweeper/optuna", "hpo")):
        e = MissingConfigException(f"In 'x': Could not find '{missing}'", missing_cfg_file=missing)
        line = explain_hydra_error(e)
        assert f"uv sync --extra {extra}" in line and f"ham-optim[{extra}]" in line and "\n" not in line, line


@pytest.mark.parametrize("args, extra", [(["--launcher", "slurm"], "slurm"), (["--nproc", "2"], "slurm"),
                                         (["--search", "ham_optuna"], "hpo")])
def test_sweep_without_the_extra_is_one_line_exit_2(monkeypatch, capsys, tmp_path, args, extra):
    monkeypatch.setattr(extras, "installed", lambda e: False)
    monkeypatch.chdir(tmp_path)
    code = sweep_cli.main(["experiment=quickstart", *args, "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"uv sync --extra {extra}" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_the_dev_extra_brings_slurm_and_hpo():
    assert extras.installed("slurm") and extras.installed("hpo")  # what `uv sync --extra dev` installed here


# ---------------------------------------------------------------- sweep.py's command line
def test_sweep_overrides_anywhere_on_the_line():
    a = sweep_cli.parse(["experiment=quickstart", "--alpha", "0", "20", "--beta", "0", "1e-3", "--seeds", "0",
                         "trainer.max_steps=44", "--extra", "mail-type=END", "+x=1", "~y"])
    assert a.seeds == [0] and a.alpha == [0.0, 20.0] and a.beta == [0.0, 1e-3]
    assert a.overrides == ["experiment=quickstart", "trainer.max_steps=44", "+x=1", "~y"]
    assert a.extra == ["mail-type=END"]


def test_sweep_help_shows_the_grid_defaults(capsys):
    with pytest.raises(SystemExit):
        sweep_cli.parse(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: [0.0, 200.0])" in out and "(default: [0.0, 0.001]" in out and "(default: [0])" in out


@pytest.mark.parametrize("bad", [["--trials", "0"], ["--nproc", "0"]])
def test_sweep_counts_must_be_positive(bad, capsys):
    with pytest.raises(SystemExit) as e:
        sweep_cli.parse(["experiment=quickstart", *bad])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------- W&B
def test_wandb_online_without_a_login_is_one_line_within_seconds_nothing_created(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env["HOME"] = str(tmp_path / "home")
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=quickstart", "logger=wandb"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "wandb login" in lines[0] and "WANDB_MODE=offline" in lines[0]
    assert list(tmp_path.iterdir()) == []  # HOME was never created either: nothing written


# ---------------------------------------------------------------- results with one seed
def test_a_cell_with_one_run_shows_n_1_and_no_spread():
    agg = __import__("ham.sweep", fromlist=["aggregate"]).aggregate(
        [{"row": "a", "col": "b", "status": "done", "val/top1": 91.0}], ("row", "col"))
    assert agg[0]["n"] == 1 and agg[0]["std"] is None
    from ham.sweep import _pm, _wrap_title

    assert _pm(91.0, None) == "91.00" and "±" not in _pm(91.0, None)
    title = _wrap_title("grid_experiment-quickstart_trainer.max_steps-44_1e8003a1: val/top1", 3.4, 8)
    assert all(len(line) <= 60 for line in title.splitlines()) and title.replace("\n", " ").startswith("grid_")


# ---------------------------------------------------------------- threads and workers
def test_auto_threads_small_model_one_thread_and_cores_split_among_local_ranks(monkeypatch):
    for key in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_CPUS_PER_TASK", "SLURM_NTASKS",
                "SLURM_NTASKS_PER_NODE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 16)  # the library rule the trainer uses
    assert threads.choose_threads("auto", 56_000, 1)[0] == 1
    assert threads.choose_threads("auto", 25_000_000, 1)[0] == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.choose_threads("auto", 25_000_000, 4)[0] == 4
    assert threads.choose_workers("auto", 4) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads("auto", 25_000_000, 4)[0] == 2
    assert threads.choose_threads(3, 56_000, 4) == (3, "trainer.threads")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.cores_per_rank(4) == 8 and threads.choose_workers("auto", 4) == 7
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 1)
    monkeypatch.delenv("SLURM_PROCID")
    assert threads.choose_workers("auto", 1) == 0 and threads.choose_workers(5, 1) == 5


def test_threads_and_workers_accept_auto_or_a_count_only():
    from ham.config import compose, validate
    from ham.errors import ConfigError

    validate(compose(["experiment=quickstart", "trainer.threads=2", "trainer.num_workers=auto"]))
    for bad in ("trainer.threads=0", "trainer.threads=many", "trainer.num_workers=-1"):
        with pytest.raises(ConfigError, match="allowed: auto or an integer"):
            validate(compose(["experiment=quickstart", bad]))


# submitit's console (one line per job, no `%j` folder, a rerun skips finished jobs):
# tests/test_cli.py::test_submitit_local_multirun_complete_run_dirs_reported_and_rerun_skips


# ---------------------------------------------------------------- sweep.py's names and SLURM numbers
@pytest.mark.parametrize("bad, says", [(["--name", "../../../../tmp/elsewhere"], "--name"), (["--name", ".."], "--name"),
                                       (["--launcher", "slurm", "--max-requeues", "-1"], "max_requeues"),
                                       (["--launcher", "slurm", "--signal-lead-s", "-5"], "signal_lead_s")])
def test_sweep_names_stay_under_root_and_slurm_counts_are_checked(bad, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = sweep_cli.main(["experiment=quickstart", "--dry-run", *bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, says", [("optimizer.betas=[0.9,1.5]", "optimizer.betas=[0.9, 1.5] is not allowed"),
                                            ("trainer.epochs=99999999999999999999999", "<= 100000")])
def test_list_elements_and_huge_epochs_are_checked(override, says):
    from ham.config import compose, validate
    from ham.errors import ConfigError

    extra = ["optimizer=adamw"] if "betas" in override else []
    with pytest.raises(ConfigError, match=re.escape(says)):
        validate(compose(["experiment=quickstart", *extra, override]), check_data=False)
