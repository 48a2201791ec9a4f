"""`train.py`'s body: a Hydra app whose bad input exits 2 with one line, before anything is created.

    train.py:  @hydra.main(configs/train.yaml) -> ham.cli.train(cfg)      (run_cli maps exceptions to exit codes)
    before Hydra creates the run dir:  ValidateBeforeStart.on_run_start / on_multirun_start -> validate()
    train(cfg):  finished? -> skip | resume checks -> DDP -> ham.train.loop -> summary

Exit codes: 0 done, 1 failure (NaN loss, a full disk: one line; a bug: traceback), 2 bad input (one line; also a run
directory in use by another process, or no usable checkpoint), 3 preempted (a stop signal: checkpoint saved, or
stopped before the first step with nothing new to save; requeue either way), 130 interrupted by Ctrl-C (SIGINT:
handled like a stop signal, but 128 + SIGINT as a shell reports it, so a scheduler never requeues a run a person
stopped; a second Ctrl-C exits 130 at once). Stop signals are handled from train.py's first line to the
end of interpreter shutdown (ham/train/stop.py); the run directory is locked for the life of the run
(ham/train/runlock.py). train.py sets HYDRA_FULL_ERROR=1 so that Hydra's own errors reach run_cli as exceptions instead of
multi-line reports; run_cli turns each into one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ham.config import register_resolvers
from ham.errors import ConfigError, Preempted, StorageError
from ham.train import runlock, stop
from ham.train.world import detect_world

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PREEMPTED = 0, 1, 2, 3
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}

# at import: a launcher's job process (submitit) unpickles `train` from here and resolves train.yaml's
# interpolations before any of our code runs
register_resolvers()


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def _world_size() -> int:
    return detect_world()[1]


def _rank() -> int:
    return detect_world()[0]


def _task_config(config: DictConfig) -> DictConfig:
    cfg = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"])
    OmegaConf.resolve(cfg)
    return cfg


# ------------------------------------------------------------------ before anything is created
def _exit_on_config_error(check: Callable[..., None]) -> Callable[..., None]:
    """Hydra swallows a callback's exceptions (it only warns): a bad config must stop the process here, with
    its one line and exit 2, before the run/sweep directory exists."""
    def wrapped(self: Any, config: DictConfig, **kwargs: Any) -> None:
        try:
            check(self, config, **kwargs)
        except ConfigError as e:
            if _rank() == 0:
                _err(str(e))
            raise SystemExit(EXIT_CONFIG) from None

    return wrapped


class ValidateBeforeStart(Callback):
    """Hydra callback (configs/train.yaml `hydra.callbacks`): runs after composition, before Hydra creates the
    run/sweep directory, so a bad config leaves nothing behind."""

    @_exit_on_config_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ham.config import validate

        run_dir = Path(str(config.hydra.run.dir))
        validate(_task_config(config), world_size=_world_size(), run_dir=run_dir)
        if run_dir.is_dir():
            if _rank() == 0:  # another process writing there: refuse before Hydra writes .hydra/ into it
                runlock.acquire(run_dir)
        else:
            _CREATED_BY_US.add(str(run_dir.resolve()))

    @_exit_on_config_error
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Compose and check every job of the sweep up front: a typo fails here, not in the 40th SLURM job."""
        from hydra import compose
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from ham.config import validate

        overrides = [str(o) for o in config.hydra.overrides.task]
        parsed = OverridesParser.create().parse_overrides(overrides)
        launcher = config.hydra.launcher
        in_process = str(launcher.get("_target_", "")).endswith("BasicLauncher")
        # submitit: every task is one DDP rank; on SLURM the data often exists only on the compute nodes, so
        # each job checks it there
        world = _world_size() if in_process else int(launcher.get("tasks_per_node") or 1) * int(
            launcher.get("nodes") or 1)
        data_here = in_process or "LocalLauncher" in str(launcher.get("_target_", ""))
        if str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        else:  # a search sweeper (optuna) picks values itself: check the base config
            jobs = [[o.input_line for o in parsed if not o.is_sweep_override()]]
        self._multirun_started = time.time()
        seen_data: set[tuple] = set()
        for job in jobs:
            try:
                cfg = compose(config_name=str(config.hydra.job.config_name), overrides=list(job))
                OmegaConf.resolve(cfg)
            except Exception as e:  # noqa: BLE001
                from ham.config import explain_hydra_error

                raise ConfigError(f"job {' '.join(job)}: {explain_hydra_error(e)}") from None
            key = (cfg.dataset.name, cfg.data_dir, cfg.trainer.global_batch_size)
            try:
                validate(cfg, world_size=world, check_data=data_here and key not in seen_data)
            except ConfigError as e:
                raise ConfigError(f"job {' '.join(job)}: {e}") from None
            seen_data.add(key)


    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Launchers that run jobs in other processes (submitit) print nothing of them here: one line per job of
        this multirun (finished now, already finished and skipped, failed, unfinished), and no empty `%j`
        folder (submitit creates its folder pattern before the job ids exist)."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if str(config.hydra.launcher.get("_target_", "")).endswith("BasicLauncher") or not sweep_dir.is_dir():
            return
        with contextlib.suppress(OSError):
            (sweep_dir / ".submitit" / "%j").rmdir()
        if _rank() == 0:
            for line in job_recap(sweep_dir, since=getattr(self, "_multirun_started", 0.0)):
                print(line, flush=True)


