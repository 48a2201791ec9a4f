"""train.py as a Hydra application: Hydra's own flags, multirun (basic and submitit_local launchers), resume
with a changed config, and (slow) a submitit_slurm multirun on the local SLURM cluster."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["experiment=quickstart", "trainer.epochs=2", "trainer.log_every_steps=5", "trainer.checkpoint_every_steps=1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def train(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


# ---------------------------------------------------------------- Hydra's flags
def flags_inproc(capsys, *args):
    """train.py's own entry in this process (Hydra's flags need no training); --help, --hydra-help and shell
    completion below go through a real `python train.py`."""
    from ham.cli import main

    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def test_cfg_job_resolve_and_package(capsys):
    p = flags_inproc(capsys, "--cfg", "job", "--resolve", "experiment=quickstart", "ham.alpha=7")
    assert p.returncode == 0, p.stderr
    assert "alpha: 7.0" in p.stdout and "model:" in p.stdout and "hydra:" not in p.stdout
    p = flags_inproc(capsys, "--cfg", "job", "--package", "ham", "experiment=quickstart")
    assert p.returncode == 0 and p.stdout.startswith("# @package ham") and "model:" not in p.stdout


def test_cfg_hydra_and_all(tmp_path, capsys):
    p = flags_inproc(capsys, "--cfg", "hydra", f"hydra.run.dir={tmp_path / 'r'}")
    assert p.returncode == 0 and "run:" in p.stdout and "ValidateBeforeStart" in p.stdout
    p = flags_inproc(capsys, "--cfg", "all", "experiment=quickstart")
    assert p.returncode == 0 and "hydra:" in p.stdout and "sparsifier:" in p.stdout
    assert not (tmp_path / "r").exists()


def test_help_lists_groups_options_and_keys():
    p = train("--help")
    assert p.returncode == 0
    for group, option in (("model", "resnet50"), ("sparsifier", "signin"), ("optimizer", "sam"),
                          ("experiment", "imagenet_deit_small"), ("hparams_search", "ham_optuna")):
        line = next(ln for ln in p.stdout.splitlines() if ln.strip().startswith(group + " "))
        assert option in line
    assert "ham.variant: deployed  (deployed|signed)" in p.stdout and "trainer.max_steps" in p.stdout
    assert "schema/" not in p.stdout  # the schema groups are an implementation detail
    assert train("--hydra-help").returncode == 0


def test_info_and_shell_completion(capsys):
    p = flags_inproc(capsys, "--info", "config", "experiment=quickstart")
    assert p.returncode == 0 and "Config search path" in p.stdout and "Defaults List" in p.stdout
    p = train("-sc", "install=bash")
    assert p.returncode == 0 and "complete" in p.stdout
    p = subprocess.run(["bash", "-c", f"COMP_LINE='python {ROOT / 'train.py'} sparsifier=s' COMP_POINT=999 "
                        f"{sys.executable} {ROOT / 'train.py'} -sc query=bash"], capture_output=True, text=True,
                       cwd=ROOT, env=ENV, timeout=120)
    assert "sparsifier=signin" in p.stdout and "sparsifier=str" in p.stdout


# ---------------------------------------------------------------- multirun
def _complete(run_dir: Path) -> bool:
    return all((run_dir / f).exists() for f in ("metrics.jsonl", "summary.json", "config.yaml", "checkpoints",
                                                "model_final.pt"))


def test_multirun_two_jobs_make_two_complete_run_dirs(tmp_path, capsys):
    """The basic launcher runs its jobs in the calling process: in-process here (train.py's own entry)."""
    from ham.cli import main

    args = ["-m", *TINY, "trainer.max_steps=6", "ham.alpha=0,20", f"hydra.sweep.dir={tmp_path}"]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    jobs = sorted(d for d in tmp_path.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [d.name.split(",")[1] for d in jobs] == ["ham.alpha=0", "ham.alpha=20"]
    assert all(_complete(d) for d in jobs)
    a, b = (torch.load(d / "model_final.pt", weights_only=True) for d in jobs)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # alpha really differed
    capsys.readouterr()
    assert main(args) == 0  # rerunning the multirun skips both finished jobs
    assert capsys.readouterr().err.count("already finished") == 2


@pytest.mark.slow  # ~5 process start-ups; the multirun itself (complete dirs, alpha reaches the jobs, a rerun
# skips finished jobs): test_multirun_two_jobs_make_two_complete_run_dirs above
def test_submitit_local_multirun_complete_run_dirs_reported_and_rerun_skips(tmp_path):
    """A real `python train.py -m` with the submitit_local launcher (each job its own process), typed in a fresh
    working directory: two complete run dirs whose alpha really differed, one console line per job, no `%j`
    pattern folder left (issue 16); rerun with a third value: the two finished jobs skipped, the new one runs."""
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "experiment=quickstart", "trainer.max_steps=3",
           "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "ham.alpha=0,20"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert first.stdout.count(": finished, val/top1 ") == 2, first.stdout
    assert not (tmp_path / "runs" / "multirun" / ".submitit" / "%j").exists()
    jobs = sorted(p.parent for p in (tmp_path / "runs" / "multirun").rglob("summary.json"))
    assert len(jobs) == 2 and all(_complete(d) for d in jobs), jobs
    assert sorted(next(w for w in d.name.split(",") if w.startswith("ham.alpha=")) for d in jobs) == \
        ["ham.alpha=0", "ham.alpha=20"]
    a, b = (torch.load(d / "model_final.pt", weights_only=True) for d in jobs)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # alpha really differed
    cmd[-1] = "ham.alpha=0,20,40"
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished (skipped)") == 2 and again.stdout.count(": finished, ") == 1


# ---------------------------------------------------------------- resume with a changed config
# In-process (train.py's own entry, ham.cli.main): these are about what a resume does, not about the process.
def train_inproc(capsys, *args):
    from ham.cli import main

    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def test_resume_with_a_changed_alpha_uses_the_new_alpha(tmp_path, capsys):
    first = tmp_path / "first"
    assert train_inproc(capsys, *TINY, "trainer.max_steps=5", f"hydra.run.dir={first}")[0] == 0
    ckpt = max((first / "checkpoints").glob("ckpt_*.pt"))
    same_dir = tmp_path / "same"
    shutil.copytree(first, same_dir)
    (same_dir / "summary.json").unlink()
    rc, err = train_inproc(capsys, *TINY, "trainer.max_steps=10", "ham.alpha=150", f"hydra.run.dir={same_dir}")
    assert rc == 0, err[-2000:]
    assert "changed config" in err and "ham.alpha: 20.0 -> 150.0" in err
    # the same 5 further steps from the same checkpoint with the OLD alpha, and with the new one via resume=FILE
    old = tmp_path / "old"
    assert train_inproc(capsys, *TINY, "trainer.max_steps=10", f"resume={ckpt}", f"hydra.run.dir={old}")[0] == 0
    new = tmp_path / "new"
    assert train_inproc(capsys, *TINY, "trainer.max_steps=10", "ham.alpha=150", f"resume={ckpt}",
                        f"hydra.run.dir={new}")[0] == 0
    w_same, w_old, w_new = (torch.load(d / "model_final.pt", weights_only=True) for d in (same_dir, old, new))
    assert any(not torch.equal(w_same[k], w_old[k]) for k in w_same)  # the checkpoint's alpha=20 did not win
    for k in w_same:
        assert torch.equal(w_same[k], w_new[k]), k


def test_resume_refuses_a_changed_model(tmp_path, capsys):
    rd = tmp_path / "r"
    assert train_inproc(capsys, *TINY, "trainer.max_steps=3", f"hydra.run.dir={rd}")[0] == 0
    (rd / "summary.json").unlink()
    before = sorted(p.name for p in rd.rglob("*"))
    rc, err = train_inproc(capsys, *TINY, "trainer.max_steps=6", "model=mlp", f"hydra.run.dir={rd}")
    assert rc == 2 and err.count("\n") == 1 and "model.name changed from" in err, err
    assert sorted(p.name for p in rd.rglob("*")) == before


# ---------------------------------------------------------------- SLURM (local cluster)
def _slurm_up() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_submitit_slurm_multirun_two_jobs_with_two_ddp_tasks_each(tmp_path):
    """Needs a SLURM cluster: `bash ../shared/slurm/start-local-slurm.sh` (root) starts one on this machine."""
    if not _slurm_up():
        pytest.skip("no SLURM cluster (start one with ../shared/slurm/start-local-slurm.sh)")
    p = train("-m", *TINY, "trainer.max_steps=4", "ham.alpha=0,20", "hydra/launcher=submitit_slurm",
              "hydra.launcher.partition=debug", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp_path}", timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    jobs = sorted(d for d in tmp_path.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(jobs) == 2 and all(_complete(d) for d in jobs)
    logs = "".join(f.read_text() for f in (tmp_path / ".submitit").rglob("*_log.err"))
    assert logs.count("training on 2 process(es)") == 2  # rank 0 of each job saw a 2-rank DDP group
    assert all(json.loads((d / "summary.json").read_text())["steps"] == 4 for d in jobs)
