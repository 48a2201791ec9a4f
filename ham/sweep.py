"""alpha/beta grids, the paper's tables and Optuna searches, launched as Hydra multiruns of train.py; collected
into one table + heatmap.

A sweep is a list of blocks; each block is one `train.py -m ...` (a cartesian product of comma-separated values),
launched through Hydra's launchers: the basic one (jobs one after another), submitit_local (`--nproc N`: every
job N DDP processes) or submitit_slurm (one SLURM job per run, every task one DDP rank). Jobs land in
<sweep dir>/<job's overrides>, are checked before anything is launched, resume when unfinished and are skipped
when finished (train.py does both), so rerunning a sweep completes it. Collection reads each job's config.yaml
and summary.json, so it needs no bookkeeping beyond the manifest of what was asked for (sweep.json).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ham import registry
from ham.config import REPO_ROOT, job_status
from ham.provenance import provenance
from ham.slurm import SlurmOptions
from ham.train.threads import usable_cores

PAPER_REFERENCE = REPO_ROOT / "results" / "paper_reference.json"
TABLES = ("table2", "table3", "table7", "table8", "proxy", "proxy_mnist", "str_decay", "table10", "table11", "table13", "table14", "node_grid",
          "node_proxy")
# node classification (paper Tables 10-15): the datasets of each table, the models, and their presets
NODE_HOMOPHILIC = ("cora", "citeseer", "pubmed", "wikics", "coauthor-cs", "coauthor-physics", "amazon-computer",
                   "amazon-photo")
NODE_HETEROPHILIC = ("amazon-ratings", "squirrel", "chameleon", "minesweeper", "roman-empire")
NODE_MODELS = ("gcn", "gat", "sage")  # the paper's rows GCN, GAT, SAGE (Luo et al.'s GATConv)
NODE_TABLES = {"table10": NODE_HOMOPHILIC, "table11": NODE_HETEROPHILIC, "table13": NODE_HOMOPHILIC,
               "table14": NODE_HETEROPHILIC, "node_grid": NODE_HOMOPHILIC + NODE_HETEROPHILIC}
NODE_GRID = ((1, 10, 100, 200), (0, 0.01, 0.1))  # the paper's tuning range (appendix D.4)
NODE_PROXY_HAM = ((10.0, 0.01), (-10.0, 0.01))  # node_proxy: HAM and nHAM (alpha, beta), from the paper's grid
# node_proxy's graphs: sparse, few labels, weak features, so that neither model saturates (GCN and SAGE at 100/100 %
# on node_sbm's defaults); homophily 0.6 (homophilic) vs 0.25 (heterophilic)
NODE_PROXY_GRAPH = ("dataset.options.homophily=0.6,0.25", "dataset.options.avg_degree=3",
                    "dataset.options.feature_signal=0.5", "dataset.options.train_fraction=0.05")


def default_metric(table: str | None) -> str:
    """The metric a table reports: node tables the best validation metric (the paper's), others val/top1."""
    return "val/best" if table in NODE_TABLES or table == "node_proxy" else "val/top1"


def node_presets(datasets: Iterable[str]) -> list[str]:
    return [f"node/{d}_{m}" for d in datasets for m in NODE_MODELS]

# STR as published (RAIVNLab/STR configs/largescale/resnet50-str.yaml: ResNet50 90.23 %): the only published
# (s_init, threshold decay) pair found; the other targets' pairs are in the STR paper's appendix, not retrieved.
STR_PUBLISHED = {0.9: (-3200.0, 2.251757813e-5)}

def fmt(v: Any) -> str:
    return "null" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def values(items: Iterable[Any]) -> str:
    return ",".join(fmt(v) for v in items)


@dataclass
class Block:
    """One Hydra multirun: overrides, some with comma-separated sweep values."""
    overrides: list[str]

    def jobs(self, extra: list[str] = ()) -> list[list[str]]:
        """The override list of every job (the sweep syntax expanded as Hydra's basic sweeper does)."""
        from ham.config import expand_jobs

        return expand_jobs([*self.overrides, *extra])


def grid_blocks(base: list[str], alphas: Iterable[float], betas: Iterable[float], seeds: Iterable[int]) -> list[Block]:
    return [Block([*base, f"ham.alpha={values(alphas)}", f"ham.beta={values(betas)}", f"seed={values(seeds)}"])]


def table_blocks(table: str, seeds: Iterable[int], proxy_sparsity: float = 0.95,
                 str_decay: dict[float, tuple[float | None, float]] | None = None, decays: Iterable[float] = (),
                 hams: Iterable[str] = ("off", "default")) -> list[Block]:
    """The paper's tables as multiruns. HAM cells are alpha x beta products ({0, 200} x {0, beta}: the baseline
    is alpha = beta = 0, i.e. ham=off); Sign-In rows have no HAM variant in the paper. STR runs as published
    (mode: reference): a Table 3 STR cell needs its (s_init, threshold decay) pair, published (STR_PUBLISHED) or
    given (`str_decay`, from `--str-decay`; s_init None: the published -3200); a proxy_mnist STR cell its decay
    (s_init None: the preset's); cells without one are not run (see `missing_str_cells`)."""
    s = f"seed={values(seeds)}"
    if table == "table2":  # ResNet50 ImageNet dense: {100, 200 ep} x {SGD, SAM} x HAM cells
        return [Block(["experiment=imagenet_resnet50,imagenet_resnet50_200ep", "optimizer=sgd,sam",
                       "ham.alpha=0,200", "ham.beta=0,0.001", s])]
    if table == "table7":  # ResNet18 CIFAR100 dense, beta = 16e-3
        return [Block(["experiment=cifar100_resnet18", "optimizer=sgd,sam", "ham.alpha=0,200", "ham.beta=0,0.016", s])]
    if table == "table3":  # ResNet50 ImageNet sparse, 100 epochs
        sp = "sparsifier.sparsity=0.8,0.9,0.95"
        blocks = [Block(["experiment=imagenet_resnet50", "sparsifier=random,acdc,rigl", sp, "ham=off,default", s])]
        for target, (s_init, decay) in sorted({**STR_PUBLISHED, **(str_decay or {})}.items()):
            s_init = STR_PUBLISHED[0.9][0] if s_init is None else s_init
            blocks.append(Block(["experiment=imagenet_resnet50", "sparsifier=str", f"sparsifier.sparsity={fmt(target)}",
                                 f"sparsifier.s_init={fmt(s_init)}", f"sparsifier.threshold_weight_decay={fmt(decay)}",
                                 "ham=off,default", s]))
        blocks.append(Block(["experiment=imagenet_resnet50", "sparsifier=signin",
                             "sparsifier.mask_source=random,acdc,rigl", sp, "ham=off", s]))
        return blocks
    if table == "table8":
        return [Block(["experiment=imagenet_deit_small", "ham=off,default", s])]
    if table == "proxy":  # CPU-scale study: dense and every sparsifier at 95 %, HAM on/off, paired by seed
        # its STR cells are our budget controller + projection (they were made when that was the default)
        sp = f"sparsifier.sparsity={fmt(proxy_sparsity)}"
        return [Block(["experiment=proxy_digits", "sparsifier=dense", "ham=off,quickstart", s]),
                Block(["experiment=proxy_digits", "sparsifier=random,acdc,rigl", sp, "ham=off,quickstart", s]),
                Block(["experiment=proxy_digits", "sparsifier=str", sp, "sparsifier.mode=budget",
                       "sparsifier.exact_target=true", "ham=off,quickstart", s]),
                Block(["experiment=proxy_digits", "sparsifier=signin", sp, "ham=off,quickstart", s])]
    if table == "proxy_mnist":  # the second proxy: 28x28 MNIST, every method measurable; README "proxy_mnist"
        # cheapest-first, so that a stopped study has whole rows: dense, Table 7's SAM, Table 8's ViT, STR, the rest
        arms = "ham=off,proxy_mnist"
        blocks = [Block(["experiment=proxy_mnist", "sparsifier=dense", arms, s]),
                  Block(["experiment=proxy_mnist", "sparsifier=dense", "optimizer=sam", arms, s]),  # Table 7
                  # Table 8: AdamW at the paper's lr 1e-3 / decay 0.1 (Table 6) and its alpha=200 (ham=default)
                  Block(["experiment=proxy_mnist", "sparsifier=dense", "model=vit_tiny", "optimizer=adamw",
                         "optimizer.lr=0.001", "optimizer.weight_decay=0.1", "ham=off,default", s])]
        # STR as published: one decay per target for both arms (calibrated with --table str_decay: README)
        for target, (s_init, decay) in sorted((str_decay or {}).items()):
            blocks.append(Block(["experiment=proxy_mnist", "sparsifier=str", f"sparsifier.sparsity={fmt(target)}",
                                 *([] if s_init is None else [f"sparsifier.s_init={fmt(s_init)}"]),
                                 f"sparsifier.threshold_weight_decay={fmt(decay)}", arms, s]))
        for target in (0.9, 0.95):
            blocks.append(Block(["experiment=proxy_mnist", "sparsifier=random,acdc,rigl,signin",
                                 f"sparsifier.sparsity={fmt(target)}", arms, s]))
        return blocks
    if table == "str_decay":  # STR as published: what each threshold decay gives (sparsity reached, accuracy)
        return [Block(["sparsifier=str", "sparsifier.mode=reference", "sparsifier.exact_target=false",
                       f"sparsifier.threshold_weight_decay={values(decays)}", f"ham={values(hams)}", s])]
    if table in NODE_TABLES:  # every preset (configs/experiment/node/) with its Table 12 alpha/beta, and baseline
        presets = ",".join(node_presets(NODE_TABLES[table]))
        base = Block([f"experiment={presets}", "ham.alpha=0", "ham.beta=0", s])
        if table == "node_grid":  # the paper's tuning: every (alpha, beta) of its range
            return [base, Block([f"experiment={presets}", f"ham.alpha={values(NODE_GRID[0])}",
                                 f"ham.beta={values(NODE_GRID[1])}", s])]
        blocks = [base, Block([f"experiment={presets}", s])]
        if table in ("table13", "table14"):  # + nHAM with Table 15's alpha < 0, beta per dataset and model
            nham = json.loads(PAPER_REFERENCE.read_text())["table15_node_best_alpha_beta_nham"]
            for d in NODE_TABLES[table]:
                for m in NODE_MODELS:
                    a, b = nham[d][registry.get("model", m).label]
                    blocks.append(Block([f"experiment=node/{d}_{m}", f"ham.alpha={fmt(float(a))}",
                                         f"ham.beta={fmt(float(b))}", s]))
        return blocks
    if table == "node_proxy":  # CPU-scale: SBM graphs, homophilic and heterophilic, baseline vs HAM vs nHAM
        cells = "model=gcn,sage", *NODE_PROXY_GRAPH
        return [Block(["experiment=node_sbm", *cells, "ham.alpha=0", "ham.beta=0", s]),
                *(Block(["experiment=node_sbm", *cells, f"ham.alpha={fmt(a)}", f"ham.beta={fmt(b)}", s])
                  for a, b in NODE_PROXY_HAM)]
    raise ValueError(f"unknown table {table!r}; allowed: {', '.join(TABLES)}")


def missing_str_cells(table: str, str_decay: dict[float, tuple[float | None, float]] | None) -> list[float]:
    """STR targets of a table with neither a published nor a given (s_init, decay) pair: not run."""
    if table == "table3":
        return [t for t in (0.8, 0.9, 0.95) if t not in {**STR_PUBLISHED, **(str_decay or {})}]
    if table == "proxy_mnist":
        return [t for t in (0.9, 0.95) if t not in (str_decay or {})]
    return []


def split_for_parallel(blocks: list[Block], parts: int) -> list[Block]:
    """Blocks that can run side by side, the same jobs (so the same run directories): each block split into up to
    `parts` blocks along its seeds, or, with one seed, along its longest list of values (contiguous chunks: each
    multirun pays the start-up once)."""
    out = []
    for b in blocks:
        lists = [o for o in b.overrides if "=" in o and "," in o.split("=", 1)[1]]
        seeds = [o for o in lists if o.startswith("seed=")]
        axis = seeds[0] if seeds else max(lists, key=lambda o: o.count(","), default=None)
        if axis is None or parts < 2:
            out.append(b)
            continue
        key, vals = axis.split("=", 1)
        vals = vals.split(",")
        n = min(parts, len(vals))
        bounds = [round(i * len(vals) / n) for i in range(n + 1)]
        for lo, hi in zip(bounds, bounds[1:]):
            out.append(Block([o if o != axis else f"{key}={','.join(vals[lo:hi])}" for o in b.overrides]))
    return out


# ---------------------------------------------------------------- cells of the paper's tables
def _label(sparsifier: str, node: dict[str, Any] | None = None) -> str:
    """The paper's row names (paper_reference.json); an option that makes it another method renames it."""
    d = registry.get("sparsifier", sparsifier)
    return d.schema.row_label(node or {}, d.label)


def _ham_cell(alpha: float, beta: float, beta_on: str) -> str:
    if alpha == 0 and beta == 0:
        return "Baseline"
    return f"alpha={fmt(alpha)},beta={beta_on if beta else 0}"


def cell_of(table: str | None, cfg: dict[str, Any]) -> tuple[str, str]:
    """(row, column) of a finished run in its table, from its config (paper_reference.json's labels)."""
    alpha, beta = cfg["ham"]["alpha"], cfg["ham"]["beta"]
    ham_on = bool(alpha or beta)
    if table in ("table2", "table7"):
        prefix = "SAM-HAM" if cfg["optimizer"].get("sam") else "HAM"
        row = f"{prefix}, {cfg['trainer']['epochs']} epochs" if table == "table2" else prefix
        return row, _ham_cell(alpha, beta, "1e-3" if table == "table2" else "16e-3")
    if table == "table3":
        sp = cfg["sparsifier"]
        if sp["name"] == "signin":
            row = f"{_label(sp['mask_source'])}+{_label('signin')}"
        else:
            row = _label(sp["name"], sp) + ("+HAM" if ham_on else "")
        return row, f"s={fmt(sp['sparsity'])}"
    if table == "table8":
        return "ImageNet+DeiT Small", "AdamW + HAM" if ham_on else "AdamW"
    if table in ("table10", "table11", "table13", "table14"):  # the paper's rows (GCN, GCN+HAM, ...), columns
        arm = "" if not ham_on else "+nHAM" if alpha < 0 else "+HAM"
        return registry.get("model", cfg["model"]["name"]).label + arm, cfg["dataset"]["name"]
    if table == "node_grid":
        return (f"{cfg['dataset']['name']} {registry.get('model', cfg['model']['name']).label}",
                "Baseline" if not ham_on else f"alpha={fmt(alpha)},beta={fmt(beta)}")
    if table == "node_proxy":
        kind = "homophilic" if cfg["dataset"]["options"]["homophily"] >= 0.5 else "heterophilic"
        row = f"{registry.get('model', cfg['model']['name']).label} {kind}"
        return row, "baseline" if not ham_on else "nHAM" if alpha < 0 else "HAM"
    if table in ("proxy", "proxy_mnist"):
        sp = cfg["sparsifier"]
        row = _label(sp["name"], sp) + (f" s={fmt(sp['sparsity'])}" if sp.get("sparsity") else "")
        if table == "proxy_mnist":
            opt = cfg["optimizer"]
            if cfg["model"]["name"] != "mnist_cnn":
                row = f"{registry.get('model', cfg['model']['name']).label} {opt['name']}"
                row = f"{row} (Table 8)" if opt["name"] == "adamw" else row
            elif opt.get("sam"):
                row = "SAM (Table 7)"
        return row, "HAM" if ham_on else "baseline"
    if table == "str_decay":
        sp = cfg["sparsifier"]
        return f"{_label('str', sp)} decay={fmt(sp['threshold_weight_decay'])}", "HAM" if ham_on else "baseline"
    return fmt(alpha), fmt(beta)


# ---------------------------------------------------------------- launch
@dataclass
class Launch:
    """How the jobs run: Hydra launcher overrides appended to every block. On SLURM every resource comes from
    `slurm` (ham/slurm.py, the one place SLURM options become sbatch/submitit parameters)."""
    launcher: str = "local"          # local | slurm
    nproc: int = 1                   # local: DDP processes per job (submitit_local)
    parallel: int = 1                # local: multiruns (blocks) running at once
    slurm: SlurmOptions | None = None

    def overrides(self) -> list[str]:
        if self.launcher == "local":
            if self.nproc <= 1:
                return []
            return ["hydra/launcher=submitit_local", f"hydra.launcher.tasks_per_node={self.nproc}",
                    f"hydra.launcher.cpus_per_task={max(1, usable_cores() // self.nproc)}",
                    "hydra.launcher.timeout_min=1440"]
        return (self.slurm or SlurmOptions()).submitit_overrides()

    def world_size(self) -> int:
        """DDP processes per job (what `train.py -m` reads back from the launcher's settings)."""
        if self.launcher == "local":
            return max(1, self.nproc)
        slurm = self.slurm or SlurmOptions()
        return slurm.nodes * slurm.tasks


def multirun_command(block: Block, sweep_dir: Path, extra: list[str], launch: Launch) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "train.py"), "-m", *block.overrides, *extra, *launch.overrides(),
            f"hydra.sweep.dir={sweep_dir}"]


