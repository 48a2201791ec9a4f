"""The one validation path: the composed config -> checks -> ConfigError (one line) before anything is created.

    schema (ham/schema.py)  unknown keys, wrong types (while Hydra composes), ranges, choices, cross-field rules
    validate() below        what needs the world: world size, data on disk, batch vs dataset size, ffcv
                            installed, the resume source (a file, or a run directory's checkpoints and config)

`compose()` is Hydra's compose API over configs/train.yaml, for tests, sweep.py and notebooks; `train.py` gets
the same config from `@hydra.main`. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from ham.errors import ConfigError, one_line, shorten

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("HAM_CONFIG_DIR", REPO_ROOT / "configs"))
GROUPS = ("model", "dataset", "optimizer", "schedule", "sparsifier", "ham", "logger", "experiment", "hparams_search")
# Keys whose change makes a run directory's checkpoints meaningless: resuming with another value is refused.
FROZEN_ON_RESUME = ("model", "dataset.name", "dataset.img_size", "sparsifier", "optimizer.name", "optimizer.sam",
                    "trainer.global_batch_size", "trainer.epochs", "seed")


def group_options(group: str) -> list[str]:
    """A group's options: its YAML files, and the declared components that have none (ham/registry.py)."""
    from ham import registry

    declared = registry.names(group) if group in registry.FAMILIES else ()
    return sorted({p.stem for p in (CONFIG_DIR / group).glob("*.yaml")} | set(declared))


