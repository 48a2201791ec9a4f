"""The README's commands, as users type them: read from README.md's marked blocks (`<!-- test:NAME -->` before
a fenced block), run in a fresh temporary working directory, with no `hydra.run.dir`. Where a command trains for
long it gets `trainer.max_steps=N` appended (the only change). The commands that take minutes (the main job in
full, the grids, the ffcv example, the generated sbatch script's 2-rank job) are marked slow: CI runs them (the
README's CI test command includes slow tests); the default suite runs each at a smaller size here or in the test
file named beside it.

If a test here fails, the README tells users something that is not true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SCRIPTS = {"train.py": ROOT / "train.py", "sweep.py": ROOT / "sweep.py"}


def block(name: str) -> str:
    """The fenced block right after `<!-- test:name -->`."""
    m = re.search(rf"<!-- test:{re.escape(name)} -->\s*```\w*\n(.*?)```", README, re.S)
    assert m, f"README.md has no block marked <!-- test:{name} -->"
    return m.group(1)


def commands(name: str) -> list[str]:
    """The block's command lines, comments removed."""
    out = []
    for line in block(name).splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def argv(command: str) -> list[str]:
    """A README command line -> argv for this environment: `uv run python` / `python` is this interpreter (the
    project's environment, as `uv run` gives it), train.py / sweep.py are the clone's."""
    words = shlex.split(command)
    if words[:3] == ["uv", "run", "python"]:
        words = words[3:]
    elif words[:1] == ["python"]:
        words = words[1:]
    else:
        raise AssertionError(f"not a python command: {command}")
    return [sys.executable, *(str(SCRIPTS.get(w, w)) for w in words[:1]), *words[1:]]


def run(args: list[str], cwd: Path, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else os.environ.copy())


def snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def only_run_dir(cwd: Path, pattern: str) -> Path:
    dirs = sorted((cwd / "runs").glob(pattern))
    assert len(dirs) == 1, sorted(p.name for p in (cwd / "runs").iterdir())
    return dirs[0]


