"""sweep.py: blocks as Hydra multiruns, paper tables, local launch + collect (table and heatmap), resume/skip,
config validation before launching, and an Optuna search collected like a grid."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ham import sweep

ROOT = Path(__file__).resolve().parent.parent


def test_grid_and_table_expansion():
    (grid,) = sweep.grid_blocks(["experiment=quickstart"], [0.0, 200.0], [0.0, 1e-3], [0, 1])
    jobs = grid.jobs()
    assert len(jobs) == 8 and len({tuple(j) for j in jobs}) == 8
    assert ["experiment=quickstart", "ham.alpha=200", "ham.beta=0.001", "seed=1"] in jobs
    t2 = [j for b in sweep.table_blocks("table2", [0]) for j in b.jobs()]
    assert len(t2) == 16  # {100, 200 ep} x {SGD, SAM} x 4 HAM cells
    t3 = [j for b in sweep.table_blocks("table3", [0]) for j in b.jobs()]
    # 3 methods with/without HAM + 3 Sign-In rows at 3 sparsities; STR as published only where a pair is
    # published (90 %) or given (--str-decay)
    assert len(t3) == (3 * 2 + 3) * 3 + 2
    given = {0.8: (-3200.0, 1e-5), 0.95: (-3200.0, 4e-5)}
    assert len([j for b in sweep.table_blocks("table3", [0], str_decay=given) for j in b.jobs()]) == (4 * 2 + 3) * 3
    assert any("sparsifier.mask_source=rigl" in j for j in t3)
    assert len([j for b in sweep.table_blocks("table8", [0, 1, 2]) for j in b.jobs()]) == 6


def test_job_expansion_is_hydras_basic_sweeper():
    """ham.config.expand_jobs (public parser API) expands exactly as Hydra's BasicSweeper does (its private
    split_arguments is the reference here only): ranges, a repeated key, quoted commas, +/~ overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ham.config import expand_jobs
    from ham.errors import ConfigError

    for case in (["experiment=quickstart", "ham.alpha=1,2", "seed=range(0,3)", "ham.alpha=5,6", "model.name='a,b'",
                  "+x=choice(1,2)", "~y"], ["a=1,2", "b='x,y'", "c=[1,2]", "d={a:1}"], []):
        parsed = OverridesParser.create().parse_overrides(case)
        assert expand_jobs(case) == [j for b in BasicSweeper.split_arguments(parsed, None) for j in b]
    with pytest.raises(ConfigError, match="interval sweep"):
        expand_jobs(["ham.alpha=interval(0,1)"])


