"""sweep.py: grid expansion, paper tables, local launch + collect (table and heatmap), config validation."""

import json
import subprocess
import sys
from pathlib import Path

from ham import sweep

ROOT = Path(__file__).resolve().parent.parent


def test_grid_and_table_expansion():
    jobs = sweep.grid_jobs(["experiment=quickstart"], [0.0, 200.0], [0.0, 1e-3], [0, 1])
    assert len(jobs) == 8 and len({j.name for j in jobs}) == 8
    assert "ham.alpha=200.0" in jobs[-1].overrides and "seed=1" in jobs[-1].overrides
    t2 = sweep.table_jobs("table2", [0])
    assert len(t2) == 16  # {100, 200 ep} x {SGD, SAM} x 4 HAM cells
    t3 = sweep.table_jobs("table3", [0])
    assert len(t3) == (4 * 2 + 3) * 3  # 4 methods with/without HAM + 3 Sign-In rows, 3 sparsities
    assert any("sparsifier.mask_source=rigl" in j.overrides for j in t3)


def test_local_sweep_runs_and_collects(tmp_path):
    cmd = [sys.executable, str(ROOT / "sweep.py"), "experiment=quickstart", "trainer.epochs=4", "--alpha", "0", "200",
           "--beta", "0", "--seeds", "0", "1", "--root", str(tmp_path), "--name", "g"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "g"
    assert (d / "results.md").is_file() and (d / "grid.png").stat().st_size > 1000
    rows = [json.loads((d / j["name"] / "summary.json").read_text()) for j in json.loads((d / "sweep.json").read_text())]
    assert len(rows) == 4 and all(r["val/top1"] > 20 for r in rows)
    text = (d / "results.md").read_text()
    assert "| 0 | 0 |" in text.replace(".0 ", " ") or "| 0.0 | 0.0 |" in text
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.stdout.count("done, skipped") == 4  # rerunning skips finished jobs


def test_bad_config_stops_before_launching(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "experiment=quickstart", "optimizer.lr=-1",
                        "--root", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and "optimizer.lr" in p.stderr
    assert not any(tmp_path.iterdir())
