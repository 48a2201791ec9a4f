"""benchmarks/gpu_check.py --quick: the GPU proof kit's CPU dry run exercises every part's code path (small
shapes, C kernel instead of Triton, gloo instead of nccl, a Python-level sync counter), so it cannot rot before a
GPU run; and it reports a failing check with a non-zero exit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check


def _run(args, tmp_path):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--out",
                           str(tmp_path), *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)


@pytest.mark.slow  # ~1-2 min, several processes; CI's whole-suite run keeps the script from rotting. The report,
# failure and budget logic: the tests below
def test_quick_dry_run_runs_every_part_and_passes(tmp_path):
    # budgets are sized for a GPU; on a loaded 2-core machine the CPU dry run needs room (the cut logic itself
    # is tested below)
    p = _run(["--budget-scale", "4"], tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "cpu-quick.json").read_text())
    md = (tmp_path / "cpu-quick.md").read_text()
    assert report["passed"] and report["quick"]
    assert list(report["parts"]) == list(gpu_check.PARTS)
    assert all(part["status"] == "ok" for part in report["parts"].values()), report["parts"]
    names = " | ".join(c["name"] for c in report["checks"])
    for needle in ("kernel == reference, float32 channels_last", "bfloat16 channels_last",
                   "HAM(SGD)", "HAM(AdamW)", "HAM(SAM(SGD))", "rigl 90%: pruned weights exactly zero",
                   "every channels_last ResNet weight goes to the fused kernel",
                   "async stop agreement", "DDP(world 1", "0 host syncs per non-logging step: SAM-HAM",
                   "SIGTERM -> exit code 3", "rerun resumes at the checkpoint's step"):
        assert needle in names, needle
    for c in report["checks"]:
        assert f"PASS [{c['part']}] {c['name']}" in md
    figs = report["figures"]
    steps = {r["step"]: r for r in figs["b_step"]["step_table"]}
    assert {"HAM step, fused kernel", "SGD-momentum step, torch fused", "AdamW step, torch foreach"} <= set(steps)
    assert all(r["ms"] > 0 for r in steps.values())
    floor = steps["bandwidth floor: x.mul_(m) over the HAM tensors"]
    assert floor["x floor"] == 1.0 and steps["HAM step, fused kernel"]["x floor"] > 0
    assert figs["b_step"]["fused HAM / bandwidth floor (x.mul_(m), same tensors)"] > 0
    train = [r["variant"] for r in figs["b_train"]["rows"]]
    assert train == ["dense SGD", "+HAM", "+SAM-HAM"] + [f"{s} 90% +HAM" for s in gpu_check.SPARSIFIERS]
    assert all(r["images_per_s"] > 0 for r in figs["b_train"]["rows"])
    assert [r["variant"] for r in figs["b_compile"]["rows"]] == ["dense SGD, compiled", "+HAM, compiled"]
    assert [r["variant"] for r in figs["b_deit"]["rows"]] == ["AdamW", "AdamW + HAM"]
    assert set(figs["b_syncs"]["syncs_per_step"].values()) == {0}
    assert report["versions"]["torch"]


def test_a_failing_check_gives_exit_1_and_a_fail_line(tmp_path, monkeypatch):
    def broken(ctx):
        ctx.check("deliberately failing check", False, "for the test")
        raise RuntimeError("part crashed")

    def fine(ctx):
        ctx.check("a check that passes", True)

    monkeypatch.setitem(gpu_check.RUNNERS, "a_correctness", broken)
    monkeypatch.setitem(gpu_check.RUNNERS, "b_step", fine)
    rc = gpu_check.main(["--quick", "--out", str(tmp_path), "--parts", "a_correctness,b_step"])
    assert rc == 1
    report = json.loads((tmp_path / "cpu-quick.json").read_text())
    assert report["parts"]["a_correctness"]["status"].startswith("error: RuntimeError")
    assert report["parts"]["b_step"]["status"] == "ok"  # the rest still ran
    md = (tmp_path / "cpu-quick.md").read_text()
    assert "FAIL [a_correctness] deliberately failing check" in md and "PASS [b_step] a check that passes" in md


def test_budget_cuts_a_part_and_the_run_goes_on(tmp_path, monkeypatch):
    def slow(ctx):
        ctx.need(1e9, "something that does not fit")

    monkeypatch.setitem(gpu_check.RUNNERS, "b_train", slow)
    monkeypatch.setitem(gpu_check.RUNNERS, "b_deit", lambda ctx: ctx.check("after the cut", True))
    rc = gpu_check.main(["--quick", "--out", str(tmp_path), "--parts", "b_train,b_deit"])
    report = json.loads((tmp_path / "cpu-quick.json").read_text())
    assert rc == 0 and report["parts"]["b_train"]["status"].startswith("cut:")
    assert report["checks"][-1]["name"] == "after the cut"


def test_without_cuda_the_full_run_refuses_and_points_to_quick(capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main([]) == 2
    assert "--quick" in capsys.readouterr().err


def test_gpu_wheel_closure_comes_from_the_lock_with_markers_for_linux_py312():
    import prepare_gpu_wheels as pw

    env = pw.target_environment("3.12")
    closure = pw.locked_closure(ROOT / "uv.lock", pw.MISSING, env)
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "wandb", "pydantic-core", "pyyaml"} <= set(closure)
    assert "colorama" not in closure  # click needs it on Windows only
    assert "torch" not in closure and "numpy" not in closure  # present on the GPU machines
    assert pw.has_only_sdist(ROOT / "uv.lock", "antlr4-python3-runtime")  # built into a py3-none-any wheel
    assert not pw.has_only_sdist(ROOT / "uv.lock", "wandb")


def test_parts_after_the_total_budget_are_skipped_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "TOTAL_GRACE_S", 0)
    monkeypatch.setitem(gpu_check.RUNNERS, "b_train", lambda ctx: __import__("time").sleep(0.6))
    monkeypatch.setitem(gpu_check.RUNNERS, "b_deit", lambda ctx: ctx.check("must not run", False))
    rc = gpu_check.main(["--quick", "--out", str(tmp_path), "--parts", "b_train,b_deit", "--budget-scale", "0.01"])
    report = json.loads((tmp_path / "cpu-quick.json").read_text())
    assert rc == 0 and report["parts"]["b_deit"]["status"].startswith("skipped")
    assert not report["checks"]