def job_recap(sweep_dir: Path, since: float) -> list[str]:
    """One line per job directory Hydra (re)wrote since `since`."""
    lines = []
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "hydra.yaml").is_file()):
        if (job / ".hydra" / "hydra.yaml").stat().st_mtime < since - 1:
            continue  # a job of an earlier multirun in the same sweep dir
        summary, failed = job / "summary.json", job / FAILED_MARK
        if summary.is_file():
            with contextlib.suppress(OSError, ValueError):
                s = json.loads(summary.read_text())
                when = "already finished (skipped)" if summary.stat().st_mtime < since - 1 else "finished"
                top1 = s.get("val/top1")
                shown = f"val/top1 {top1:.2f}" if isinstance(top1, (int, float)) else "no val/top1"
                lines.append(f"{job.name}: {when}, {shown}, {s.get('steps', '?')} steps")
                continue
        if failed.is_file():
            error = "?"
            with contextlib.suppress(OSError, ValueError):
                error = json.loads(failed.read_text()).get("error", "?")
            lines.append(f"{job.name}: failed: {error}")
        else:
            lines.append(f"{job.name}: unfinished (rerun the same command to resume)")
    return lines


# ------------------------------------------------------------------ the task
_DEFERRED: list[BaseException] = []  # a single run's failure, re-raised by run_cli after Hydra returns (Hydra
# would print "Error executing job with overrides: [...]" before our one line)
_CREATED_BY_US: set[str] = set()  # run dirs that did not exist when this process validated them
_LEFTOVERS_OK = {".hydra", "config.yaml", runlock.LOCK_NAME}
FAILED_MARK = "failed.json"   # a multirun job that failed: its one-line error (sweep.py --collect marks the cell)