def check_jobs(blocks: list[Block], extra: list[str], *, check_data: bool, world_size: int = 1) -> int:
    """Compose and validate every job of every block before anything runs (ham.config.check_jobs, the same check
    `train.py -m` makes, which then skips the jobs checked here); raises ConfigError. Returns the count."""
    from ham.config import check_jobs as check

    return check([job for b in blocks for job in b.jobs(extra)], world_size=world_size, check_data=check_data)


def checked_digest(block: Block, extra: list[str], how: Launch) -> str:
    """What tells the `train.py -m` of a block that check_jobs() checked its jobs as it would itself (the same
    world size; the data where this machine reads it)."""
    from ham.config import jobs_digest

    return jobs_digest(block.jobs(extra), world_size=how.world_size(), check_data=how.launcher == "local")


def sweep_name(table: str | None, search: str | None, blocks: list[Block], extra: list[str]) -> str:
    """Readable and unique per request: the same command reuses (resumes) its sweep; a different grid gets its
    own directory instead of overwriting another sweep's manifest."""
    head = table or (f"search_{search}" if search else "grid")
    words = [o.replace("=", "-").replace("/", "-") for o in extra if not o.startswith(("data_dir=", "hydra."))]
    digest = hashlib.sha256(json.dumps([[b.overrides for b in blocks], extra]).encode()).hexdigest()[:8]
    return "_".join([head, *words[:3], digest])[:120]


