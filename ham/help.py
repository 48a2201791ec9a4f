"""`train.py --help`: usage, every config group with its options and components, the fixed groups' keys.

The page is Hydra's `hydra.help.template` (configs/hydra/help/) whose `${ham_help:}` resolver renders
`help_text()`; `fast_help` prints it without Hydra's listing of every config group (~1.5 s) when the template
does not use that listing. Torch-free.
"""

from __future__ import annotations

from string import Template

from omegaconf import OmegaConf

from ham import registry, schema
from ham.config import CONFIG_DIR, GROUPS, group_options
from ham.options import describe


def register_resolver() -> None:
    """`${ham_help:}` in the help template (idempotent)."""
    if not OmegaConf.has_resolver("ham_help"):
        OmegaConf.register_new_resolver("ham_help", help_text)


def fast_help(args: list[str]) -> bool:
    """`--help` rendered from the composed hydra.help.template, as Hydra does, but without Hydra's eager listing
    of every config group (a deep copy of the config repository per group: ~1.5 s here) when the template does
    not use that listing. Returns False (Hydra answers) in every other case."""
    if not any(a in ("-h", "--help") for a in args):
        return False
    overrides = [a for a in args if a not in ("-h", "--help")]
    if any(a.startswith("-") for a in overrides):  # other flags alongside: Hydra's own handling
        return False
    from hydra import compose, initialize_config_dir

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
        lines += [f"  {prefix}.{line}" for line in describe(cls)]
    lines += ["", "== Components (group=name: what it is; its options: python train.py group=name --cfg job) =="]
    for group in registry.FAMILIES:
        lines += [f"  {group}={d.name}: {d.doc or d.label}" for d in registry.declarations(group).values()]
    lines += ["", "Exit codes: 0 done, 1 failure, 2 bad input (one line, nothing created), 3 preempted (requeue),",
              "130 Ctrl-C (checkpoint saved; a second Ctrl-C stops at once).",
              "Hydra's own flags: --cfg job|hydra|all, --resolve, --package, --info, --hydra-help, -sc install=bash.",
              "", "== This run's config (with your overrides) ==", "$CONFIG"]
    return "\n".join(lines)