def compose(overrides: Iterable[str] = ()) -> DictConfig:
    """configs/train.yaml with command-line style overrides, resolved (no `hydra` node). Raises ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ham import schema

    schema.register(CONFIG_DIR)
    register_resolvers()
    overrides = list(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
            cfg = hydra_compose("train", overrides=overrides)
        OmegaConf.resolve(cfg)
    except Exception as e:  # noqa: BLE001 -- Hydra/OmegaConf composition errors
        raise ConfigError(explain_hydra_error(e)) from None
    return cfg


# ------------------------------------------------------------------ a sweep's jobs, checked once
JOBS_CHECKED_ENV = "HAM_JOBS_CHECKED"  # set by sweep.py for the `train.py -m` it starts: the jobs it checked


def expand_jobs(overrides: Iterable[str]) -> list[list[str]]:
    """Every job's override list, expanded as Hydra's basic sweeper does (`a=1,2 b=3` -> 2 jobs; a later
    override of the same key replaces the earlier one), through Hydra's public override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:  # noqa: BLE001 -- Hydra's grammar errors
        raise ConfigError(explain_hydra_error(e)) from None
    per_key: dict[str, list[str]] = {}
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            per_key[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            per_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise ConfigError(f"{o.input_line}: an interval sweep needs a search sweeper (hparams_search=...); "
                              f"allowed here: a list (a,b,c) or range(start,stop,step)")
    return [list(job) for job in itertools.product(*per_key.values())]


def check_jobs(jobs: Iterable[list[str]], *, world_size: int = 1, check_data: bool = True,
               compose_job: Any = None) -> int:
    """Compose, resolve and validate every job before any runs (a typo fails now, not in the 40th SLURM job);
    raises ConfigError naming the job. The data of a (dataset, data_dir, batch) is read once. Returns the count."""
    seen: set[tuple] = set()
    n = 0
    for job in jobs:
        try:
            cfg = (compose_job or compose)(job)
            key = (cfg.dataset.name, cfg.data_dir, cfg.trainer.global_batch_size)
            validate(cfg, world_size=world_size, check_data=check_data and key not in seen)
        except ConfigError as e:
            raise ConfigError(f"job {' '.join(job)}: {e}") from None
        seen.add(key)
        n += 1
    return n


def jobs_digest(jobs: Iterable[list[str]], *, world_size: int, check_data: bool) -> str:
    """Names a checked job list (Hydra's own `hydra...` overrides aside: `train.py -m` does not list them among
    the task's), so that the `train.py -m` sweep.py starts need not check the same jobs again."""
    task = [[o for o in job if not o.lstrip("+~").startswith("hydra")] for job in jobs]
    return hashlib.sha256(json.dumps([task, world_size, check_data]).encode()).hexdigest()


# ------------------------------------------------------------------ Hydra/OmegaConf errors -> one line
def explain_hydra_error(e: BaseException) -> str:
    """One line naming the key and what is allowed, from a Hydra or OmegaConf exception: decided by the
    exception's type and its fields (key, value, schema class), never by its message text."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, MissingMandatoryValue,
                                  OmegaConfBaseException, ValidationError)

    if isinstance(e, MissingConfigException):
        wanted = (e.missing_cfg_file or "").strip("/")
        if "/" in wanted:
            group, option = wanted.rsplit("/", 1)
            from ham.extras import missing_for_option

            needs_extra = missing_for_option(group, option)
            if needs_extra:
                return needs_extra
            if group in GROUPS or (CONFIG_DIR / group).is_dir():
                return f"{group}={option} is not a known option; allowed: {', '.join(group_options(group))}"
        return one_line(e)
    if isinstance(e, OverrideParseException):
        return (f"the override {e.override!r} is not valid override grammar ({one_line(e).split(' See ')[0]}); "
                f"quote lists and strings: 'key=[1,2]', 'key=\"a b\"'")
    cause = e.__cause__ if e.__cause__ is not None else e
    link = e
    while link is not None and not isinstance(link, OmegaConfBaseException):  # Hydra wraps it, with or without
        link = link.__cause__ or link.__context__  # `from`: the OmegaConf error names the key
    cause = link if link is not None else cause
    if isinstance(cause, ConfigError):
        return str(cause)
    key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or not key:
        return one_line(e)
    if isinstance(cause, MissingMandatoryValue):
        return f"{key} is not set; it is required (set {key}=...)"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        if cause.object_type is dict:  # a free-form dict (e.g. sparsifier.source): keys are added
            return f"{key} is not a key of {key.rsplit('.', 1)[0]} yet; add it with +{key}=..."
        return _unknown_key_message(key, cause.object_type)
    if isinstance(cause, ValidationError) and cause.value is not None:
        return f"{key}={cause.value} is not allowed; it must be {_kind(cause.object_type, cause.key)}"
    return f"{key}: {one_line(cause).split(' full_key:')[0]}"


def _kind(schema_class: Any, key: Any) -> str:
    """'an integer', 'a number', ... for the field `key` of a schema dataclass (its annotation)."""
    import dataclasses
    import typing

    hint = None
    if dataclasses.is_dataclass(schema_class) and isinstance(key, str):
        hint = typing.get_type_hints(schema_class).get(key)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (list, typing.List):
        return "a list of " + {int: "integers", float: "numbers"}.get(args[0] if args else None, "values")
    base = args[0] if typing.get_origin(hint) is typing.Union and args else hint
    if base is None and not isinstance(key, str):  # an element of a list: the list's element type
        return "a number"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(base, "another value")


def _unknown_key_message(key: str, schema_class: Any) -> str:
    """Name the bad key and the keys its schema has."""
    import dataclasses

    from ham import schema

    parent = key.rsplit(".", 1)[0] if "." in key else ""
    cls = schema_class if dataclasses.is_dataclass(schema_class) else (None if parent else schema.TrainConfig)
    if cls is not None:
        keys = ", ".join(sorted(f.name for f in dataclasses.fields(cls))) or "none"
        return f"{key} is not a config key; keys of {parent or 'the root config'}: {keys}"
    return f"{key} is not a config key; see python train.py --cfg job"


# ------------------------------------------------------------------ validation
def validate(cfg: DictConfig, *, world_size: int = 1, run_dir: Path | None = None, check_data: bool = True) -> None:
    """Raise ConfigError (one line) for the first problem. Touches nothing on disk. check_data=False: what only
    the machine that runs the job can check is left to it (check_machine: SLURM jobs on their node)."""
    from ham import schema

    schema.check(cfg)
    check_components(cfg, world_size)
    gbs = cfg.trainer.global_batch_size
    if gbs % world_size:
        raise ConfigError(f"trainer.global_batch_size={gbs} is not divisible by the world size {world_size}; "
                          f"allowed: a multiple of {world_size}")
    if check_data:
        check_machine(cfg, world_size=world_size)
    elif cfg.dataset.loader == "ffcv":
        _check_ffcv_installed()
    check_resume(cfg, run_dir)


def check_components(cfg: DictConfig, world_size: int = 1) -> None:
    """What the declarations' facts say about each other: the extra a component needs is installed, graph models
    take graph datasets (and only those), a full-batch task runs on one process."""
    from ham import registry
    from ham.extras import missing_message

    for group in ("model", "dataset", "optimizer", "sparsifier"):
        name = cfg[group].name
        extra = registry.fact(group, name, "extra")
        problem = missing_message(extra, f"{group}={name}") if extra else None
        if problem:
            raise ConfigError(problem)
    model, data = cfg.model.name, cfg.dataset.name
    graph_model, graph_data = registry.fact("model", model, "graph", False), registry.fact("dataset", data, "graph", False)
    if graph_model != graph_data:
        fitting = [n for n, d in registry.declarations("model").items() if d.facts.get("graph", False) == graph_data]
        raise ConfigError(f"model={model} does not take the inputs of dataset={data} ({'graphs' if graph_data else 'images'}); "
                          f"allowed: model={'|'.join(fitting)}")
    if world_size > 1 and registry.fact("dataset", data, "single_process", False):
        raise ConfigError(f"dataset={data} trains full batch on one process, not {world_size}; allowed: python "
                          f"train.py (no torchrun, trainer world size 1)")


def check_machine(cfg: DictConfig, *, world_size: int = 1) -> None:
    """The checks that need the machine that runs the job: W&B credentials, ffcv installed, the data."""
    gbs = cfg.trainer.global_batch_size
    if cfg.logger.wandb is not None:
        from ham.train.sinks import wandb_credentials_problem

        problem = wandb_credentials_problem(cfg.logger.wandb.mode)
        if problem:
            raise ConfigError(problem)
    if cfg.dataset.loader == "ffcv":
        _check_ffcv_installed()
    if cfg.dataset.smoke_images is not None:  # generated stand-in data: nothing on disk
        if cfg.dataset.smoke_images < gbs:
            raise ConfigError(f"trainer.global_batch_size={gbs} is larger than dataset.smoke_images="
                              f"{cfg.dataset.smoke_images}; allowed: smoke_images >= the global batch")
        return
    from ham.data.catalog import check_dataset, read_ffcv_meta, train_size_at_least

    ds = cfg.dataset
    if cfg.data_dir is not None and Path(cfg.data_dir).exists() and not os.access(cfg.data_dir, os.R_OK | os.X_OK):
        raise ConfigError(f"data_dir={cfg.data_dir} is not readable by this user (permission denied); allowed: "
                          f"a directory this user can read")
    try:
        if ds.loader == "ffcv":
            n = int(read_ffcv_meta(ds.name, cfg.data_dir)["train_size"])
        else:
            check_dataset(ds.name, cfg.data_dir, download=bool(ds.download))
            n = train_size_at_least(ds.name, cfg.data_dir, ds.options, gbs)
    except OSError as e:
        raise ConfigError(f"data_dir={cfg.data_dir}: cannot read {e.filename or 'the dataset'} "
                          f"({e.strerror or e}); allowed: a readable dataset directory") from None
    if n is not None and -(-n // world_size) < gbs // world_size:
        raise ConfigError(f"trainer.global_batch_size={gbs} is larger than the training set of "
                          f"dataset={ds.name} ({n} images); allowed: 1..{n}")


def _check_ffcv_installed() -> None:
    problem = ffcv_unavailable()
    if problem:
        raise ConfigError(f"dataset.loader=ffcv needs ffcv, which {problem}; install the system libraries "
                          f"(apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config), then the extra "
                          f"(uv sync --extra ffcv, or pip install 'ham-optim[ffcv]'); or dataset.loader=torchvision")


def ffcv_unavailable() -> str | None:
    """Why ffcv cannot run here (None: it can), without importing it (ffcv imports torch): the package must be
    installed and its compiled library must load, i.e. find OpenCV and libturbojpeg."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("ffcv")
    if spec is None or not spec.submodule_search_locations:
        return "is not installed"
    libs = [p for d in spec.submodule_search_locations for p in Path(d).glob("_libffcv*.so")]
    if not libs:
        return "is installed without its compiled library (_libffcv)"
    try:
        ctypes.CDLL(str(libs[0]))
    except OSError as e:
        return f"cannot load its compiled library ({' '.join(str(e).split())})"
    return None


def check_resume(cfg: DictConfig, run_dir: Path | None) -> None:
    resume = cfg.resume
    if resume not in ("auto", "never"):
        path = Path(resume)
        if not path.is_file():
            raise ConfigError(f"resume={resume!r} is not allowed; allowed: auto, never, or an existing checkpoint "
                              f"file (this path does not exist)")
        if not checkpoint_readable(path):
            raise ConfigError(f"resume={resume!r} is not a readable checkpoint (empty, truncated or not a torch "
                              f"checkpoint); allowed: auto, never, or a ckpt_*.pt written by train.py")
    if resume not in ("auto", "never"):
        changed = frozen_changes(cfg, Path(resume).parent.parent)  # a ckpt inside another run dir: its config
        if changed:
            key, old, new = changed[0]
            raise ConfigError(f"resume={resume} comes from a run with {key}={shorten(old)} (this run: {shorten(new)}); "
                              f"allowed: a checkpoint of a run with the same {key}")
    if run_dir is None:
        return
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"hydra.run.dir={run_dir} exists and is not a directory; choose another hydra.run.dir")
    check_writable(run_dir)
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.pt")) if (run_dir / "checkpoints").is_dir() else []
    if not ckpts or resume != "auto":
        if resume == "never" and ckpts:
            raise ConfigError(f"resume=never but {run_dir} already holds checkpoints; choose another "
                              f"hydra.run.dir or resume=auto")
        return
    if not any(checkpoint_readable(p) for p in ckpts):
        names = ", ".join(p.name for p in ckpts)
        raise ConfigError(f"hydra.run.dir={run_dir}: every checkpoint is unreadable ({names}); move them away "
                          f"to start over (resume=auto), or pass resume=<a good checkpoint file>")
    changed = frozen_changes(cfg, run_dir)
    if changed:
        key, old, new = changed[0]
        raise ConfigError(f"{key} changed from {shorten(old)} to {shorten(new)} since {run_dir} was started; its "
                          f"checkpoints cannot be resumed with a different {key}; allowed: the old value, or "
                          f"another hydra.run.dir")