def write_manifest(sweep_dir: Path, *, table: str | None, blocks: list[Block], extra: list[str], expected: int) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"table": table, "blocks": [b.overrides for b in blocks], "extra": extra, "expected_jobs": expected,
                "provenance": provenance()}
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest, indent=2))


def launch(blocks: list[Block], sweep_dir: Path, extra: list[str], how: Launch) -> list[int]:
    """Run every block's multirun: one after another locally; all at once on SLURM (each waits for its jobs)."""
    from ham.config import JOBS_CHECKED_ENV

    cmds = [multirun_command(b, sweep_dir, extra, how) for b in blocks]
    envs = [{**os.environ, JOBS_CHECKED_ENV: checked_digest(b, extra, how)} for b in blocks]
    with _forward_stop_signals() as running:
        if how.launcher == "local":
            codes, todo, live = [], list(zip(cmds, envs)), []
            while todo or live:
                while todo and len(live) < max(1, how.parallel) and running.stopped is None:
                    cmd, env = todo.pop(0)
                    p = subprocess.Popen(cmd, env=env)  # in the caller's directory: relative paths mean what they say
                    running.procs.append(p)
                    live.append(p)
                if not live:  # stopped: no new blocks; rerunning the sweep resumes
                    break
                done = _wait_any(live)
                live.remove(done)
                codes.append(done.returncode)
        else:
            running.procs.extend(subprocess.Popen(cmd, env=env) for cmd, env in zip(cmds, envs))
            codes = [p.wait() for p in running.procs]
    if running.stopped is not None:  # Ctrl-C: 130; else the children's status (3: checkpointed, requeue)
        if running.stopped == signal.SIGINT:
            raise SystemExit(130)
        raise SystemExit(next((c for c in codes if c), 3 if len(codes) < len(cmds) else 0))
    return codes


