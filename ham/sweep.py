"""Grids of train.py runs (alpha/beta/seed and the paper's tables): expand -> launch -> collect.

Every job is `python train.py <overrides> hydra.run.dir=<sweep dir>/<job name>`, so a job is resumable by rerunning
the same sweep (finished jobs, those with a summary.json, are skipped). Launchers: `local` (one after another, in
this process's environment; `--nproc N` wraps each in torchrun) and `slurm` (submitit; one SLURM job per run,
N tasks per node = GPUs, all ranks join one DDP group through SLURM_* variables).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ham.config import REPO_ROOT

PAPER_REFERENCE = REPO_ROOT / "results" / "paper_reference.json"


@dataclass
class Job:
    name: str
    overrides: list[str]
    tags: dict[str, Any] = field(default_factory=dict)


def fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def grid_jobs(base: list[str], alphas: Iterable[float], betas: Iterable[float], seeds: Iterable[int]) -> list[Job]:
    jobs = []
    for a, b, s in itertools.product(alphas, betas, seeds):
        jobs.append(Job(f"a{fmt(a)}_b{fmt(b)}_s{s}", [*base, f"ham.alpha={a}", f"ham.beta={b}", f"seed={s}"],
                        {"alpha": a, "beta": b, "seed": s}))
    return jobs


# The paper's tables as grids. Cells are (row label, column label, overrides).
HAM_CELLS = [("Baseline", ["ham=off"]), ("alpha=0,beta=1e-3", ["ham.alpha=0", "ham.beta=1e-3"]),
             ("alpha=200,beta=0", ["ham.alpha=200", "ham.beta=0"]),
             ("alpha=200,beta=1e-3", ["ham.alpha=200", "ham.beta=1e-3"])]


def table_jobs(table: str, seeds: Iterable[int]) -> list[Job]:
    cells: list[tuple[str, str, list[str]]] = []
    if table == "table2":  # ResNet50 ImageNet dense: {100, 200 ep} x {SGD, SAM} x HAM cells
        for exp, ep in (("imagenet_resnet50", "100"), ("imagenet_resnet50_200ep", "200")):
            for opt, label in (("sgd", "HAM"), ("sam", "SAM-HAM")):
                for col, ov in HAM_CELLS:
                    cells.append((f"{label}, {ep} epochs", col, [f"experiment={exp}", f"optimizer={opt}", *ov]))
    elif table == "table7":  # ResNet18 CIFAR100 dense, beta = 16e-3
        for opt, label in (("sgd", "HAM"), ("sam", "SAM-HAM")):
            for col, ov in HAM_CELLS:
                ov = [o.replace("1e-3", "16e-3") for o in ov]
                cells.append((label, col.replace("1e-3", "16e-3"),
                              ["experiment=cifar100_resnet18", f"optimizer={opt}", *ov]))
    elif table == "table3":  # ResNet50 ImageNet sparse, 100 epochs
        methods = [("Random", "random", []), ("AC/DC", "acdc", []), ("RiGL", "rigl", []), ("STR", "str", []),
                   ("Random+Sign-In", "signin", ["sparsifier.mask_source=random"]),
                   ("AC/DC+Sign-In", "signin", ["sparsifier.mask_source=acdc"]),
                   ("RiGL+Sign-In", "signin", ["sparsifier.mask_source=rigl"])]
        for label, sp, extra in methods:
            for ham_label, ham_ov in (("", ["ham=off"]), ("+HAM", ["ham.alpha=200", "ham.beta=1e-3"])):
                if "Sign-In" in label and ham_label:
                    continue  # the paper has no Sign-In+HAM row
                for s in (0.8, 0.9, 0.95):
                    cells.append((label + ham_label, f"s={s}", ["experiment=imagenet_resnet50",
                                                               f"sparsifier={sp}", f"sparsifier.sparsity={s}",
                                                               *extra, *ham_ov]))
    elif table == "table8":
        cells = [("ImageNet+DeiT Small", "AdamW", ["experiment=imagenet_deit_small", "ham=off"]),
                 ("ImageNet+DeiT Small", "AdamW + HAM", ["experiment=imagenet_deit_small"])]
    else:
        raise ValueError(f"unknown table {table!r}; allowed: table2, table3, table7, table8")
    jobs = []
    for row, col, ov in cells:
        for s in seeds:
            slug = f"{row}__{col}".replace(" ", "").replace(",", "_").replace("=", "").replace("+", "p")
            jobs.append(Job(f"{slug}_s{s}", [*ov, f"seed={s}"], {"row": row, "col": col, "seed": s}))
    return jobs


# ---------------------------------------------------------------- launch
def is_done(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def train_command(job: Job, run_dir: Path, extra: list[str], nproc: int = 1) -> list[str]:
    script = str(REPO_ROOT / "train.py")
    launcher = [sys.executable, script] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    return [*launcher, *job.overrides, *extra, f"hydra.run.dir={run_dir}"]


def write_manifest(sweep_dir: Path, jobs: list[Job], extra: list[str]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest = [{"name": j.name, "overrides": [*j.overrides, *extra], "tags": j.tags} for j in jobs]
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest, indent=2))


def launch_local(jobs: list[Job], sweep_dir: Path, extra: list[str], nproc: int = 1) -> dict[str, int]:
    codes = {}
    for i, job in enumerate(jobs, 1):
        run_dir = sweep_dir / job.name
        if is_done(run_dir):
            print(f"[{i}/{len(jobs)}] {job.name}: done, skipped", flush=True)
            continue
        print(f"[{i}/{len(jobs)}] {job.name}", flush=True)
        codes[job.name] = subprocess.call(train_command(job, run_dir, extra, nproc))
        if codes[job.name] == 2:  # bad config: every job of the grid will fail the same way
            print("bad configuration; stopping the sweep", file=sys.stderr)
            break
    return codes


def _slurm_entry(argv: list[str]) -> int:
    """Runs inside each SLURM task: export the DDP variables submitit knows, then train."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    from ham.cli import main

    code = main(argv)
    if code not in (0, 3):
        raise RuntimeError(f"train.py exited with {code}")
    return code


