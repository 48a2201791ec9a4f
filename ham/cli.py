"""`train.py`'s body: a Hydra app whose bad input exits 2 with one line, before anything is created.

    train.py:  @hydra.main(configs/train.yaml) -> ham.cli.train(cfg)      (run_cli maps exceptions to exit codes)
    before Hydra creates the run dir:  ValidateBeforeStart.on_run_start / on_multirun_start -> validate()
    train(cfg):  finished? -> skip | resume checks -> DDP -> ham.train.loop -> summary

Exit codes: 0 done, 1 failure (NaN loss, a full disk: one line; a bug: traceback), 2 bad input (one line; also a run
directory in use by another process, or no usable checkpoint), 3 preempted (a stop signal: checkpoint saved, or
stopped before the first step with nothing new to save; requeue either way), 130 interrupted by Ctrl-C (SIGINT:
handled like a stop signal, but 128 + SIGINT as a shell reports it, so a scheduler never requeues a run a person
stopped; a second Ctrl-C exits 130 at once). Stop signals are handled from train.py's first line to the
end of interpreter shutdown (ham/lifecycle/stop.py); the run directory is locked for the life of the run
(ham/lifecycle/runlock.py). train.py sets HYDRA_FULL_ERROR=1 so that Hydra's own errors reach run_cli as exceptions instead of
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

from ham.config import FAILED_MARK, job_status, register_resolvers
from ham.help import fast_help
from ham.help import register_resolver as register_help_resolver
from ham.errors import ConfigError, Preempted, StorageError, shorten
from ham.lifecycle import runlock, stop
from ham.lifecycle.world import detect_world

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PREEMPTED = 0, 1, 2, 3
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}

# at import: a launcher's job process (submitit) unpickles `train` from here and resolves train.yaml's
# interpolations before any of our code runs
register_resolvers()
register_help_resolver()


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def _world_size() -> int:
    return detect_world()[1]


def _rank() -> int:
    return detect_world()[0]


def _task_config(config: DictConfig) -> DictConfig:
    """The task's config (no `hydra` node), resolved; an interpolation that does not resolve names its key."""
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"])
    for key in cfg.keys():
        try:
            node = cfg._get_node(key)
            if isinstance(node, DictConfig):
                OmegaConf.resolve(node)
            else:
                cfg[key]  # noqa: B018 -- reading a value resolves it
        except OmegaConfBaseException as e:
            raise ConfigError(f"{getattr(e, 'full_key', None) or key}: {' '.join(str(e).split(' full_key:')[0].split())}") from None
    return cfg


# ------------------------------------------------------------------ before anything is created
def _exit_on_config_error(check: Callable[..., None]) -> Callable[..., None]:
    """Hydra swallows a callback's exceptions (it only warns): a bad config must stop the process here, with
    its one line and exit 2, before the run/sweep directory exists."""
    def wrapped(self: Any, config: DictConfig, **kwargs: Any) -> None:
        from omegaconf.errors import OmegaConfBaseException

        try:
            try:
                check(self, config, **kwargs)
            except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve: name the key
                from ham.config import explain_hydra_error

                raise ConfigError(explain_hydra_error(e)) from None
        except ConfigError as e:
            if _rank() == 0:
                _err(str(e))
            raise SystemExit(EXIT_CONFIG) from None

    return wrapped