def _wait_any(procs: list[subprocess.Popen]) -> subprocess.Popen:
    """The first of `procs` to end (polled: the signal handler above keeps working meanwhile)."""
    import time

    while True:
        for p in procs:
            if p.poll() is not None:
                return p
        time.sleep(0.2)


class _Running:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.stopped: int | None = None


@contextlib.contextmanager
def _forward_stop_signals():
    """SIGTERM/SIGINT/SIGUSR1 to sweep.py go, as they are, to its running train.py children, which checkpoint and
    exit 3 (130 for SIGINT); sweep.py waits for them (no orphan keeps writing into a run dir) and exits with their
    code (130 after a Ctrl-C). A terminal's Ctrl-C reaches the children directly too: train.py counts a SIGINT
    and its forwarded copy, milliseconds apart, as one Ctrl-C (ham/lifecycle/stop.py), so a second Ctrl-C, forwarded
    like the first, stops them at once."""
    running = _Running()

    def forward(signum, _frame):
        if running.stopped is None:
            running.stopped = signum
        for p in running.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signum)

    sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    previous = {}
    for sig in sigs:
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, forward)
    try:
        yield running
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


# ---------------------------------------------------------------- collect
_TABLE_KEY = {"table2": "table2_resnet50_imagenet_dense", "table3": "table3_resnet50_imagenet_sparse",
              "table7": "table7_resnet18_cifar100_dense", "table8": "table8_deit_small_imagenet",
              "table10": "table10_node_homophilic", "table11": "table11_node_heterophilic",
              "table13": "table13_node_homophilic_nham", "table14": "table14_node_heterophilic_nham"}