def launch_slurm(jobs: list[Job], sweep_dir: Path, extra: list[str], *, partition: str | None, nodes: int,
                 gpus_per_node: int, cpus_per_task: int, timeout_min: int, account: str | None,
                 wait: bool) -> list[Any]:
    import submitit

    ex = submitit.AutoExecutor(folder=sweep_dir / "_submitit", cluster="slurm")
    tasks = max(1, gpus_per_node)
    params: dict[str, Any] = dict(nodes=nodes, tasks_per_node=tasks, cpus_per_task=cpus_per_task,
                                  timeout_min=timeout_min, slurm_signal_delay_s=120)
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if partition:
        params["slurm_partition"] = partition
    if account:
        params["slurm_account"] = account
    ex.update_parameters(**params)
    submitted = []
    todo = [j for j in jobs if not is_done(sweep_dir / j.name)]
    with ex.batch():
        for job in todo:
            argv = [*job.overrides, *extra, f"hydra.run.dir={sweep_dir / job.name}"]
            submitted.append(ex.submit(_slurm_entry, argv))
    for job, sj in zip(todo, submitted):
        print(f"{job.name}: slurm job {sj.job_id}", flush=True)
    if wait:
        for sj in submitted:
            sj.results()
    return submitted


# ---------------------------------------------------------------- collect
def load_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    rows = []
    for job in manifest:
        summary_path = sweep_dir / job["name"] / "summary.json"
        row = {"name": job["name"], **job["tags"], "status": "done" if summary_path.is_file() else "missing"}
        if summary_path.is_file():
            s = json.loads(summary_path.read_text())
            row.update({k: s.get(k) for k in ("val/top1", "val/top5", "val/loss", "train/loss", "sparsity",
                                              "train/l1_norm", "wall_time_s", "steps")})
        rows.append(row)
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def aggregate(rows: list[dict[str, Any]], keys: tuple[str, ...], metric: str = "val/top1") -> list[dict[str, Any]]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            groups.setdefault(tuple(r.get(k) for k in keys), []).append(float(r[metric]))
    out = []
    for key, vals in groups.items():
        m, sd = mean_std(vals)
        out.append({**dict(zip(keys, key)), "mean": m, "std": sd, "n": len(vals)})
    return out


def write_reports(sweep_dir: Path, metric: str = "val/top1") -> str:
    rows = load_runs(sweep_dir)
    with open(sweep_dir / "runs.csv", "w", newline="") as f:
        cols = sorted({k for r in rows for k in r})
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    keys = ("row", "col") if rows and "row" in rows[0] else ("alpha", "beta")
    agg = aggregate(rows, keys, metric)
    lines = [f"| {keys[0]} | {keys[1]} | {metric} (mean ± std) | n |", "|---|---|---|---|"]
    for a in sorted(agg, key=lambda a: tuple(str(a[k]) for k in keys)):
        lines.append(f"| {a[keys[0]]} | {a[keys[1]]} | {a['mean']:.2f} ± {a['std']:.2f} | {a['n']} |")
    missing = [r["name"] for r in rows if r["status"] != "done"]
    if missing:
        lines.append(f"\n{len(missing)} of {len(rows)} runs have no summary yet: {', '.join(missing[:10])}"
                     + (" ..." if len(missing) > 10 else ""))
    table = "\n".join(lines)
    (sweep_dir / "results.md").write_text(table + "\n")
    if keys == ("alpha", "beta") and agg:
        plot_grid(agg, sweep_dir / "grid.png", metric)
    return table


def plot_grid(agg: list[dict[str, Any]], path: Path, metric: str) -> None:
    """Heatmap of the metric over alpha x beta (the paper's Fig. 6/7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({a["alpha"] for a in agg})
    betas = sorted({a["beta"] for a in agg})
    grid = [[math.nan] * len(alphas) for _ in betas]
    for a in agg:
        grid[betas.index(a["beta"])][alphas.index(a["alpha"])] = a["mean"]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(alphas), 1.0 + 0.7 * len(betas)))
    im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(alphas)), [fmt(a) for a in alphas])
    ax.set_yticks(range(len(betas)), [fmt(b) for b in betas])
    ax.set_xlabel("alpha")
    ax.set_ylabel("beta")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