def train(cfg: DictConfig) -> Any:
    """Hydra task function (see _train). A multirun job that fails leaves failed.json with its one-line error (and,
    under submitit, prints it in the job's log); a later success removes it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        try:
            return _run(cfg)
        except Exception as e:  # noqa: BLE001 -- run_cli raises it again: one line, no Hydra preamble
            _DEFERRED[:] = [e]
            return None
    mark = Path(HydraConfig.get().runtime.output_dir) / FAILED_MARK
    try:
        out = _run(cfg)
    except (Preempted, runlock.RunDirBusy):
        raise
    except Exception as e:
        if _rank() == 0:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, ConfigError):
                msg = f"{type(e).__name__}: {msg}"
            if "SUBMITIT_EXECUTOR" in os.environ:  # the job's log (in-process, run_cli prints it)
                _err(msg)
            with contextlib.suppress(OSError):
                mark.parent.mkdir(parents=True, exist_ok=True)  # a refused job's empty dir may have been removed
                mark.write_text(json.dumps({"status": "failed", "error": msg}) + "\n")
        raise
    if _rank() == 0:
        mark.unlink(missing_ok=True)
    return out


def _run(cfg: DictConfig) -> Any:
    """One run in Hydra's output dir. Returns `optimized_metric` of the summary (what
    Hydra's optuna sweeper maximises) or None. Raises ConfigError / Preempted / NonFiniteLoss / StorageError on
    failure, StopRequested on a stop signal before the first step."""
    from hydra.core.hydra_config import HydraConfig

    stop.begin_job()  # a stop that arrived during an earlier job of this process stops this one too
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if _rank() == 0:
            runlock.acquire(run_dir)  # no-op if ValidateBeforeStart took it
        return _train(cfg, run_dir)
    except stop.StopRequested as e:
        e.detail = _saved_state(run_dir)
        raise
    except Preempted as e:
        stop.mark_stopped(e.signum)
        raise
    except runlock.RunDirBusy:
        raise  # never clean up a directory another process owns
    except ConfigError:
        _remove_if_ours_and_empty(run_dir)
        raise
    except OSError as e:
        if e.errno in _STORAGE_ERRNOS and not e.filename and not isinstance(e, StorageError):
            # a write that carries no file name (a stream, a library's file): name the run dir at least
            raise StorageError(f"cannot write in {run_dir}: {e.strerror or e} (errno {e.errno}); free space or "
                               f"choose a writable hydra.run.dir, then rerun the same command to resume (earlier "
                               f"checkpoints are intact)") from None
        raise
    finally:
        runlock.release(run_dir)


def _saved_state(run_dir: Path) -> str:
    """What a stop before the first step leaves: the newest checkpoint is called intact only once its digest
    matched (torch-free: ham/train/digest.py)."""
    from ham.train.digest import CheckpointDamaged, verify_checkpoint

    names = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt_*.pt"))  # zero-padded steps
    if not names:
        return "nothing to save"
    newest = run_dir / "checkpoints" / names[-1]
    try:
        verified = verify_checkpoint(newest)
    except (CheckpointDamaged, OSError):
        return f"nothing new to save; {newest} is damaged: a rerun sets it aside and resumes from an older one"
    if not verified:
        return f"nothing new to save; {newest} (no digest: unverified) is what a requeue resumes from"
    return f"nothing new to save; {newest} is intact and a requeue resumes from it"


def _remove_if_ours_and_empty(run_dir: Path) -> None:
    """A run refused in train() (e.g. resume=PATH from another model) leaves nothing behind: remove the run dir
    if this process created it and it holds nothing but Hydra's record and config.yaml."""
    import shutil

    if str(run_dir.resolve()) not in _CREATED_BY_US or _rank() != 0:
        return
    with contextlib.suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= _LEFTOVERS_OK:
            runlock.release(run_dir)
            shutil.rmtree(run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ham.config import config_changes, config_hash, previous_config, validate

    hc = HydraConfig.get()
    OmegaConf.resolve(cfg)
    if hc.mode == RunMode.MULTIRUN:  # the sweep was checked as a whole; this job's dir and data now
        validate(cfg, world_size=_world_size(), run_dir=run_dir)
    summary = finished_summary(run_dir, config_hash(cfg))
    if summary is not None:
        if _rank() == 0:
            from ham.train.sinks import format_summary_table

            print(f"{run_dir}: already finished (summary.json); delete it or choose another hydra.run.dir to "
                  f"train again", file=sys.stderr, flush=True)
            print(format_summary_table(summary, run_dir))
        return _objective(cfg, summary)
    old = previous_config(run_dir)
    if old is not None and _rank() == 0 and any((run_dir / "checkpoints").glob("ckpt_*.pt")):
        changes = [c for c in config_changes(old, cfg) if not c[0].startswith("hydra")]
        if changes:
            shown = ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in changes[:8])
            more = f" (+{len(changes) - 8} more)" if len(changes) > 8 else ""
            print(f"resuming {run_dir} with a changed config (the new values win): {shown}{more}",
                  file=sys.stderr, flush=True)

    if _rank() == 0:  # torch and the model take seconds to load: say what is happening
        print(f"starting {run_dir.name}: loading torch, building data, model and optimizer ...", file=sys.stderr,
              flush=True)
    from ham.train.distributed import setup_distributed, teardown_distributed
    from ham.train.loop import train_from_config

    _export_submitit_ddp_env()
    env = setup_distributed()
    try:
        if env.is_main:
            from ham.train.io import atomic_write_text

            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        summary = train_from_config(cfg, run_dir, env)
        if env.is_main:
            from ham.train.sinks import format_summary_table

            print(format_summary_table(summary, run_dir))
    except Preempted as e:
        teardown_distributed()
        from ham.train.preempt import hand_over

        hand_over(e)  # under submitit: requeue (no return on rank 0)
        raise
    finally:
        teardown_distributed()
    return _objective(cfg, summary)