def paper_value(table: str | None, row: str, col: str) -> tuple[float, float | None] | None:
    """The paper's (mean, std) for a cell of one of its tables (results/paper_reference.json), else None."""
    if table not in _TABLE_KEY or not PAPER_REFERENCE.is_file():
        return None
    ref = json.loads(PAPER_REFERENCE.read_text()).get(_TABLE_KEY[table], {})
    if table == "table8":
        v = ref.get(col)
    else:
        cols, vals = ref.get("columns", []), ref.get(row)
        v = vals[cols.index(col)] if vals is not None and col in cols else None
    if v is None:
        return None
    v = v if isinstance(v, list) else [v, None]
    return (float(v[0]), None if v[1] is None else float(v[1])) if v[0] is not None else None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory Hydra made in the sweep (started, finished or failed)."""
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / "config.yaml").is_file() or (p / ".hydra" / "config.yaml").is_file()))


def load_runs(sweep_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(manifest, one row per job directory: its cell, seed, status (done | failed | unfinished), its error when
    failed, and final metrics)."""
    from omegaconf import OmegaConf

    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    rows = []
    for job in _job_dirs(sweep_dir):
        cfg_path = job / "config.yaml" if (job / "config.yaml").is_file() else job / ".hydra" / "config.yaml"
        try:
            cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False)
            row_label, col_label = cell_of(manifest.get("table"), cfg)
        except Exception as e:  # noqa: BLE001 -- an unreadable job still counts, as failed
            cfg, (row_label, col_label) = {"ham": {}, "seed": None}, ("?", "?")
            rows.append({"name": job.name, "row": row_label, "col": col_label, "status": "failed",
                         "error": f"unreadable config: {e}"})
            continue
        row: dict[str, Any] = {"name": job.name, "row": row_label, "col": col_label,
                               "alpha": cfg["ham"]["alpha"], "beta": cfg["ham"]["beta"], "seed": cfg["seed"]}
        row["status"], s, error = job_status(job)
        if row["status"] == "done":
            row.update({k: s.get(k) for k in ("val/top1", "val/top5", "val/loss", "train/loss", "sparsity",
                                              "train/l1_norm", "wall_time_s", "steps", "val/best",
                                              "test/at_best_val")})
            run = s.get("provenance") or {}
            row.update({"threads": run.get("threads"), "commit": run.get("commit")})
        elif row["status"] == "failed":
            row["error"] = error
        rows.append(row)
    return manifest, rows


def mean_std(vals: list[float]) -> tuple[float, float | None]:
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return m, sd  # sd None for one value: no spread to show (n=1, not ± 0.00)


