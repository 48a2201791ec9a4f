"""SLURM resources in one place: the options a user gives (tasks per node, CPUs per task, GPUs per node, 0 for a
CPU partition, partition, account, QoS, time, constraint, extra sbatch lines) and the two things made from them:

- an sbatch script for one training run (`slurm/train.sbatch` is this with the defaults, a 4xA100 node):

      python -m ham.slurm --partition cpu --gpus-per-node 0 --tasks-per-node 2 --cpus-per-task 1 > cpu.sbatch
      python -m ham.slurm --partition a100 --time 2-00:00:00 --extra mail-type=END --submit experiment=...

- the `hydra.launcher.*` overrides of Hydra's submitit launcher (configs/hydra/launcher/ham_slurm.yaml) that
  sweep.py appends to every multirun.

Both ask SLURM for a pre-timeout signal and requeue: the sbatch script traps USR1 (the trainer checkpoints, exits 3,
the script requeues); submitit sends USR2 (the trainer checkpoints and hands over to submitit, which requeues, up
to `max_requeues` times).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SBATCH = REPO_ROOT / "slurm" / "train.sbatch"


def time_minutes(time: str) -> int:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes (rounded up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", time.strip())
    if not m:
        raise ValueError(f"time={time!r}: not a SLURM time (e.g. 30, 04:00:00, 2-00:00:00)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        secs = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:   # HH:MM:SS
        secs = a * 3600 + b * 60 + c
    else:                 # MM[:SS]
        secs = a * 60 + (b or 0)
    return max(1, -(-secs // 60))


def _extra_pairs(extra: list[str]) -> list[tuple[str, str | bool]]:
    """'--mail-type=END', 'mail-type=END', '--exclusive' -> (key, value) with value True for a bare flag."""
    out: list[tuple[str, str | bool]] = []
    for item in extra:
        item = item.strip()
        if item.startswith("#SBATCH"):
            item = item[len("#SBATCH"):].strip()
        key, sep, value = item.lstrip("-").partition("=")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise ValueError(f"extra sbatch option {item!r}: expected NAME=VALUE or NAME (e.g. mail-type=END)")
        out.append((key.replace("_", "-"), value if sep else True))
    return out


@dataclass
class SlurmOptions:
    """Defaults: one 4xA100 node (one task per GPU, 16 CPUs each), 24 h, a 120 s pre-timeout signal."""
    nodes: int = 1
    gpus_per_node: int = 4
    tasks_per_node: int | None = None   # None: one per GPU, or 1 on a CPU partition (gpus_per_node=0)
    cpus_per_task: int = 16
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "24:00:00"
    constraint: str | None = None
    mem: str | None = None               # per node, SLURM syntax (e.g. 200G); None: the partition's default
    signal_lead_s: int = 120             # SLURM signals this long before the time limit (checkpoint + requeue)
    max_requeues: int = 3                # submitit: requeues after a time-out (preemptions are always requeued)
    extra: list[str] = field(default_factory=list)  # more sbatch options: "mail-type=END", "exclusive", ...
    job_name: str = "ham"

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node={self.gpus_per_node}: must be >= 0 (0: a CPU partition)")
        for name in ("max_requeues", "signal_lead_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ValueError(f"tasks_per_node={self.tasks_per_node}: must be >= 1")
        time_minutes(self.time)
        _extra_pairs(self.extra)

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    # ------------------------------------------------------------------ the one mapping
    def sbatch_options(self, signal: str = "USR1") -> dict[str, str | bool]:
        """sbatch long options (without --). No GPU request at all when gpus_per_node is 0 (a CPU partition
        rejects any gres)."""
        o: dict[str, str | bool] = {"job-name": self.job_name, "nodes": str(self.nodes),
                                    "ntasks-per-node": str(self.tasks), "cpus-per-task": str(self.cpus_per_task)}
        if self.gpus_per_node:
            o["gpus-per-node"] = str(self.gpus_per_node)
        for key in ("partition", "account", "qos", "constraint", "mem"):
            if getattr(self, key):
                o[key] = str(getattr(self, key))
        o["time"] = self.time
        o["signal"] = f"{signal}@{self.signal_lead_s}"
        o.update(_extra_pairs(self.extra))
        return o

    def submitit_overrides(self) -> list[str]:
        """`hydra.launcher.*` overrides for configs/hydra/launcher/ham_slurm.yaml (Hydra's submitit_slurm)."""
        ov = ["hydra/launcher=ham_slurm", f"hydra.launcher.nodes={self.nodes}",
              f"hydra.launcher.tasks_per_node={self.tasks}", f"hydra.launcher.cpus_per_task={self.cpus_per_task}",
              f"hydra.launcher.gpus_per_node={self.gpus_per_node or 'null'}",
              f"hydra.launcher.timeout_min={time_minutes(self.time)}",
              f"hydra.launcher.signal_delay_s={self.signal_lead_s}",
              f"hydra.launcher.max_num_timeout={self.max_requeues}"]
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                ov.append(f"hydra.launcher.{key}={getattr(self, key)}")
        if self.mem:
            ov.append(f"+hydra.launcher.additional_parameters.mem={self.mem}")
        for key, value in _extra_pairs(self.extra):
            ov.append(f"+hydra.launcher.additional_parameters.{key.replace('-', '_')}="
                      f"{'true' if value is True else value}")
        return ov

    def check(self) -> str | None:
        """Ask the cluster (`sbatch --test-only`) whether it accepts these resources: None if it does (or there is
        no sbatch here), else SLURM's complaint in one line, e.g. "Invalid generic resource (gres) specification"
        when GPUs are asked of a CPU partition."""
        import shutil

        if shutil.which("sbatch") is None:
            return None
        flags = [f"--{k}" if v is True else f"--{k}={v}" for k, v in self.sbatch_options().items()]
        try:
            p = subprocess.run(["sbatch", "--test-only", *flags, "--wrap=true"], capture_output=True, text=True,
                               timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None if isinstance(e, subprocess.TimeoutExpired) else str(e)
        if p.returncode == 0:
            return None
        lines = [ln.removeprefix("sbatch: error: ").strip() for ln in p.stderr.splitlines() if ln.strip()]
        return "; ".join(dict.fromkeys(lines)) or f"sbatch --test-only exited {p.returncode}"

    def describe(self) -> str:
        o = self.sbatch_options()
        return " ".join(f"--{k}" if v is True else f"--{k}={v}" for k, v in o.items() if k not in ("job-name", "signal"))

    def sbatch_script(self, train_args: list[str] = (), root: str | None = None) -> str:
        """root: the clone holding train.py (and .venv); None: the submit directory (slurm/train.sbatch, which
        is submitted from the clone)."""
        opts = {"requeue": True, "open-mode": "append", "output": "slurm-%x-%j.out", **self.sbatch_options()}
        opts = {**self.sbatch_options(), **{k: v for k, v in opts.items() if k not in self.sbatch_options()}}
        header = [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={v}" for k, v in opts.items()]
        args = " ".join(shlex.quote(a) for a in train_args)
        return _SCRIPT.format(header="\n".join(header), lead=self.signal_lead_s,
                              root=shlex.quote(root) if root else "${SLURM_SUBMIT_DIR:-.}",
                              args=f'{args} "$@"' if args else '"$@"')

    # ------------------------------------------------------------------ command line
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser, defaults: SlurmOptions | None = None) -> None:
        d = defaults or SlurmOptions()
        g = p.add_argument_group("SLURM resources (ham/slurm.py)")
        g.add_argument("--nodes", type=int, default=d.nodes)
        g.add_argument("--gpus-per-node", type=int, default=d.gpus_per_node, help="0: a CPU partition (no gres)")
        g.add_argument("--tasks-per-node", type=int, default=d.tasks_per_node,
                       help="DDP ranks per node (default: GPUs per node, or 1 without GPUs)")
        g.add_argument("--cpus-per-task", type=int, default=d.cpus_per_task)
        g.add_argument("--partition", default=d.partition)
        g.add_argument("--account", default=d.account)
        g.add_argument("--qos", default=d.qos)
        g.add_argument("--time", default=d.time, help="SLURM time limit per job (default %(default)s)")
        g.add_argument("--constraint", default=d.constraint)
        g.add_argument("--mem", default=d.mem, help="memory per node, e.g. 200G")
        g.add_argument("--signal-lead-s", type=int, default=d.signal_lead_s,
                       help="seconds before the time limit at which jobs checkpoint and requeue")
        g.add_argument("--max-requeues", type=int, default=d.max_requeues, help="sweep jobs: requeues after time-outs")
        g.add_argument("--extra", action="append", default=[], metavar="OPT",
                       help="another sbatch option, e.g. --extra mail-type=END (repeatable)")

    @classmethod
    def from_args(cls, a: argparse.Namespace, **kw) -> SlurmOptions:
        return cls(nodes=a.nodes, gpus_per_node=a.gpus_per_node, tasks_per_node=a.tasks_per_node,
                   cpus_per_task=a.cpus_per_task, partition=a.partition, account=a.account, qos=a.qos, time=a.time,
                   constraint=a.constraint, mem=a.mem, signal_lead_s=a.signal_lead_s, max_requeues=a.max_requeues,
                   extra=list(a.extra), **kw)


_SCRIPT = """\
#!/bin/bash
# One training run on SLURM, one task per DDP rank (GPU, or CPU process with --gpus-per-node 0); every task runs
# train.py and joins one DDP group through SLURM_PROCID / SLURM_NTASKS (see ham/train/distributed.py).
# Generated by `python -m ham.slurm` (ham/slurm.py); regenerate for other resources, e.g. a CPU partition:
#
#   python -m ham.slurm --partition cpu --gpus-per-node 0 --tasks-per-node 2 --cpus-per-task 4 > cpu.sbatch
#   sbatch slurm/train.sbatch experiment=imagenet_resnet50 data_dir=/datasets/imagenet
#
# The run dir is deterministic per command (runs/<name>_<hash>, or pass hydra.run.dir=...), so a requeued job
# resumes from its last checkpoint. {lead} s before the time limit (and on preemption: SIGTERM) every task gets a
# signal; the trainer saves a checkpoint and exits with 3, and this script requeues the job.
{header}

set -u
cd "${{SLURM_SUBMIT_DIR:-.}}"       # runs/ and slurm-*.out go where you submitted from
HAM_ROOT=${{HAM_ROOT:-{root}}}   # the clone with train.py
PYTHON=${{PYTHON:-$HAM_ROOT/.venv/bin/python}}   # uv's environment there; PYTHON=... for another one

export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=${{MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}}
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-$SLURM_CPUS_PER_TASK}}
export WANDB_RESUME=allow

srun --kill-on-bad-exit=1 "$PYTHON" "$HAM_ROOT/train.py" {args}
code=$?
# 3: the trainer saved a checkpoint on the signal. 138 (128 + USR1): the signal came during start-up, before the
# trainer trapped it (SLURM may send it up to 60 s early): nothing to lose, requeue as well.
if [ "$code" -eq 3 ] || [ "$code" -eq 138 ]; then
    echo "preempted (exit $code): requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$code"
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ham.slurm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_args", nargs="*", help="train.py overrides baked into the script (more at sbatch time)")
    SlurmOptions.add_arguments(p)
    p.add_argument("--job-name", default="ham")
    p.add_argument("--root", default=str(REPO_ROOT),
                   help="the clone whose train.py and .venv the job runs (default: this one, %(default)s, so the "
                        "script can be submitted from any directory); 'submit-dir': the directory sbatch runs in "
                        "(how slurm/train.sbatch is generated)")
    p.add_argument("-o", "--output", type=Path, help="write the script here instead of stdout")
    p.add_argument("--submit", action="store_true", help="sbatch the script now (written to --output or a temp file)")
    a = p.parse_intermixed_args(argv)
    try:
        opts = SlurmOptions.from_args(a, job_name=a.job_name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = opts.sbatch_script(a.train_args, root=None if a.root == "submit-dir" else a.root)
    if not a.submit:
        if a.output:
            a.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    import tempfile

    path = a.output or Path(tempfile.mkstemp(prefix="ham-", suffix=".sbatch")[1])
    path.write_text(text)
    return subprocess.call(["sbatch", str(path)])


if __name__ == "__main__":
    sys.exit(main())