def check_run_dir_name(run_dir: Path) -> None:
    """Names the filesystem refuses (checked before anything looks at the path: stat() raises on them)."""
    too_long = [part for part in Path(run_dir).parts if len(part.encode()) > 255]
    size = len(str(Path(run_dir).absolute()).encode())
    if too_long or size >= 4096:
        what = f"the name {too_long[0][:40]!r}... has {len(too_long[0].encode())} bytes" if too_long else \
            f"the path has {size} bytes"
        raise ConfigError(f"hydra.run.dir: {what}; allowed: names up to 255 bytes and paths under 4096 bytes")


def check_writable(run_dir: Path) -> None:
    """The run dir (or, if it does not exist yet, its nearest existing parent) and its checkpoints/ must be
    writable: a read-only directory found at the first save would waste the whole interval before it."""
    run_dir = Path(run_dir)
    check_run_dir_name(run_dir)
    target = run_dir
    while not target.exists() and target != target.parent:
        target = target.parent
    if target != run_dir and target.is_dir() and os.access(target, os.W_OK | os.X_OK):
        try:  # a pseudo-filesystem (/proc, /sys) says writable but refuses directories: try one, remove it
            os.rmdir(tempfile.mkdtemp(prefix=".ham_probe_", dir=target))
        except OSError as e:
            raise ConfigError(f"hydra.run.dir={run_dir}: cannot create a directory in {target} ({e.strerror}); "
                              f"allowed: a hydra.run.dir on a writable filesystem") from None
    targets = [target] + ([run_dir / "checkpoints"] if (run_dir / "checkpoints").is_dir() else [])
    for p in targets:
        if not p.is_dir():
            raise ConfigError(f"hydra.run.dir={run_dir}: {p} is not a directory; choose another hydra.run.dir")
        if not os.access(p, os.W_OK | os.X_OK):
            try:
                ro = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
            except OSError:
                ro = False
            why = "on a read-only filesystem" if ro else "not writable by this user"
            raise ConfigError(f"hydra.run.dir={run_dir}: {p} is {why}; allowed: a writable hydra.run.dir "
                              f"(or make {p} writable)")