def aggregate(rows: list[dict[str, Any]], keys: tuple[str, ...], metric: str = "val/top1") -> list[dict[str, Any]]:
    """One entry per cell: mean, std and n of the finished runs' metric, and how many runs failed / are
    unfinished (a cell with only failed runs has mean None)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(tuple(r.get(k) for k in keys), {"vals": [], "failed": 0, "unfinished": 0})
        if r["status"] == "done" and r.get(metric) is not None:
            g["vals"].append(float(r[metric]))
        elif r["status"] == "failed":
            g["failed"] += 1
        elif r["status"] == "unfinished":
            g["unfinished"] += 1
    out = []
    for key, g in groups.items():
        m, sd = mean_std(g["vals"]) if g["vals"] else (None, None)
        out.append({**dict(zip(keys, key)), "mean": m, "std": sd, "n": len(g["vals"]), "failed": g["failed"],
                    "unfinished": g["unfinished"]})
    return out


def _pm(m: float | None, sd: float | None) -> str:
    if m is None:
        return "—"
    return f"{m:.2f}" if sd is None else f"{m:.2f} ± {sd:.2f}"


def provenance_line(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Who made these numbers: the sweep's command and commit, torch, and the runs' CPU threads."""
    p = manifest.get("provenance") or {}
    threads = sorted({r["threads"] for r in rows if r.get("threads") is not None})
    commits = sorted({r["commit"] for r in rows if r.get("commit")})
    return (f"Made by `{p.get('command', '?')}` at commit {p.get('commit') or '?'} (torch {p.get('torch', '?')}, "
            f"{p.get('cpu_cores', '?')} cores); runs used {'/'.join(map(str, threads)) or '?'} CPU thread(s)"
            + (f"; runs finished at {len(commits)} different commits: {', '.join(c[:12] for c in commits)}"
               if len(commits) > 1 else "") + ".")