def test_train_multirun_does_not_check_again_what_sweep_checked(monkeypatch):
    """One check per job: the `train.py -m` sweep.py starts (its task overrides: the block's and the extra ones)
    recognises the jobs check_jobs() checked and skips its own check; anything else is checked there."""
    from omegaconf import OmegaConf

    import ham.config
    from ham.cli import ValidateBeforeStart

    block, extra = sweep.grid_blocks([], [1.0, 2.0], [0.0], [0])[0], ["experiment=quickstart"]
    checked: list[list[list[str]]] = []
    monkeypatch.setattr(ham.config, "check_jobs", lambda jobs, **kw: checked.append(list(jobs)))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    hydra_cfg = OmegaConf.create({"hydra": {
        "overrides": {"task": [*block.overrides, *extra]}, "job": {"config_name": "train"},
        "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}}})
    monkeypatch.setenv(ham.config.JOBS_CHECKED_ENV, sweep.checked_digest(block, extra, sweep.Launch()))
    ValidateBeforeStart().on_multirun_start(hydra_cfg)
    assert checked == []
    for other in (sweep.checked_digest(block, ["experiment=quickstart", "seed=1"], sweep.Launch()),  # other jobs
                  sweep.checked_digest(block, extra, sweep.Launch(nproc=2))):                    # other world
        monkeypatch.setenv(ham.config.JOBS_CHECKED_ENV, other)
        ValidateBeforeStart().on_multirun_start(hydra_cfg)
    monkeypatch.delenv(ham.config.JOBS_CHECKED_ENV)
    ValidateBeforeStart().on_multirun_start(hydra_cfg)
    assert len(checked) == 3 and all(len(jobs) == 2 for jobs in checked)


def test_table_cells_match_the_paper_reference_labels():
    from ham.config import compose
    from omegaconf import OmegaConf

    ref = json.loads(sweep.PAPER_REFERENCE.read_text())
    keys = {"table2": "table2_resnet50_imagenet_dense", "table3": "table3_resnet50_imagenet_sparse",
            "table7": "table7_resnet18_cifar100_dense"}
    for table, key in keys.items():
        cells = set()
        given = {0.8: (-3200.0, 1e-5), 0.95: (-3200.0, 4e-5)}  # STR's unpublished targets, given as a user would
        for b in sweep.table_blocks(table, [0], str_decay=given):
            for job in b.jobs():
                cells.add(sweep.cell_of(table, OmegaConf.to_container(compose(job), resolve=True)))
        rows = {k for k in ref[key] if not k.startswith("_") and k != "columns"} - {"spred", "PILoT"}
        assert {r for r, _ in cells} == rows, table
        assert {c for _, c in cells} == set(ref[key]["columns"]), table
        assert len(cells) == sum(1 for _ in cells) and len(cells) == len(rows) * len(ref[key]["columns"])


def _sweep(tmp_path, *extra):
    cmd = [sys.executable, str(ROOT / "sweep.py"), "experiment=quickstart", "trainer.epochs=2",
           "trainer.max_steps=20", "--root", str(tmp_path), "--name", "g", *extra]
    return cmd, subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def _sweep_inproc(capfd, argv):
    """sweep.py's own entry in this process (its train.py multiruns are still real processes: capfd sees their
    output too)."""
    sys.path.insert(0, str(ROOT))
    import sweep as sweep_cli

    capfd.readouterr()
    try:
        code = sweep_cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def test_local_sweep_runs_collects_and_resumes(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["experiment=quickstart", "trainer.epochs=2", "trainer.max_steps=20", "--root", str(tmp_path),
            "--name", "g", "--alpha", "0", "200", "--beta", "0", "--seeds", "0", "1"]
    p = _sweep_inproc(capfd, argv)
    assert p.returncode == 0, p.stderr[-3000:]
    d = tmp_path / "g"
    assert (d / "results.md").is_file() and (d / "grid.png").stat().st_size > 1000
    runs = sorted(d.glob("*/summary.json"))
    assert len(runs) == 4 and all(json.loads(r.read_text())["steps"] == 20 for r in runs)
    assert {r.parent.name for r in runs} == {
        f"experiment=quickstart,ham.alpha={a},ham.beta=0,seed={s},trainer.epochs=2,trainer.max_steps=20"
        for a in (0, 200) for s in (0, 1)}
    with open(d / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((float(r["alpha"]), int(r["seed"])) for r in rows) == [(0, 0), (0, 1), (200, 0), (200, 1)]
    assert "| 0 | 0 |" in (d / "results.md").read_text() and "| 200 | 0 |" in (d / "results.md").read_text()
    again = _sweep_inproc(capfd, argv)
    assert again.returncode == 0 and again.stderr.count("already finished") == 4  # rerunning skips finished jobs


def test_bad_config_stops_before_launching(tmp_path):
    """A real `python sweep.py` process: exit 2, one line, nothing created."""
    p = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "experiment=quickstart", "optimizer.lr=-1",
                        "--root", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and "optimizer.lr" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_dry_run_prints_the_hydra_multirun_commands(tmp_path, capfd):
    p = _sweep_inproc(capfd, ["--table", "table3", "--seeds", "0", "1", "--launcher", "slurm", "--partition", "gpu",
                              "--gpus-per-node", "4", "--dry-run", "--root", str(tmp_path)])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 3 and all(" -m " in ln and "hydra/launcher=ham_slurm" in ln for ln in lines)
    # STR at 80 and 95 %: no published (s_init, decay) pair, not run; the note says how to calibrate one
    assert "STR s=0.8 is not run" in p.stderr and "--table str_decay" in p.stderr
    assert "hydra.launcher.tasks_per_node=4" in lines[0] and "hydra.launcher.gpus_per_node=4" in lines[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not __import__("importlib").util.find_spec("hydra_plugins.hydra_optuna_sweeper"),
                    reason="needs the hpo extra (installed by CI)")
def test_optuna_search_is_collected_like_a_grid(tmp_path):
    _, p = _sweep(tmp_path, "--search", "ham_optuna", "--trials", "3")
    assert p.returncode == 0, p.stderr[-3000:]
    d = tmp_path / "g"
    runs = sorted(d.glob("*/summary.json"))
    assert len(runs) == 3
    alphas = {json.loads((r.parent / "summary.json").read_text())["config_hash"] for r in runs}
    assert len(alphas) == 3  # three different trials
    assert (d / "grid.png").stat().st_size > 1000 and (d / "optimization_results.yaml").is_file()
    assert "| n |" in (d / "results.md").read_text()


def test_proxy_table_jobs_validate_and_collect_into_the_paired_table(tmp_path, capsys):
    """The proxy table without training (its 24 runs at 3 steps: the slow test below; launching a sweep and
    collecting real runs: test_local_sweep_runs_collects_and_resumes): the 24 jobs compose and validate, and 24
    finished job directories with those configs collect into the paired table, per-seed CSV and plot."""
    from omegaconf import OmegaConf

    from ham.config import compose

    sys.path.insert(0, str(ROOT))
    import sweep as sweep_cli

    blocks = sweep.table_blocks("proxy", [0, 1])
    extra = ["trainer.max_steps=3"]
    assert sweep.check_jobs(blocks, extra, check_data=True) == 24
    d = tmp_path / "p"
    sweep.write_manifest(d, table="proxy", blocks=blocks, extra=extra, expected=24)
    for i, job in enumerate(j for b in blocks for j in b.jobs(extra)):
        cfg = OmegaConf.to_container(compose(job), resolve=True)
        (d / f"job{i}").mkdir()
        (d / f"job{i}" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        top1 = 80.0 + i % 7 + (2.0 if cfg["ham"]["alpha"] else 0.0)  # HAM a little better, not always by as much
        (d / f"job{i}" / "summary.json").write_text(json.dumps({"val/top1": top1, "steps": 3}))
    rep = tmp_path / "rep"
    assert sweep_cli.main(["--collect", str(d), "--report-dir", str(rep)]) == 0
    assert "one-sided paired t-test" in capsys.readouterr().out
    with open(rep / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {r["status"] for r in rows} == {"done"}
    assert sorted(int(r["seed"]) for r in rows) == [0] * 12 + [1] * 12
    text = (rep / "results.md").read_text()
    for row in ("Dense", "Random s=0.95", "AC/DC s=0.95", "RiGL s=0.95", "STR + budget (ours) s=0.95",
                "Sign-In s=0.95"):
        assert f"| {row} | " in text and text.count(f"| {row} |") == 3  # two cells + the paired row
    assert "one-sided paired t-test" in text and (rep / "proxy.png").stat().st_size > 1000


@pytest.mark.slow  # 24 short runs, ~2 min; the default suite: the test above
def test_proxy_table_runs_end_to_end_at_tiny_size(tmp_path):
    """The CPU proxy study's one command: 6 rows x HAM on/off x 2 seeds, paired table, per-seed CSV, plot."""
    rep = tmp_path / "rep"
    p = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "trainer.max_steps=3", "--table", "proxy",
                        "--seeds", "0", "1", "--root", str(tmp_path), "--name", "p", "--report-dir", str(rep)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(rep / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {r["status"] for r in rows} == {"done"}
    text = (rep / "results.md").read_text()
    for row in ("Dense", "Random s=0.95", "AC/DC s=0.95", "RiGL s=0.95", "STR + budget (ours) s=0.95",
                "Sign-In s=0.95"):
        assert f"| {row} | " in text and text.count(f"| {row} |") == 3  # two cells + the paired row
    assert "one-sided paired t-test" in text and (rep / "proxy.png").stat().st_size > 1000
