"""Compose and validate the Hydra config BEFORE anything is created (run dir, W&B run, process group).

We use Hydra's compose API instead of ``@hydra.main`` because the latter creates its output directory before our
code runs, and its errors are multi-line tracebacks; the contract is "exit code 2 and ONE line naming the key
and the allowed values, and nothing created". Every problem is raised as ``ConfigError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from ham.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("HAM_CONFIG_DIR", REPO_ROOT / "configs"))
GROUPS = ("model", "dataset", "optimizer", "schedule", "sparsifier", "ham", "logger", "experiment")
RUN_DIR_KEY = "hydra.run.dir"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], str | None]:
    """Separate ``hydra.run.dir=DIR`` (handled by us) from the config overrides; check group options."""
    rest, run_dir = [], None
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if not sep:
            raise ConfigError(f"override {ov!r} is not of the form key=value")
        bare = key.lstrip("+~")
        if bare == RUN_DIR_KEY:
            run_dir = value
            continue
        if bare.startswith("hydra."):
            raise ConfigError(f"{bare} is not supported; the only hydra key train.py accepts is {RUN_DIR_KEY}")
        if bare in GROUPS and value not in ("null",):
            allowed = group_options(bare)
            if value not in allowed:
                raise ConfigError(f"{bare}={value} is not a known option; allowed: {', '.join(allowed)}")
        rest.append(ov)
    return rest, run_dir


def compose(overrides: Iterable[str] = ()) -> tuple[DictConfig, str | None]:
    """Compose configs/train.yaml with command-line style overrides. Returns (cfg, run_dir or None)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides, run_dir = split_overrides(list(overrides))
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="ham"):
            cfg = hydra_compose("train", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        msg = _one_line(e)
        bad = _unknown_key(msg)
        if bad is not None:
            msg = _unknown_key_message(bad, [o for o in overrides if not o.lstrip("+~").startswith(bad + "=")])
        raise ConfigError(msg) from None
    return cfg, run_dir


def _unknown_key(msg: str) -> str | None:
    import re

    m = re.search(r"Could not override '([^']+)'", msg) or re.search(r"Key '[^']+' is not in struct.*?full_key: "
                                                                     r"(\S+)", msg)
    return m.group(1) if m else None


def _unknown_key_message(key: str, other_overrides: list[str]) -> str:
    """Name the bad key and the keys that do exist at that level."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    parent = key.rsplit(".", 1)[0] if "." in key else ""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="ham"):
            cfg = hydra_compose("train", overrides=other_overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        allowed = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "none (not a group of keys)"
    except Exception:  # noqa: BLE001 -- the short message is still right
        allowed = "see python train.py --cfg"
    return f"{key} is not a config key; keys of {parent or 'the root config'}: {allowed}"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


# --- value checks ------------------------------------------------------------------------------------------

def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_number(cfg, key, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False, optional=False):
    v = _get(cfg, key)
    if v is None and optional:
        return
    ok = _is_int(v) if integer else _is_number(v)
    if ok:
        ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        kind = "an integer" if integer else "a number"
        rng = []
        if lo is not None:
            rng.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            rng.append(f"{'<' if hi_open else '<='} {hi}")
        extra = f" {' and '.join(rng)}" if rng else ""
        null = " (or null)" if optional else ""
        raise ConfigError(f"{key}={v!r} is not allowed; it must be {kind}{extra}{null}")


def check_choice(cfg, key, allowed: Iterable[str], optional=False):
    v = _get(cfg, key)
    if v is None and optional:
        return
    allowed = list(allowed)
    if v not in allowed:
        raise ConfigError(f"{key}={v!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def validate(cfg: DictConfig, *, world_size: int = 1, check_data: bool = True) -> None:
    """Raise ConfigError (one line) for the first bad value. Touches nothing on disk."""
    from ham.models import MODEL_NAMES
    from ham.optim.functional import BACKENDS
    from ham.optim.ham import VARIANTS
    from ham.sparse.registry import SPARSIFIER_NAMES

    check_number(cfg, "seed", integer=True, lo=0)
    check_choice(cfg, "model.name", MODEL_NAMES)
    check_choice(cfg, "dataset.loader", ["torchvision", "ffcv"])
    check_number(cfg, "dataset.img_size", integer=True, lo=1)

    check_choice(cfg, "optimizer.name", ["sgd", "adamw"])
    check_number(cfg, "optimizer.lr", lo=0, lo_open=True)
    check_number(cfg, "optimizer.weight_decay", lo=0)
    if cfg.optimizer.name == "sgd":
        check_number(cfg, "optimizer.momentum", lo=0, hi=1, hi_open=True)
    if _get(cfg, "optimizer.sam") is not None:
        check_number(cfg, "optimizer.sam.rho", lo=0, lo_open=True)

    check_number(cfg, "ham.alpha")
    check_number(cfg, "ham.beta")
    check_number(cfg, "ham.clamp", lo=0, lo_open=True, optional=True)
    check_choice(cfg, "ham.variant", VARIANTS)
    check_choice(cfg, "ham.backend", BACKENDS)
    check_number(cfg, "ham.min_ndim", integer=True, lo=0)

    check_choice(cfg, "sparsifier.name", SPARSIFIER_NAMES)
    check_number(cfg, "sparsifier.sparsity", lo=0, hi=1, hi_open=True)

    acdc = cfg.sparsifier.name == "acdc" or (cfg.sparsifier.name == "signin"
                                             and _get(cfg, "sparsifier.mask_source") == "acdc")
    if acdc:
        from ham.sparse.acdc import acdc_phase_epochs, check_schedule

        opts = {k: _get(cfg, f"sparsifier.{k}") for k in ("warmup_fraction", "phase_fraction",
                                                          "last_dense_fraction", "final_fraction")}
        c, d = acdc_phase_epochs(cfg.trainer.epochs, **{k: v for k, v in opts.items() if v is not None})
        check_schedule(_get(cfg, "sparsifier.compress_epochs") or c, _get(cfg, "sparsifier.decompress_epochs") or d,
                       cfg.trainer.epochs)

    check_choice(cfg, "schedule.name", ["triangular", "cosine", "constant"])
    check_number(cfg, "schedule.warmup_epochs", lo=0)
    check_number(cfg, "schedule.start_factor", lo=0)
    check_number(cfg, "schedule.end_factor", lo=0)

    t = "trainer."
    check_number(cfg, t + "epochs", integer=True, lo=1)
    check_number(cfg, t + "max_steps", integer=True, lo=1, optional=True)
    check_number(cfg, t + "global_batch_size", integer=True, lo=1)
    gbs = cfg.trainer.global_batch_size
    if gbs % world_size:
        raise ConfigError(f"trainer.global_batch_size={gbs} is not divisible by the world size {world_size}")
    for key in ("eval_every_epochs", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                "preempt_check_every"):
        check_number(cfg, t + key, integer=True, lo=1)
    check_number(cfg, t + "num_workers", integer=True, lo=0)
    check_number(cfg, t + "label_smoothing", lo=0, hi=1, hi_open=True)
    check_number(cfg, t + "grad_clip_norm", lo=0, lo_open=True, optional=True)
    check_number(cfg, t + "eval_batch_size", integer=True, lo=1, optional=True)
    check_choice(cfg, t + "precision", ["auto", "bf16", "fp32"])
    for key in ("channels_last", "progress_bar"):
        check_choice(cfg, t + key, ["auto", True, False])

    wandb = _get(cfg, "logger.wandb")
    if wandb is not None:
        check_choice(cfg, "logger.wandb.mode", ["online", "offline", "disabled"])

    resume = _get(cfg, "resume")
    if resume not in ("auto", "never") and not (isinstance(resume, str) and Path(resume).is_file()):
        raise ConfigError(f"resume={resume!r} is not allowed; allowed: auto, never, or an existing checkpoint file")

    if check_data:
        from ham.data import check_dataset

        check_dataset(cfg.dataset.name, cfg.data_dir, download=bool(cfg.dataset.download))
    if cfg.dataset.loader == "ffcv":
        import importlib.util

        if importlib.util.find_spec("ffcv") is None:
            raise ConfigError("dataset.loader='ffcv' needs the ffcv extra (uv sync --extra ffcv, after "
                              "apt-get install libopencv-dev libturbojpeg0-dev pkg-config); allowed now: torchvision")


def config_hash(cfg: DictConfig) -> str:
    """Stable short hash of the resolved config (what makes two runs 'the same run')."""
    blob = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def default_run_dir(cfg: DictConfig) -> Path:
    """Deterministic: the same command maps to the same dir, so rerunning it resumes (resume=auto)."""
    exp = _get(cfg, "experiment_name") or f"{cfg.model.name}_{cfg.dataset.name}"
    return Path("runs") / f"{exp}_{cfg.sparsifier.name}_{config_hash(cfg)}"