class ValidateBeforeStart(Callback):
    """Hydra callback (configs/train.yaml `hydra.callbacks`): runs after composition, before Hydra creates the
    run/sweep directory, so a bad config leaves nothing behind."""

    def __init__(self) -> None:
        self.multirun_started = 0.0  # when on_multirun_start ran: job dirs older than this belong to earlier runs

    @_exit_on_config_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ham.config import check_run_dir_name, validate

        run_dir = Path(str(config.hydra.run.dir))
        check_run_dir_name(run_dir)
        validate(_task_config(config), world_size=_world_size(), run_dir=run_dir)
        if run_dir.is_dir():
            if _rank() == 0:  # another process writing there: refuse before Hydra writes .hydra/ into it
                runlock.acquire(run_dir)
        else:
            _CREATED_BY_US.add(str(run_dir.resolve()))

    @_exit_on_config_error
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Compose and check every job of the sweep up front: a typo fails here, not in the 40th SLURM job.
        Jobs that sweep.py already checked (the same list, world size and data check) are not checked again."""
        from hydra import compose

        from ham.config import JOBS_CHECKED_ENV, check_jobs, expand_jobs, explain_hydra_error, jobs_digest

        overrides = [str(o) for o in config.hydra.overrides.task]
        launcher = config.hydra.launcher
        in_process = str(launcher.get("_target_", "")).endswith("BasicLauncher")
        # submitit: every task is one DDP rank; on SLURM the data often exists only on the compute nodes, so
        # each job checks it there
        world = _world_size() if in_process else int(launcher.get("tasks_per_node") or 1) * int(
            launcher.get("nodes") or 1)
        data_here = in_process or "LocalLauncher" in str(launcher.get("_target_", ""))
        if str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            jobs = expand_jobs(overrides)
        else:  # a search sweeper (optuna) picks values itself: check the base config
            from hydra.core.override_parser.overrides_parser import OverridesParser

            parsed = OverridesParser.create().parse_overrides(overrides)
            jobs = [[o.input_line for o in parsed if not o.is_sweep_override()]]
        self.multirun_started = time.time()
        if os.environ.get(JOBS_CHECKED_ENV) == jobs_digest(jobs, world_size=world, check_data=data_here):
            return

        def compose_job(job: list[str]) -> DictConfig:
            try:
                cfg = compose(config_name=str(config.hydra.job.config_name), overrides=list(job))
                OmegaConf.resolve(cfg)
            except Exception as e:  # noqa: BLE001 -- Hydra/OmegaConf composition errors
                raise ConfigError(explain_hydra_error(e)) from None
            return cfg

        check_jobs(jobs, world_size=world, check_data=data_here, compose_job=compose_job)

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
            for line in job_recap(sweep_dir, since=self.multirun_started):
                print(line, flush=True)


def job_recap(sweep_dir: Path, since: float) -> list[str]:
    """One line per job directory Hydra (re)wrote since `since`."""
    lines = []
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "hydra.yaml").is_file()):
        if (job / ".hydra" / "hydra.yaml").stat().st_mtime < since - 1:
            continue  # a job of an earlier multirun in the same sweep dir
        status, s, error = job_status(job)
        if status == "done":
            when = "already finished (skipped)" if (job / "summary.json").stat().st_mtime < since - 1 else "finished"
            key = "val/top1" if "val/top1" in s or "val/best" not in s else "val/best"  # node tasks: val/best
            top1 = s.get(key)
            shown = f"{key} {top1:.2f}" if isinstance(top1, (int, float)) else f"no {key}"
            lines.append(f"{job.name}: {when}, {shown}, {s.get('steps', '?')} steps")
        elif status == "failed":
            lines.append(f"{job.name}: failed: {error}")
        else:
            lines.append(f"{job.name}: unfinished (rerun the same command to resume)")
    return lines


# ------------------------------------------------------------------ the task
_DEFERRED: list[BaseException] = []  # a single run's failure, re-raised by run_cli after Hydra returns (Hydra
# would print "Error executing job with overrides: [...]" before our one line)
_CREATED_BY_US: set[str] = set()  # run dirs that did not exist when this process validated them
_LEFTOVERS_OK = {".hydra", "config.yaml", runlock.LOCK_NAME}


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

    from ham.config import check_machine, check_resume, config_changes, config_hash, previous_config, validate

    hc = HydraConfig.get()
    OmegaConf.resolve(cfg)
    if hc.mode == RunMode.MULTIRUN:
        if not str(hc.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            validate(cfg, world_size=_world_size(), run_dir=run_dir)  # values a search sweeper chose just now
        else:  # on_multirun_start checked every job; here what only this job can see
            if not str(hc.launcher.get("_target_", "")).endswith(("BasicLauncher", "LocalLauncher")):
                check_machine(cfg, world_size=_world_size())  # a SLURM node: its own data and credentials
            check_resume(cfg, run_dir)
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
            shown = ", ".join(f"{k}: {shorten(a, 40)} -> {shorten(b, 40)}" for k, a, b in changes[:8])
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
        from ham.lifecycle.preempt import hand_over

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
        bad_shell = unknown_completion_shell(sys.argv[1:])
        if bad_shell:
            _err(bad_shell)
            return EXIT_CONFIG
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
    except (AttributeError, AssertionError) as e:  # OmegaConf cannot merge into a typed group that is null
        if not _raised_in_omegaconf(e):
            raise
        _err(unmergeable_override_line(sys.argv[1:], e))
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


COMPLETION_SHELLS = ("bash", "fish", "zsh")  # Hydra's shell-completion plugins


def unknown_completion_shell(args: list[str]) -> str | None:
    """Hydra answers `-sc install=SHELL` for an unknown SHELL with a traceback: one line instead."""
    for flag, value in zip(args, args[1:]):
        if flag in ("-sc", "--shell-completion") and "=" in value:
            action, shell = value.split("=", 1)
            if action in ("install", "uninstall") and shell not in COMPLETION_SHELLS:
                return f"{flag} {value}: no completion for {shell!r}; allowed: {', '.join(COMPLETION_SHELLS)}"
    return None


def _raised_in_omegaconf(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "omegaconf" in tb.tb_frame.f_code.co_filename


def unmergeable_override_line(args: list[str], e: BaseException) -> str:
    """The one line for an override OmegaConf cannot merge: keys set inside a typed group that is null by default
    (trainer.mixup, optimizer.sam, logger.wandb): it has no keys to set until a config file fills it."""
    from ham.schema import NULL_GROUPS

    for arg in args:
        key = arg.lstrip("+~").split("=", 1)[0]
        group = next((g for g in NULL_GROUPS if key == g or key.startswith(g + ".")), None)
        if group is not None:
            return (f"{arg}: {group} is null in this config, and a null typed group cannot be filled from the "
                    f"command line; allowed: a preset or option that sets it ({NULL_GROUPS[group]}), or your own "
                    f"experiment file with a `{group}:` block")
    return f"an override could not be merged into the config ({type(e).__name__}); see python train.py --cfg job"


def stop_line(e: stop.StopRequested) -> str:
    detail = getattr(e, "detail", None) or "nothing new to save (checkpoints already there, if any, are intact)"
    return f"stopped by {_signal_words(e.signum)} before the first step; {detail}; {stop.how_to_continue(e.signum)}"


def _signal_words(signum: int | None) -> str:
    name = stop.signal_name(signum)
    return f"{name} (Ctrl-C)" if name == "SIGINT" else name


def setup() -> None:
    """What must exist before Hydra composes: the schemas in the ConfigStore and our resolvers."""
    from ham import schema
    from ham.config import CONFIG_DIR

    schema.register(CONFIG_DIR)
    register_resolvers()
    register_help_resolver()