def finished_summary(run_dir: Path, cfg_hash: str) -> dict[str, Any] | None:
    """The summary of a run that finished with this exact config, else None."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("config_hash") == cfg_hash else None


def _objective(cfg: DictConfig, summary: dict[str, Any]) -> Any:
    key = cfg.get("optimized_metric")
    return None if not key else summary.get(key)


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def _export_submitit_ddp_env() -> None:
    """Under hydra-submitit-launcher every SLURM task runs this job: make the tasks one DDP group."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "RANK" in os.environ:
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


# ------------------------------------------------------------------ process entry
def main(argv: list[str] | None = None) -> int:
    """`python train.py ARGS` (argv=None: sys.argv), also callable in-process (tests, notebooks): the Hydra app
    over configs/train.yaml, with every known failure mapped to its exit code and one line."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from ham.config import CONFIG_DIR

    stop.install()  # train.py installed them before its imports; an in-process caller gets them here
    saved = sys.argv
    if argv is not None:
        sys.argv = [saved[0] if saved else "train.py", *argv]
    try:
        setup()  # a stop signal here (registering schemas) is a stop before the first step like any other
        # Hydra's own errors must reach run_cli as exceptions (it prints them as one line and exits 2)
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
        app = hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")(train)
        if fast_help(sys.argv[1:]):
            return EXIT_OK
        return run_cli(app)
    except stop.StopRequested as e:  # outside run_cli (set-up, --help): the same line and exit code
        if _rank() == 0:
            _err(stop_line(e))
        return stop.exit_code(e.signum)
    finally:
        stop.exiting()  # the exit code is decided: a late signal changes nothing
        if argv is not None:  # in-process caller: give its handlers back (train.py keeps ours to the end)
            stop.restore()
        sys.argv = saved
        GlobalHydra.instance().clear()  # a later in-process call composes afresh


def run_cli(hydra_main: Callable[[], Any]) -> int:
    """Call the @hydra.main function; map every known failure to its exit code and one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ham.errors import NonFiniteLoss

    _DEFERRED.clear()
    try:
        hydra_main()
        if _DEFERRED:
            raise _DEFERRED.pop()
    except stop.StopRequested as e:
        if _rank() == 0:
            _err(stop_line(e))
        return stop.exit_code(e.signum)
    except SystemExit as e:  # --help, argparse errors, a config error found by ValidateBeforeStart
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILED)
    except ConfigError as e:
        _err(str(e))
        return EXIT_CONFIG
    except Preempted as e:
        if _rank() == 0:
            _err(f"{e}; {stop.how_to_continue(e.signum)}")
        return stop.exit_code(e.signum)
    except NonFiniteLoss as e:
        _err(str(e))
        return EXIT_FAILED
    except StorageError as e:
        _err(str(e))
        return EXIT_FAILED
    except (HydraException, OmegaConfBaseException) as e:  # before OSError: MissingConfigException is an IOError
        from ham.config import explain_hydra_error

        _err(explain_hydra_error(e))
        return EXIT_CONFIG
    except OSError as e:
        if e.errno not in _STORAGE_ERRNOS:
            raise
        fix = ("make it accessible, or choose another hydra.run.dir" if e.errno in (errno.EACCES, errno.EPERM) else
               "free space or choose a writable hydra.run.dir, then rerun the same command to resume (earlier "
               "checkpoints are intact)")
        _err(f"cannot access {e.filename or 'a run file'}: {e.strerror}; {fix}")
        return EXIT_FAILED
    except Exception as e:
        if not type(e).__module__.startswith("submitit"):
            raise
        # the submitit launcher could not submit (sbatch refused) or lost a job: one line, not a traceback
        text = " ".join(str(e).split())
        _err(f"SLURM/submitit: {type(e).__name__}: {text[:300]}")
        return EXIT_FAILED
    return EXIT_OK


