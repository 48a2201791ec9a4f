"""`train.py`'s body: compose + validate (exit 2, one line, nothing created) -> run dir -> DDP -> Trainer."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PREEMPTED = 0, 1, 2, 3


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def prepare(overrides: list[str]):
    """Compose and validate; returns (cfg, run_dir). Raises ConfigError. Creates nothing."""
    from ham.config import compose, default_run_dir, validate
    from ham.errors import ConfigError
    from ham.train.distributed import detect_world

    cfg, run_dir = compose(overrides)
    _, world, _ = detect_world()
    validate(cfg, world_size=world)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"hydra.run.dir={run_dir} exists and is not a directory")
    ckpts = list((run_dir / "checkpoints").glob("ckpt_*.pt")) if (run_dir / "checkpoints").is_dir() else []
    if cfg.resume == "never" and ckpts:
        raise ConfigError(f"resume=never but {run_dir} already holds checkpoints; choose another hydra.run.dir "
                          f"or resume=auto")
    return cfg, run_dir


def write_run_config(cfg, run_dir: Path, overrides: list[str]) -> None:
    from omegaconf import OmegaConf

    from ham.config import config_hash

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    old = run_dir / "config.yaml"
    if old.exists():
        prev = OmegaConf.load(old)
        if config_hash(prev) != config_hash(cfg):
            warnings.warn(f"{run_dir} was started with a different config; resuming with the new one "
                          f"(see {old} for the old one)", stacklevel=1)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml", resolve=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def main(argv: list[str]) -> int:
    from ham.errors import ConfigError

    if any(a in ("-h", "--help") for a in argv):
        print(sys.modules["__main__"].__doc__ or "python train.py [overrides]")
        return EXIT_OK
    if any(a in ("-m", "--multirun") for a in argv):
        _err("train.py runs one job; use `python sweep.py` for grids (it can launch on SLURM)")
        return EXIT_CONFIG
    print_cfg = "--cfg" in argv
    overrides = [a for a in argv if a != "--cfg"]
    try:
        cfg, run_dir = prepare(overrides)
    except ConfigError as e:
        _err(str(e))
        return EXIT_CONFIG
    if print_cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        print(f"# run dir: {run_dir}")
        return EXIT_OK

    from ham.train.distributed import setup_distributed, teardown_distributed
    from ham.train.loop import NonFiniteLoss, Preempted, Trainer

    env = setup_distributed()
    code = EXIT_OK
    try:
        if env.is_main:
            write_run_config(cfg, run_dir, overrides)
        summary = Trainer(cfg, run_dir, env).run()
        if env.is_main:
            from ham.train.sinks import format_summary_table

            print(format_summary_table(summary, run_dir))
    except Preempted as e:
        _err(f"{e}; exit {EXIT_PREEMPTED} (requeue to resume)")
        code = EXIT_PREEMPTED
    except NonFiniteLoss as e:
        _err(str(e))
        code = EXIT_FAILED
    except ConfigError as e:  # found late (e.g. a dataset that is there but unusable)
        _err(str(e))
        code = EXIT_CONFIG
    finally:
        teardown_distributed()
    return code
