"""The root config schema, the ConfigStore, and the one validation of a composed config.

The components (models, datasets, optimizers, sparsifiers) declare their typed options next to their code
(ham/registry.py: ham/models/options.py, ham/data/options.py, ham/optim/options.py, ham/sparse/options.py); the
fixed groups (schedule, ham, logger, trainer) and the root are declared here. `register()` stores all of them in
Hydra's ConfigStore: the root `train_schema` types the fixed groups directly; a component's option file pulls its
schema in through its defaults list (`- /schema/<group>/<option>@_here_`), and a component without an option
file is stored as the option itself. Hydra then rejects unknown keys and wrong types while composing;
`check(cfg)` adds what types cannot say (ranges, choices, finiteness, cross-field rules).

Nothing here imports torch: `train.py --help` and every config error come back without paying for it.
The YAML files in configs/ keep the values and the comments that explain the paper's choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from ham import registry
from ham.errors import ConfigError
from ham.options import AUTO_BOOL, Component, check_node, fmt, opt

COMPONENT_GROUPS = tuple(registry.FAMILIES)  # model, dataset, optimizer, sparsifier
HAM_VARIANTS = ("deployed", "signed")  # ham.optim.functional's (checked equal by tests/test_config.py)
HAM_BACKENDS = ("auto", "foreach", "fused", "reference")


# ------------------------------------------------------------------ schedule, ham
@dataclass
class ScheduleConfig(Component):
    name: str = opt("triangular", choices=("triangular", "cosine", "constant"))
    warmup_epochs: float = opt(0.0, ge=0)
    start_factor: float = opt(1.0, ge=0, doc="lr factor at step 0 of the warm-up")
    end_factor: float = opt(0.0, ge=0, doc="lr factor at the last step")


@dataclass
class HamConfig(Component):
    alpha: float = opt(200.0, doc="sign-aware part; 0 with beta=0 is the plain base optimizer; < 0 is nHAM")
    beta: float = opt(1e-3, doc="multiplicative decay")
    clamp: Optional[float] = opt(5.0, gt=0, doc="bound on the exponent; null disables")
    variant: str = opt("deployed", choices=HAM_VARIANTS)
    beta_where_grad: bool = opt(False, doc="decay only where grad != 0 (appendix D.4)")
    min_ndim: int = opt(2, ge=0, doc="tensors with fewer dims are never stepped")
    backend: str = opt("auto", choices=HAM_BACKENDS)
    step_biases: bool = opt(False, doc="also step every bias but the norm layers' (the paper's text); false: "
                                       "ndim >= 2 only (the authors' code)")
    max_weight_norm: Optional[float] = opt(None, gt=0, doc="clip each stepped tensor's L2 norm to this after "
                                                           "the step (authors' code: 1000); null: off")


# ------------------------------------------------------------------ logger, trainer, root
@dataclass
class WandbConfig:
    mode: str = opt("online", choices=("online", "offline", "disabled"))
    project: str = opt("ham")
    entity: Optional[str] = opt(None)
    group: Optional[str] = opt(None)
    tags: List[str] = opt([])
    name: Optional[str] = opt(None)


@dataclass
class LoggerConfig(Component):
    wandb: Optional[WandbConfig] = opt(None, doc="null: metrics.jsonl and summary.json only")


@dataclass
class MixupConfig:
    mixup_alpha: float = opt(0.8, ge=0)
    cutmix_alpha: float = opt(1.0, ge=0)
    prob: float = opt(1.0, ge=0, le=1)
    switch_prob: float = opt(0.5, ge=0, le=1)
    mode: str = opt("batch", choices=("batch", "pair", "elem"))


@dataclass
class TrainerConfig(Component):
    epochs: int = opt(100, ge=1, le=100_000)
    max_steps: Optional[int] = opt(None, ge=1, doc="stop after this many steps (smoke runs)")
    global_batch_size: int = opt(1024, ge=1, doc="per-rank batch = global / world size")
    eval_every_epochs: int = opt(5, ge=1)
    log_every_steps: int = opt(50, ge=1)
    checkpoint_every_steps: int = opt(1000, ge=1)
    keep_checkpoints: int = opt(2, ge=1)
    label_smoothing: float = opt(0.1, ge=0, lt=1)
    grad_clip_norm: Optional[float] = opt(None, gt=0)
    precision: str = opt("auto", choices=("auto", "bf16", "fp32"))
    channels_last: Any = opt("auto", choices=AUTO_BOOL)
    compile: bool = opt(False)
    cudnn_benchmark: bool = opt(True)
    num_workers: Any = opt("auto", doc="loader worker processes per rank; auto: the rank's cores - 1, at most 8")
    threads: Any = opt("auto", doc="CPU threads per rank; auto: the rank's share of the cores, 1 for models "
                                   "under 1M parameters (ham/train/threads.py)")
    preempt_check_every: int = opt(10, ge=1)
    progress_bar: Any = opt("auto", choices=AUTO_BOOL)
    deterministic: bool = opt(False)
    eval_batch_size: Optional[int] = opt(None, ge=1)
    mixup: Optional[MixupConfig] = opt(None, doc="timm Mixup/CutMix (DeiT recipe)")

    @classmethod
    def cross_check(cls, node, root, path):
        for key, least in (("num_workers", 0), ("threads", 1)):
            v = node[key]
            if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < least):
                raise ConfigError(f"{path}.{key}={fmt(v)} is not allowed; allowed: auto or an integer >= {least}")


@dataclass
class TrainConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    optimizer: Any = MISSING
    schedule: ScheduleConfig = opt(ScheduleConfig())
    sparsifier: Any = MISSING
    ham: HamConfig = opt(HamConfig())
    logger: LoggerConfig = opt(LoggerConfig())
    trainer: TrainerConfig = opt(TrainerConfig())
    seed: int = opt(0, ge=0)
    experiment_name: Optional[str] = opt(None)
    data_dir: Optional[str] = opt(None)
    resume: str = opt("auto", doc="auto | never | path to a checkpoint file")
    optimized_metric: Optional[str] = opt(None, doc="summary key the task returns (Hydra's optuna sweeper)")


# Typed groups that are null unless a config file fills them, and where users find one that does.
NULL_GROUPS = {"trainer.mixup": "experiment=imagenet_deit_small_full", "optimizer.sam": "optimizer=sam",
               "logger.wandb": "logger=wandb"}


def register(config_dir: Path | None = None) -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent). A component with no option file in
    `config_dir/<group>/` is stored as that group's option too (`sparsifier=snip` works from its declaration)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group in COMPONENT_GROUPS:
        for name, decl in registry.declarations(group).items():
            cs.store(group=f"schema/{group}", name=name, node=decl.schema)
            if config_dir is not None and not (config_dir / group / f"{name}.yaml").is_file():
                cs.store(group=group, name=name, node=decl.schema)


# ------------------------------------------------------------------ checking
def check(cfg: DictConfig) -> None:
    """Every range/choice/cross-field rule of the composed (resolved) config; raises ConfigError, one line."""
    for group in COMPONENT_GROUPS:
        declared = registry.declarations(group)
        node = cfg[group]
        name = node.get("name") if isinstance(node, DictConfig) else None
        if name not in declared:
            raise ConfigError(f"{group}.name={fmt(name)} is not allowed; allowed: {', '.join(declared)}")
        if OmegaConf.get_type(node) is not declared[name].schema:  # an option file without its schema, or renamed
            raise ConfigError(f"{group}.name={name} does not match the {group} option's schema "
                              f"({getattr(OmegaConf.get_type(node), '__name__', 'untyped')}); choose "
                              f"{group}={name} instead of renaming")
    check_node(cfg, cfg, "", TrainConfig)
    for key in ("schedule", "ham", "logger", "trainer", *COMPONENT_GROUPS):
        check_node(cfg[key], cfg, key)