# ---------------------------------------------------------------- the two commands
def _main_job_then_rerun(tmp_path, *extra):
    """The main job's command as written (+ `extra`), then typed again: answers from the finished run, nothing
    rewritten; `--cfg hydra --resolve` of the same command shows the same run dir. Returns the run's summary."""
    main = commands("main")
    assert len(main) == 1
    parts = [p.strip() for p in main[0].split("&&")]
    assert parts[:2] == ["pip install uv", "uv sync --extra dev"]  # the install (done by CI's own sync)
    first = run([*argv(parts[2]), *extra], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = only_run_dir(tmp_path, "quickstart_dense_*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "val top-1 (%)" in first.stdout and f"run dir: {run_dir}" in first.stdout
    assert "CPU threads: 1" in first.stderr  # a 0.06M-parameter CNN: one thread (trainer.threads=auto)
    before = snapshot(run_dir)

    again = run([*argv(parts[2]), *extra], tmp_path)
    assert again.returncode == 0 and "already finished" in again.stderr, again.stderr[-2000:]
    after = snapshot(run_dir)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # same bytes everywhere
    assert {k: v for k, v in after.items() if not k.startswith(".hydra")} == \
        {k: v for k, v in before.items() if not k.startswith(".hydra")}  # the run's files not even rewritten
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run_dir.name]

    shown = run([sys.executable, str(ROOT / "train.py"), "--cfg", "hydra", "--resolve", "experiment=quickstart",
                 *extra], tmp_path)
    assert shown.returncode == 0 and f"dir: runs/{run_dir.name}" in shown.stdout, shown.stdout[:500] + shown.stderr
    return summary


@pytest.mark.slow  # ~1 min; the default suite runs the same command with trainer.max_steps=40 (below)
def test_main_job_as_written_then_rerun_answers_from_the_finished_run(tmp_path):
    summary = _main_job_then_rerun(tmp_path)
    assert summary["steps"] == 1320 and summary["val/top1"] > 95, summary  # the full quickstart learns the digits


def test_main_job_with_few_steps_then_rerun_answers_from_the_finished_run(tmp_path):
    summary = _main_job_then_rerun(tmp_path, "trainer.max_steps=40")
    assert summary["steps"] == 40 and summary["val/top1"] > 30, summary  # 10 classes: chance is 10 %


def test_test_commands_are_what_ci_runs_and_the_default_suite():
    """Two lines: CI's (the whole suite, slow tests included: `-m ''` replaces the default `-m 'not slow'`) and
    the everyday default suite."""
    ci = (ROOT / ".ci" / "run").read_text()
    full, everyday = commands("tests")
    steps = [p.strip() for p in full.split("&&")]
    sync = next(s for s in steps if s.startswith("uv sync"))
    assert sync in ci and "libopencv-dev libturbojpeg0-dev pkg-config" in ci
    assert steps[-1].endswith("uv run pytest -q -m ''") and "pytest -q -m ''" in ci
    assert everyday == "uv run pytest -q"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert """addopts = "-ra -m 'not slow' -n auto --dist loadgroup\"""" in pyproject  # what the everyday command
    # leaves out (slow tests), and how it runs (test processes side by side: tests/conftest.py)


def test_snippet_runs_as_pasted(capsys):
    """The block as it stands, in a fresh namespace (every name it uses it must import itself)."""
    exec(compile(block("snippet"), "README.md:snippet", "exec"), {"__name__": "__main__"})
    assert re.search(r"final loss \d", capsys.readouterr().out)


# ---------------------------------------------------------------- the trainer's commands
def test_users_own_command_without_data_is_one_line_exit_2_nothing_created(tmp_path):
    cmd = commands("trainer")[0]
    assert cmd.startswith("python train.py model=resnet50 ham.alpha=200 sparsifier=acdc")
    p = run(argv(cmd), tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "data_dir" in lines[0] and "ImageNet" in lines[0], p.stderr
    assert list(tmp_path.iterdir()) == []


def test_smoke_command_runs_a_paper_preset_without_its_data(tmp_path, monkeypatch, capsys):
    """In-process (train.py's own entry, ham.cli.main, with the command's arguments) in a fresh working
    directory: the main job above is the README's real-process run."""
    from ham.cli import main

    cmd = commands("trainer")[1]
    assert "smoke=cpu" in cmd
    words = argv(cmd)
    assert words[1] == str(ROOT / "train.py")
    monkeypatch.chdir(tmp_path)
    assert main(words[2:]) == 0, capsys.readouterr().err[-3000:]
    run_dir = only_run_dir(tmp_path, "imagenet_resnet50_smoke_dense_*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and (run_dir / "model_final.pt").is_file()


def test_every_preset_composes_and_validates_with_smoke_cpu():
    from ham.config import compose, validate

    presets = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
    assert "imagenet_resnet50" in presets and "imagenet_deit_small" in presets
    for name in presets:
        cfg = compose([f"experiment={name}", "smoke=cpu"])
        validate(cfg)  # no data anywhere: the stand-in needs none
        assert cfg.dataset.smoke_images == 32 and cfg.trainer.max_steps == 4


def _fake_slurm_bin(d: Path) -> Path:
    """srun starts SLURM_NTASKS copies of its command with their SLURM_PROCID/LOCALID; scontrol answers the two
    questions the script asks."""
    d.mkdir()
    (d / "srun").write_text("""#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i "$@" & pids+=($!); done
code=0
for p in "${pids[@]}"; do wait "$p" || code=$?; done
exit $code
""")
    (d / "scontrol").write_text("""#!/bin/bash
if [ "$1" = show ]; then echo localhost; else echo "scontrol $*" >> "$SLURM_SUBMIT_DIR/scontrol.log"; fi
""")
    for f in ("srun", "scontrol"):
        (d / f).chmod(0o755)
    return d


def _generated_cpu_sbatch_script(tmp_path):
    gen, submit = commands("trainer")[4:6]
    words = shlex.split(gen)
    assert words[-2] == ">"
    work = tmp_path / "work"
    work.mkdir()
    p = run(argv(" ".join(words[:-2])), work)
    assert p.returncode == 0, p.stderr
    script = work / words[-1]
    script.write_text(p.stdout)
    assert shlex.split(submit)[:2] == ["sbatch", words[-1]]
    tasks = int(re.search(r"#SBATCH --ntasks-per-node=(\d+)", p.stdout).group(1))
    assert tasks == 2 and "gpus" not in "".join(ln for ln in p.stdout.splitlines() if ln.startswith("#SBATCH"))
    assert '"$HAM_ROOT/train.py"' in p.stdout
    return work, script, submit, tasks


def test_generated_cpu_sbatch_script_asks_for_two_cpu_tasks(tmp_path):
    """The generator line as written (the 2-rank job it starts: the slow test below; 2-rank gloo DDP itself:
    tests/test_train_e2e.py's DDP tests)."""
    _generated_cpu_sbatch_script(tmp_path)


@pytest.mark.slow
def test_generated_cpu_sbatch_script_runs_two_ddp_ranks_from_any_directory(tmp_path):
    work, script, submit, tasks = _generated_cpu_sbatch_script(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    env.update(PATH=f"{_fake_slurm_bin(tmp_path / 'bin')}:{env['PATH']}", SLURM_JOB_ID=str(4000 + os.getpid() % 9000),
               SLURM_JOB_NODELIST="localhost", SLURM_SUBMIT_DIR=str(work), SLURM_NTASKS=str(tasks),
               SLURM_NNODES="1", SLURM_NTASKS_PER_NODE=str(tasks), SLURM_CPUS_PER_TASK="1")
    job = run(["bash", str(script), *shlex.split(submit)[2:], "trainer.max_steps=20"], work, env=env)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    run_dir = only_run_dir(work, "quickstart_dense_*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20
    assert "training on 2 process(es)" in job.stderr


# ---------------------------------------------------------------- grids
# 24 short runs (~1.5 min). Default suite: the sweep name below (dry run), tests/test_sweep.py's local sweep
# (grid, collect, table, plot, rerun skips) and tests/test_cli.py's multiruns.
@pytest.mark.slow
def test_multirun_and_sweep_grids_and_collect(tmp_path):
    multirun, grid, collect = commands("grids")
    steps = "trainer.max_steps=3"
    p = run([*argv(multirun), steps], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted((tmp_path / "runs" / "multirun").glob("*/summary.json"))
    assert len(jobs) == 12, [j.parent.name for j in jobs]

    p = run([*argv(grid), steps], tmp_path)  # an override after --seeds: accepted anywhere on the line
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"sweep (\S+): 12 jobs in \d+ multirun\(s\) in (\S+)", p.stdout)
    assert m, p.stdout[-2000:]
    sweep_dir = tmp_path / m.group(2)
    assert len(list(sweep_dir.glob("*/summary.json"))) == 12
    written = shlex.split(collect)
    assert written[-2] == "--collect" and written[-1].startswith("runs/sweeps/grid_experiment-quickstart_")
    c = run([*argv(" ".join(shlex.quote(w) for w in written[:-1])), m.group(2)], tmp_path)
    assert c.returncode == 0, c.stderr
    table = (sweep_dir / "results.md").read_text()
    assert table.count("| 2 |") == 6 and (sweep_dir / "grid.png").is_file(), table


def test_sweep_name_in_the_readme_is_what_sweep_prints(tmp_path):
    _, grid, collect = commands("grids")
    p = run([*argv(grid), "--dry-run"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"hydra.sweep.dir={shlex.split(collect)[-1]}" in p.stdout


# ---------------------------------------------------------------- ffcv
# Default suite: tests/test_ffcv.py (the converter on digits, the quickstart learning through dataset.loader=ffcv).
@pytest.mark.slow
def test_ffcv_converter_then_training(tmp_path):
    if importlib.util.find_spec("ffcv") is None and not os.environ.get("HAM_REQUIRE_FFCV"):
        pytest.skip("ffcv is not installed (uv sync --extra ffcv)")
    convert, train = commands("ffcv")
    p = run(argv(convert), tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "digits_ffcv" / "train.beton").is_file()
    t0 = time.time()
    p = run([*argv(train), "trainer.max_steps=40"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = only_run_dir(tmp_path, "quickstart_dense_*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["val/top1"] > 30, (summary, time.time() - t0)
