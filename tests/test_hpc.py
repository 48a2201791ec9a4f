"""HPC robustness (issue 8): SLURM options in one place (CPU partitions too), finished runs untouched by reruns,
sweep identity, collected tables a researcher can trust, W&B failures as one line, and (slow, on the local SLURM
cluster: `bash ../shared/slurm/start-local-slurm.sh`) jobs that outlive their time limit are requeued and finish
with the weights of an uninterrupted run."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ham import sweep
from ham.errors import ConfigError
from ham.slurm import SlurmOptions, time_minutes

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
TINY = ["experiment=quickstart", "trainer.epochs=1", "trainer.max_steps=6", "trainer.log_every_steps=3",
        "trainer.progress_bar=false"]


def run(script, *args, timeout=600, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


def tree_digest(d: Path) -> dict[str, tuple[str, int]]:
    """Every file of a run dir but the run lock (issue 11: it holds the owning process, rewritten by every run)."""
    from ham.lifecycle.runlock import LOCK_NAME

    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


# ---------------------------------------------------------------- SLURM options -> sbatch / submitit
def test_cpu_partition_asks_for_no_gpus_and_tasks_are_free():
    o = SlurmOptions(gpus_per_node=0, tasks_per_node=2, cpus_per_task=1, partition="cpu", qos="short",
                     account="lab", time="00:30:00", constraint="skylake", extra=["mail-type=END", "--exclusive"])
    sb = o.sbatch_options()
    assert "gpus-per-node" not in sb and not any("gres" in k or "gpu" in k for k in sb)
    assert sb["ntasks-per-node"] == "2" and sb["cpus-per-task"] == "1" and sb["partition"] == "cpu"
    assert sb["qos"] == "short" and sb["account"] == "lab" and sb["constraint"] == "skylake"
    assert sb["mail-type"] == "END" and sb["exclusive"] is True and sb["signal"] == "USR1@120"
    ov = o.submitit_overrides()
    assert "hydra/launcher=ham_slurm" in ov and "hydra.launcher.gpus_per_node=null" in ov
    assert "hydra.launcher.tasks_per_node=2" in ov and "hydra.launcher.timeout_min=30" in ov
    assert "hydra.launcher.qos=short" in ov and "+hydra.launcher.additional_parameters.mail_type=END" in ov
    assert SlurmOptions(gpus_per_node=0).tasks == 1 and SlurmOptions().tasks == 4  # default: one task per GPU
    assert [time_minutes(t) for t in ("30", "01:30:00", "2-00:00:00", "0:30")] == [30, 90, 2880, 1]
    with pytest.raises(ValueError, match="gpus_per_node"):
        SlurmOptions(gpus_per_node=-1)


def test_train_sbatch_is_the_generator_output_for_a_4xa100_node():
    text = (ROOT / "slurm" / "train.sbatch").read_text()
    assert text == SlurmOptions().sbatch_script()  # regenerate with: python -m ham.slurm --root submit-dir > slurm/train.sbatch
    assert "#SBATCH --gpus-per-node=4" in text and "#SBATCH --ntasks-per-node=4" in text and "--requeue" in text
    p = subprocess.run([sys.executable, "-m", "ham.slurm", "--gpus-per-node", "0", "--tasks-per-node", "2",
                        "--cpus-per-task", "1", "--time", "5", "experiment=quickstart"], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0 and "gpus" not in "".join(ln for ln in p.stdout.splitlines() if "#SBATCH" in ln)
    assert '"$HAM_ROOT/train.py" experiment=quickstart "$@"' in p.stdout


def test_ham_slurm_launcher_composes_with_our_defaults():
    p = run("train.py", "experiment=quickstart", "hydra/launcher=ham_slurm", "--cfg", "hydra", "-p",
            "hydra.launcher")
    assert p.returncode == 0, p.stderr
    for line in ("tasks_per_node: 4", "gpus_per_node: 4", "cpus_per_task: 16", "max_num_timeout: 3",
                 "signal_delay_s: 120", "SlurmLauncher"):
        assert line in p.stdout


# ---------------------------------------------------------------- finished runs are final
def test_rerunning_a_finished_command_leaves_every_file_byte_identical(tmp_path, capsys):
    """In-process (train.py's own entry); the README's main job, typed twice as a real command, checks the same
    in tests/test_readme.py."""
    from ham.cli import main

    def train(*args):
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    d = tmp_path / "run"
    first = train(*TINY, f"hydra.run.dir={d}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree_digest(d)
    assert "summary.json" in before and "model_final.pt" in before and "metrics.jsonl" in before
    again = train(*TINY, f"hydra.run.dir={d}")
    assert again.returncode == 0 and "already finished" in again.stderr
    after = tree_digest(d)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # every file: same bytes
    # and the run's own files not even rewritten (Hydra rewrites .hydra/*.yaml before the task, same bytes)
    assert {k: v for k, v in after.items() if not k.startswith(".hydra/")} == \
        {k: v for k, v in before.items() if not k.startswith(".hydra/")}
    table = lambda out: out[out.index("train/loss") - 200 if "train/loss" in out else 0:]
    assert table(again.stdout).strip().splitlines()[-3:] == table(first.stdout).strip().splitlines()[-3:]


# ---------------------------------------------------------------- sweep identity
def sweep_inproc(capfd, *argv):
    """sweep.py's own entry in this process (its train.py multiruns are still real processes)."""
    sys.path.insert(0, str(ROOT))
    import sweep as sweep_cli

    capfd.readouterr()
    code = sweep_cli.main(list(argv))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def test_two_grids_get_two_sweep_dirs_and_the_same_grid_the_same_one(tmp_path, capfd, monkeypatch):
    """Without running anything (--dry-run): each grid's own sweep directory, the same grid's again. Running both
    into one root: the slow test below."""
    monkeypatch.chdir(ROOT)
    base = ["experiment=quickstart", "trainer.epochs=1", "trainer.max_steps=3", "--beta", "0", "--seeds", "0",
            "--root", str(tmp_path), "--dry-run"]
    dirs = []
    for alpha in ("0", "20", "0"):
        p = sweep_inproc(capfd, *base, "--alpha", alpha)
        assert p.returncode == 0, p.stderr
        (d,) = set(re.findall(r"hydra\.sweep\.dir=(\S+)", p.stdout))
        assert f"ham.alpha={alpha}" in p.stdout
        dirs.append(d)
    assert dirs[0] != dirs[1] and dirs[0] == dirs[2] and all(d.startswith(str(tmp_path)) for d in dirs)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # two real sweeps (two train.py processes)
def test_two_grids_in_one_root_keep_both_records(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = ["experiment=quickstart", "trainer.epochs=1", "trainer.max_steps=3", "--beta", "0", "--seeds", "0",
            "--root", str(tmp_path)]
    a = sweep_inproc(capfd, *base, "--alpha", "0")
    b = sweep_inproc(capfd, *base, "--alpha", "20")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    sweeps = sorted(tmp_path.iterdir())
    assert len(sweeps) == 2 and all((s / "sweep.json").is_file() for s in sweeps)
    alphas = {json.loads((s / "sweep.json").read_text())["blocks"][0][0] for s in sweeps}
    assert alphas == {"ham.alpha=0", "ham.alpha=20"}
    assert all(len(list(s.glob("*/summary.json"))) == 1 for s in sweeps)
    dry = sweep_inproc(capfd, *base, "--alpha", "0", "--dry-run")
    assert str(sweeps[0]) in dry.stdout or str(sweeps[1]) in dry.stdout  # the same grid: the same sweep dir


def test_dry_run_never_touches_the_data(tmp_path):
    p = run("sweep.py", "data_dir=/nonexistent", "--table", "table7", "--seeds", "0", "--dry-run", "--root",
            str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


# ---------------------------------------------------------------- collected table
def _fake_job(sweep_dir: Path, name: str, cfg: dict, summary: dict | None = None, failed: str | None = None):
    d = sweep_dir / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    if summary is not None:
        (d / "config.yaml").write_text(json.dumps(cfg))
        (d / "summary.json").write_text(json.dumps(summary))
    if failed is not None:
        (d / "failed.json").write_text(json.dumps({"status": "failed", "error": failed}))


def test_collect_shows_n_paper_numbers_and_marks_failed_and_unfinished(tmp_path):
    d = tmp_path / "table7_abc"
    d.mkdir()
    (d / "sweep.json").write_text(json.dumps({"table": "table7", "blocks": [], "extra": [], "expected_jobs": 5}))
    cfg = lambda a, b, s: {"ham": {"alpha": a, "beta": b}, "optimizer": {"sam": False},
                           "trainer": {"epochs": 200}, "seed": s}
    _fake_job(d, "j0", cfg(200, 0.016, 0), {"val/top1": 76.0})
    _fake_job(d, "j1", cfg(200, 0.016, 1), {"val/top1": 77.0})
    _fake_job(d, "j2", cfg(0, 0, 0), failed="data_dir='/x' has no CIFAR-100")
    _fake_job(d, "j3", cfg(0, 0, 1))
    text = sweep.write_reports(d)
    assert text.splitlines()[0] == "## table7_abc: val/top1 (table7)"
    ham_row = next(ln for ln in text.splitlines() if ln.startswith("| HAM | alpha=200,beta=16e-3 |"))
    assert "76.50 ± 0.71 | 2 | 76.12 ± 0.27 | ok |" in ham_row
    base_row = next(ln for ln in text.splitlines() if ln.startswith("| HAM | Baseline |"))
    assert "| — | 0 | 75.25 ± 0.24 | **1 failed, 1 unfinished** |" in base_row
    assert "2 of 5 runs finished; 1 failed, 1 unfinished, 1 not started" in text
    assert "- failed: j2: data_dir='/x' has no CIFAR-100" in text


# ---------------------------------------------------------------- W&B
def test_wandb_without_login_is_one_line_with_the_fix(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    from ham.train.sinks import WandbSink

    for k in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    with pytest.raises(ConfigError) as e:
        WandbSink({}, project="p", mode="online", dir=tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "wandb login" in msg and "WANDB_MODE=offline" in msg


def test_wandb_offline_prints_where_and_the_sync_command(monkeypatch, tmp_path, capsys):
    pytest.importorskip("wandb")
    from ham.train.sinks import WandbSink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    sink = WandbSink({}, project="p", mode="offline", dir=tmp_path / "run")
    sink.log({"train/loss": 1.0}, step=1)
    run_dir = sink.run_dir
    sink.finish()
    err = capsys.readouterr().err
    assert f"W&B offline run saved in {run_dir}; upload it with: wandb sync {run_dir}" in err
    assert run_dir.is_dir() and run_dir.parent == tmp_path / "run" / "wandb"


# ---------------------------------------------------------------- local SLURM cluster (slow)
def _slurm_up() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo"], capture_output=True).returncode == 0


def _partition() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    return out[0].rstrip("*")


def _weights_equal(a: Path, b: Path) -> bool:
    sa, sb = torch.load(a, map_location="cpu"), torch.load(b, map_location="cpu")
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _wait(job_id: str, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        q = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()
        if not q:
            return
        time.sleep(5)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"SLURM job {job_id} still queued after {timeout} s")


# Runs that need ~100 s of training here (digits: ~70 steps/s with 2 DDP ranks, ~110 with one process). SLURM may
# send --signal up to 60 s early (its event resolution), so with a 2-minute limit and a 30 s lead the signal comes
# 30-90 s into each attempt: during training (start-up takes ~10 s). A run needs 2-3 attempts; SLURM holds a
# requeued job ~2 min before it starts again.
def long_run(epochs: int) -> list[str]:
    return ["experiment=quickstart", f"trainer.epochs={epochs}", "trainer.log_every_steps=500",
            "trainer.eval_every_epochs=1000", "trainer.progress_bar=false", "trainer.checkpoint_every_steps=100000"]


@pytest.mark.slow
def test_sbatch_cpu_ddp_job_outlives_its_time_limit_is_requeued_and_matches_an_uninterrupted_run(tmp_path):
    """The generated sbatch script on a CPU partition: 2 DDP tasks x 1 CPU, `--time=2` with a USR1 lead of 30 s.
    The trainer checkpoints and exits 3, the script requeues, the requeued job resumes; the final weights equal
    those of the same 2-task job with a long time limit."""
    if not _slurm_up():
        pytest.skip("no SLURM cluster (start one with ../shared/slurm/start-local-slurm.sh)")
    common = ["--partition", _partition(), "--gpus-per-node", "0", "--tasks-per-node", "2", "--cpus-per-task", "1",
              "--extra", f"output={tmp_path}/slurm-%x-%j.out"]
    ids = {}
    for name, limits in (("cut", ["--time", "2", "--signal-lead-s", "30"]), ("ref", ["--time", "20"])):
        script = tmp_path / f"{name}.sbatch"
        p = subprocess.run([sys.executable, "-m", "ham.slurm", *common, *limits, "--job-name", f"ham-{name}",
                            "-o", str(script), *long_run(160), f"hydra.run.dir={tmp_path / name}"],
                           capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 0, p.stderr
        assert not [ln for ln in script.read_text().splitlines() if ln.startswith("#SBATCH") and "gpu" in ln]
        out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, cwd=ROOT,
                             env={**ENV, "PYTHON": sys.executable})
        assert out.returncode == 0, out.stderr
        ids[name] = out.stdout.strip().split(";")[0]
    for name in ids:
        _wait(ids[name], 1500)
    log = (tmp_path / f"slurm-ham-cut-{ids['cut']}.out").read_text()
    print(log[-3000:])
    assert "requeueing job" in log and "resumed from" in log, log[-3000:]
    assert re.search(r"checkpoint saved at step \d+; exit 3", log), log[-3000:]  # a signal during training
    assert log.count("training on 2 process(es)") >= 2
    for name in ids:
        assert (tmp_path / name / "summary.json").is_file(), (tmp_path / f"slurm-ham-{name}-{ids[name]}.out")
    assert _weights_equal(tmp_path / "cut" / "model_final.pt", tmp_path / "ref" / "model_final.pt")


@pytest.mark.slow
def test_sweep_on_slurm_cpu_one_cell_failing_one_requeued_after_its_time_limit(tmp_path):
    """sweep.py --launcher slurm on a CPU partition: 2 jobs (Hydra's submitit launcher, hydra/launcher=ham_slurm).
    The CIFAR-100 job finds no data on the node: one line in its log, status failed in the collected table. The
    digits job outlives its 2-minute limit: submitit's USR2 -> checkpoint -> requeue -> resume; it finishes with
    the weights of an uninterrupted local run."""
    if not _slurm_up():
        pytest.skip("no SLURM cluster (start one with ../shared/slurm/start-local-slurm.sh)")
    p = run("sweep.py", *long_run(300), "dataset=digits,cifar100", "data_dir=/nonexistent", "--alpha", "20", "--beta",
            "0.001", "--seeds", "0", "--launcher", "slurm", "--partition", _partition(), "--gpus-per-node", "0",
            "--cpus-per-task", "1", "--time", "2", "--signal-lead-s", "30", "--max-requeues", "10",
            "--root", str(tmp_path), "--name", "s", timeout=1800)
    d = tmp_path / "s"
    print(p.stdout[-3000:], p.stderr[-2000:])
    assert p.returncode == 1  # one job failed
    logs = {f.name: f.read_text() for f in (d / ".submitit").rglob("*_log.*")}
    err = "".join(v for k, v in logs.items() if k.endswith(".err"))
    assert "checkpoint saved on SIGUSR2; submitit requeues the job" in err
    assert re.search(r"Requeued job \S+ \(\d+ remaining timeouts\)", "".join(logs.values()))
    assert "error: data_dir='/nonexistent' has no CIFAR-100" in err
    results = (d / "results.md").read_text()
    assert "1 failed" in results and "- failed: dataset=cifar100" in results and "| 1 |" in results
    done = next(d.glob("dataset=digits*"))
    ref = tmp_path / "ref"
    r = run("train.py", *long_run(300), "dataset=digits", "ham.alpha=20", "ham.beta=0.001", "seed=0",
            f"hydra.run.dir={ref}", timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _weights_equal(done / "model_final.pt", ref / "model_final.pt")


def test_sweep_refuses_resources_the_cluster_rejects_before_writing_anything(tmp_path):
    if not _slurm_up():
        pytest.skip("no SLURM cluster (start one with ../shared/slurm/start-local-slurm.sh)")
    p = run("sweep.py", "experiment=quickstart", "--launcher", "slurm", "--partition", "no_such_partition",
            "--root", str(tmp_path))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "SLURM refuses" in p.stderr and "partition" in p.stderr.lower() and not any(tmp_path.iterdir())