def stop_line(e: stop.StopRequested) -> str:
    detail = getattr(e, "detail", None) or "nothing new to save (checkpoints already there, if any, are intact)"
    return f"stopped by {_signal_words(e.signum)} before the first step; {detail}; {stop.how_to_continue(e.signum)}"


def _signal_words(signum: int | None) -> str:
    name = stop.signal_name(signum)
    return f"{name} (Ctrl-C)" if name == "SIGINT" else name


def setup() -> None:
    """What must exist before Hydra composes: the schemas in the ConfigStore and our resolvers."""
    from ham import schema

    schema.register()
    register_resolvers()


# ------------------------------------------------------------------ --help
def fast_help(args: list[str]) -> bool:
    """`--help` rendered from the composed hydra.help.template, as Hydra does, but without Hydra's eager listing
    of every config group (a deep copy of the config repository per group: ~1.5 s here) when the template does
    not use that listing. Returns False (Hydra answers) in every other case."""
    if not any(a in ("-h", "--help") for a in args):
        return False
    overrides = [a for a in args if a not in ("-h", "--help")]
    if any(a.startswith("-") for a in overrides):  # other flags alongside: Hydra's own handling
        return False
    from string import Template

    from hydra import compose, initialize_config_dir

    from ham.config import CONFIG_DIR

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except Exception:  # noqa: BLE001 -- a bad override: let Hydra report it its own way
        return False
    template = str(cfg.hydra.help.template)
    if "$APP_CONFIG_GROUPS" in template or "$HYDRA_CONFIG_GROUPS" in template:
        return False
    task = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    print(Template(template).substitute(CONFIG=OmegaConf.to_yaml(task), FLAGS_HELP=""))
    return True


def help_text() -> str:
    """Hydra's `--help` page (hydra.help.template): usage, every group with its options, the key settings."""
    from ham import schema
    from ham.config import GROUPS, group_options

    lines = ["train.py: train with HAM (Hydra app; configs/ mirrors the package).", "",
             "Usage:",
             "  python train.py [group=option ...] [key=value ...]      one run (hydra.run.dir=DIR picks its dir)",
             "  python train.py -m ham.alpha=0,100,200 seed=0,1 ...     a multirun grid (hydra.sweep.dir=DIR)",
             "  python train.py -m hydra/launcher=submitit_slurm ...    each job on SLURM, every task one DDP rank",
             "  python train.py --cfg job [--resolve] [overrides]       print the composed config",
             "  python sweep.py --help                                  alpha/beta grids and the paper's tables",
             "",
             "== Config groups (group=option) =="]
    for g in GROUPS:
        lines.append(f"  {g:<11} {', '.join(group_options(g))}")
    lines += ["", "== Keys users rely on ==",
              "  ham.alpha, ham.beta (0, 0 = the plain base optimizer), sparsifier.sparsity, optimizer.lr,",
              "  trainer.epochs, trainer.max_steps, trainer.global_batch_size, seed, data_dir, resume (auto|never|FILE)",
              "", "== Options of the fixed groups (key: default, allowed) =="]
    for prefix, cls in (("ham", schema.HamConfig), ("trainer", schema.TrainerConfig),
                        ("schedule", schema.ScheduleConfig)):
        lines += [f"  {prefix}.{line}" for line in schema.describe(cls)]
    lines += ["", "Exit codes: 0 done, 1 failure, 2 bad input (one line, nothing created), 3 preempted (requeue),",
              "130 Ctrl-C (checkpoint saved; a second Ctrl-C stops at once).",
              "Hydra's own flags: --cfg job|hydra|all, --resolve, --package, --info, --hydra-help, -sc install=bash.",
              "", "== This run's config (with your overrides) ==", "$CONFIG"]
    return "\n".join(lines)