def write_reports(sweep_dir: Path, metric: str | None = None) -> str:
    """results.md (per cell: mean ± std and n, the paper's number where it has one, failed/unfinished runs
    marked), runs.csv (every run), grid.png (alpha x beta) for grids and searches. metric None: the table's own
    (default_metric)."""
    manifest, rows = load_runs(sweep_dir)
    metric = metric or default_metric(manifest.get("table"))
    with open(sweep_dir / "runs.csv", "w", newline="") as f:
        cols = sorted({k for r in rows for k in r})
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    table = manifest.get("table")
    keys = ("row", "col") if table else ("alpha", "beta")
    agg = aggregate(rows, keys, metric)
    with_paper = table in _TABLE_KEY
    lines = [f"## {sweep_dir.name}: {metric}" + (f" ({table})" if table else ""), "",
             "mean ± std over seeds; n = finished runs" + ("; paper = the paper's mean ± std" if with_paper else ""),
             "",
             f"| {keys[0]} | {keys[1]} | {metric} | n |" + (" paper |" if with_paper else "") + " status |",
             "|---|---|---|---|" + ("---|" if with_paper else "") + "---|"]
    for a in sorted(agg, key=lambda a: tuple(str(a[k]) for k in keys)):
        status = ", ".join(f"{a[k]} {k}" for k in ("failed", "unfinished") if a[k]) or "ok"
        if a["failed"]:
            status = f"**{status}**"
        paper = paper_value(table, str(a["row"]), str(a["col"])) if with_paper else None
        lines.append(f"| {fmt(a[keys[0]])} | {fmt(a[keys[1]])} | {_pm(a['mean'], a['std'])} | {a['n']} |"
                     + (f" {_pm(*paper) if paper else '—'} |" if with_paper else "") + f" {status} |")
    done = sum(r["status"] == "done" for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    unfinished = [r["name"] for r in rows if r["status"] == "unfinished"]
    expected = manifest.get("expected_jobs")
    total = max(expected or 0, len(rows))
    if done < total:
        lines.append(f"\n{done} of {total} runs finished; {len(failed)} failed, {len(unfinished)} unfinished"
                     + (f", {total - len(rows)} not started" if total > len(rows) else ""))
        for r in failed[:10]:
            lines.append(f"- failed: {r['name']}" + (f": {r['error']}" if r.get("error") else ""))
        if unfinished:
            lines.append(f"- unfinished: {', '.join(unfinished[:5])}" + (" ..." if len(unfinished) > 5 else ""))
    if table in ("proxy", "proxy_mnist"):
        lines += ["", *paired_table(rows, metric)]
    if table == "node_proxy":
        for arm in ("HAM", "nHAM"):
            lines += ["", *paired_table(rows, metric, arm=arm)]
    if table == "str_decay":
        lines += ["", *reached_sparsity_table(rows)]
    lines += ["", provenance_line(manifest, rows)]
    text = "\n".join(lines)
    (sweep_dir / "results.md").write_text(text + "\n")
    if not table and any(a["mean"] is not None for a in agg):
        plot_alpha_beta(agg, sweep_dir / "grid.png", metric, title=f"{sweep_dir.name}: {metric}")
    if table in ("proxy", "proxy_mnist", "node_proxy") and agg:
        plot_paired(rows, sweep_dir / "proxy.png", metric, title=f"{sweep_dir.name}: {metric}")
    if table == "proxy_mnist" and agg:
        for key, name in (("train/l1_norm", "l1_norm.png"), ("train/sign_flips", "sign_flips.png")):
            plot_curves(sweep_dir, rows, sweep_dir / name, key)
    return text


def paired_differences(rows: list[dict[str, Any]], metric: str,
                       arm: str = "HAM") -> dict[str, list[tuple[int, float, float]]]:
    """row -> [(seed, baseline, arm)] for the seeds that have both runs finished (arm: HAM, or nHAM)."""
    by: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            by.setdefault((r["row"], r["seed"]), {})[r["col"]] = float(r[metric])
    out: dict[str, list[tuple[int, float, float]]] = {}
    for (row, seed), cols in sorted(by.items()):
        if {"baseline", arm} <= set(cols):
            out.setdefault(row, []).append((seed, cols["baseline"], cols[arm]))
    return out


def paired_table(rows: list[dict[str, Any]], metric: str, arm: str = "HAM") -> list[str]:
    """Per row: baseline and HAM (or `arm`) mean ± std over seeds, the paired difference, HAM's wins, and a
    one-sided paired t-test of "HAM improves this row" (scipy), with Holm's correction for testing every row at
    once."""
    from scipy import stats

    reached = paired_differences(rows, "sparsity", arm)  # the sparsity each run reached (STR: what it learned)
    sparse = any(b or h for t in reached.values() for _, b, h in t)
    lines = [f"Paired by seed ({metric}; one-sided paired t-test, H1: {arm} > baseline; p (Holm): corrected for the "
             f"number of rows tested)" + (f"; sparsity: mean reached, baseline / {arm}" if sparse else ""), "",
             f"| row | baseline | {arm} | {arm} - baseline | {arm} wins | p | p (Holm) |" + (" sparsity |" if sparse else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if sparse else "")]
    cells = []
    for row, triples in paired_differences(rows, metric, arm).items():
        base = [b for _, b, _ in triples]
        ham = [h for _, _, h in triples]
        diff = [h - b for b, h in zip(base, ham)]
        (mb, sb), (mh, sh), (md, sd) = mean_std(base), mean_std(ham), mean_std(diff)
        p = float(stats.ttest_rel(ham, base, alternative="greater").pvalue) if len(diff) > 1 and sd else \
            float("nan")
        cells.append((row, mb, sb, mh, sh, md, sd, sum(d > 0 for d in diff), len(diff), p))
    adjusted = holm([c[-1] for c in cells])
    for (row, mb, sb, mh, sh, md, sd, wins, n, p), p_holm in zip(cells, adjusted):
        sp = ""
        if sparse:
            t = reached.get(row, [])
            sp = (f" {100 * mean_std([b for _, b, _ in t])[0]:.2f} / {100 * mean_std([h for _, _, h in t])[0]:.2f} |"
                  if t else " — |")
        lines.append(f"| {row} | {_pm(mb, sb)} | {_pm(mh, sh)} | {md:+.2f}{'' if sd is None else f' ± {sd:.2f}'} | "
                     f"{wins}/{n} | {p:.3g} | {p_holm:.3g} |" + sp)
    return lines


def reached_sparsity_table(rows: list[dict[str, Any]]) -> list[str]:
    """str_decay: the sparsity STR reached (%) per decay and arm, mean ± std over seeds, next to its accuracy."""
    lines = ["Sparsity reached by STR as published (%, mean ± std over seeds; val/top1 beside it)", "",
             "| row | col | sparsity | val/top1 | n |", "|---|---|---|---|---|"]
    sp = {(a["row"], a["col"]): a for a in aggregate(rows, ("row", "col"), "sparsity")}
    acc = {(a["row"], a["col"]): a for a in aggregate(rows, ("row", "col"), "val/top1")}
    for key in sorted(sp, key=lambda k: (float(k[0].rsplit("=", 1)[-1]) if k[0].rsplit("=", 1)[-1] else 0, k[1])):
        a = sp[key]
        m, sd = (None, None) if a["mean"] is None else (100 * a["mean"], None if a["std"] is None else 100 * a["std"])
        lines.append(f"| {key[0]} | {key[1]} | {_pm(m, sd)} | {_pm(acc[key]['mean'], acc[key]['std'])} | {a['n']} |")
    return lines


def plot_curves(sweep_dir: Path, rows: list[dict[str, Any]], path: Path, key: str) -> None:
    """The paper's Fig. 4/5 from the sweep's own runs: `key` (train/l1_norm, train/sign_flips) against the step,
    one panel per dense row, baseline grey and HAM blue, every seed one line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = sorted({r["row"] for r in rows if r["status"] == "done" and not r.get("sparsity")})
    if not dense:
        return
    fig, axes = plt.subplots(1, len(dense), figsize=(4.2 * len(dense), 3.4), squeeze=False)
    for ax, row in zip(axes[0], dense):
        for r in rows:
            if r["row"] != row or r["status"] != "done":
                continue
            steps, vals = [], []
            with open(sweep_dir / r["name"] / "metrics.jsonl") as f:
                for line in f:
                    m = json.loads(line)
                    if key in m:
                        steps.append(m["step"])
                        vals.append(m[key])
            ham = r["col"] == "HAM"
            ax.plot(steps, vals, color="tab:blue" if ham else "tab:gray", lw=0.8, alpha=0.8,
                    label=("HAM" if ham else "baseline") if r["seed"] == min(x["seed"] for x in rows) else None)
        ax.set_title(row, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted as a test)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        out[i] = running
    return out


def plot_paired(rows: list[dict[str, Any]], path: Path, metric: str, title: str | None = None) -> None:
    """Baseline vs HAM per row: mean ± std bars and every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = paired_differences(rows, metric)
    names = list(pairs)
    fig, ax = plt.subplots(figsize=(1.4 + 1.3 * len(names), 4.0))
    for j, (col, dx, colour) in enumerate((("baseline", -0.18, "tab:gray"), ("HAM", 0.18, "tab:blue"))):
        vals = [[t[1 + j] for t in pairs[n]] for n in names]
        means = [mean_std(v)[0] for v in vals]
        stds = [mean_std(v)[1] or 0.0 for v in vals]  # one seed: no error bar
        xs = [i + dx for i in range(len(names))]
        ax.bar(xs, means, width=0.34, yerr=stds, color=colour, alpha=0.6, label=col, capsize=3)
        for x, v in zip(xs, vals):
            ax.scatter([x] * len(v), v, s=8, color="k", zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    lo = min(t[k] for n in names for t in pairs[n] for k in (1, 2))
    ax.set_ylim(max(0.0, lo - 3), 100.5 if "top1" in metric else None)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(_wrap_title(title, fig.get_figwidth(), 8), fontsize=8)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def copy_reports(sweep_dir: Path, report_dir: Path | None) -> None:
    """The sweep's small outputs (tables, CSV, plots; not the run directories) into `report_dir`."""
    if report_dir is None:
        return
    import shutil

    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.md", "runs.csv", "grid.png", "proxy.png", "l1_norm.png", "sign_flips.png", "sweep.json"):
        if (sweep_dir / name).is_file():
            shutil.copy2(sweep_dir / name, report_dir / name)


def _wrap_title(title: str, fig_width_in: float, fontsize: float) -> str:
    import textwrap

    chars = max(20, int(fig_width_in * 72 / (0.62 * fontsize)) - 4)
    return "\n".join(textwrap.wrap(title, chars, break_on_hyphens=False)) if len(title) > chars else title


def plot_alpha_beta(agg: list[dict[str, Any]], path: Path, metric: str, title: str | None = None) -> None:
    """A heatmap over alpha x beta (the paper's Fig. 6/7) for grids; a scatter coloured by the metric when the
    points do not form a grid (an Optuna search)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({a["alpha"] for a in agg})
    betas = sorted({a["beta"] for a in agg})
    is_grid = len(agg) == len(alphas) * len(betas) and len(alphas) * len(betas) <= 144
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * min(len(alphas), 8), 1.0 + 0.7 * min(len(betas), 8)) if is_grid
                           else (6, 4.5))
    if is_grid:
        grid = [[math.nan] * len(alphas) for _ in betas]
        for a in agg:
            grid[betas.index(a["beta"])][alphas.index(a["alpha"])] = math.nan if a["mean"] is None else a["mean"]
        im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(alphas)), [fmt(a) for a in alphas])
        ax.set_yticks(range(len(betas)), [fmt(b) for b in betas])
        for a in agg:
            i, j = betas.index(a["beta"]), alphas.index(a["alpha"])
            spread = "" if a["std"] is None else f"±{a['std']:.2f} "
            label = "" if a["mean"] is None else f"{a['mean']:.2f}\n{spread}(n={a['n']})"
            if a["failed"] or a["unfinished"]:
                label += "\n" + ", ".join(f"{a[k]} {k}" for k in ("failed", "unfinished") if a[k])
            ax.text(j, i, label, ha="center", va="center", color="w" if a["mean"] is not None else "r", fontsize=7)
    else:
        done = [a for a in agg if a["mean"] is not None]
        im = ax.scatter([a["alpha"] for a in done], [a["beta"] for a in done], c=[a["mean"] for a in done],
                        cmap="viridis", s=60, edgecolors="k")
        bad = [a for a in agg if a["mean"] is None]
        if bad:
            ax.scatter([a["alpha"] for a in bad], [a["beta"] for a in bad], marker="x", color="r", label="failed")
            ax.legend(fontsize=7)
        best = max(done, key=lambda a: a["mean"])
        ax.annotate(f"best {best['mean']:.2f}", (best["alpha"], best["beta"]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.set_xlabel("alpha")
    ax.set_ylabel("beta")
    if title:  # wrapped to the figure's width: a sweep name is long
        ax.set_title(_wrap_title(title, fig.get_figwidth(), 8), fontsize=8)
    fig.colorbar(im, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