def checkpoint_readable(path: Path) -> bool:
    """Cheap structural check (no torch): a torch checkpoint is a zip archive with a data.pkl record.
    Catches empty, truncated and random files; the loader still falls back on deeper damage."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def previous_config(run_dir: Path) -> DictConfig | None:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        return OmegaConf.load(path)
    except Exception:  # noqa: BLE001 -- unreadable: treat as unknown
        return None


def config_changes(old: DictConfig, new: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every leaf that differs (keys only on one side count as changed)."""
    a = _flatten(OmegaConf.to_container(old, resolve=True))
    b = _flatten(OmegaConf.to_container(new, resolve=True))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def frozen_changes(cfg: DictConfig, run_dir: Path) -> list[tuple[str, Any, Any]]:
    old = previous_config(run_dir)
    if old is None:
        return []
    return [c for c in config_changes(old, cfg) if any(c[0] == f or c[0].startswith(f + ".") for f in FROZEN_ON_RESUME)]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: d}


# ------------------------------------------------------------------ a finished, failed or unfinished job
FAILED_MARK = "failed.json"  # a multirun job that failed: its one-line error (sweep.py --collect marks the cell)


def job_status(job_dir: Path) -> tuple[str, dict[str, Any], str | None]:
    """(done | failed | unfinished, its summary.json (empty unless done), its one-line error when failed).
    An unreadable summary counts as unfinished: rerunning the job rewrites it."""
    summary, failed = job_dir / "summary.json", job_dir / FAILED_MARK
    if summary.is_file():
        with contextlib.suppress(OSError, ValueError):
            return "done", json.loads(summary.read_text()), None
    if failed.is_file():
        error = "?"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            error = json.loads(failed.read_text()).get("error", "?")
        return "failed", {}, error
    return "unfinished", {}, None


# ------------------------------------------------------------------ names of run and sweep directories
# Keys that do not change what a run computes: where the data lives and how to treat an existing run dir (the
# same set multirun job names exclude, configs/train.yaml hydra.job.config.override_dirname.exclude_keys).
IDENTITY_EXCLUDED = ("hydra", "data_dir", "resume")


def config_hash(cfg: DictConfig) -> str:
    """Stable short hash of the resolved config (what makes two runs 'the same run').

    Each top-level key is resolved on its own, never the root: the default run dir (`hydra.run.dir`) is computed
    from this hash while Hydra resolves the root, so resolving `hydra` here would recurse into itself.
    """
    container = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                 for k in cfg if k not in IDENTITY_EXCLUDED}
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_name(cfg: DictConfig) -> str:
    """Deterministic: the same command maps to the same dir, so rerunning it resumes (resume=auto)."""
    exp = cfg.get("experiment_name") or f"{cfg.model.name}_{cfg.dataset.name}"
    if OmegaConf.select(cfg, "dataset.smoke_images") is not None:
        exp += "_smoke"
    return f"{exp}_{cfg.sparsifier.name}_{config_hash(cfg)}"


def job_dirname(override_dirname: str, num: Any) -> str:
    """A multirun job's subdirectory: its overrides (Hydra's override_dirname), made path-safe."""
    name = str(override_dirname or "").replace("/", "_").replace(os.sep, "_") or f"job{num}"
    if len(name) > 200:
        name = name[:180] + "_" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return name


def register_resolvers() -> None:
    """The resolvers train.yaml's `hydra:` section uses (idempotent)."""
    def _run_name(*, _root_: DictConfig) -> str:
        if "model" in _root_:
            return run_name(_root_)
        # `--cfg hydra --resolve`: Hydra deleted the task keys before resolving; compose them again, from the same
        # config and overrides, to show the directory the run would really get
        from hydra import compose as hydra_compose
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return run_name(hydra_compose(str(hc.job.config_name), overrides=list(hc.overrides.task)))

    for name, fn in (("ham_run_name", _run_name), ("ham_job_dirname", job_dirname)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
