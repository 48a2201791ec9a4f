"""Optional parts of the framework and the extra that installs each (torch-free; errors name the fix).

`uv sync --extra dev` (the README's install) brings slurm and hpo too; a plain `pip install 'ham-optim[train]'`
does not, and Hydra would then answer with a bare "Could not find 'hydra/launcher/submitit_local'".
"""

from __future__ import annotations

import importlib.util

# extra -> (module that proves it is installed, what it provides)
EXTRAS = {
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher (SLURM, local DDP jobs)"),
    "hpo": ("hydra_plugins.hydra_optuna_sweeper", "Hydra's Optuna sweeper"),
    "ffcv": ("ffcv", "the ffcv data pipeline"),
    "graph": ("torch_geometric", "PyTorch Geometric (node classification: dataset=sbm|cora|..., model=gcn|gat|...)"),
}
# Hydra config group options that only exist with an extra installed
PLUGIN_OPTIONS = {
    ("hydra/launcher", "submitit_local"): "slurm",
    ("hydra/launcher", "submitit_slurm"): "slurm",
    ("hydra/launcher", "ham_slurm"): "slurm",
    ("hydra/sweeper", "optuna"): "hpo",
    ("hparams_search", "ham_optuna"): "hpo",
}


def installed(extra: str) -> bool:
    module = EXTRAS[extra][0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package (hydra_plugins) is absent
        return False


def install_hint(extra: str) -> str:
    return f"uv sync --extra {extra}, or pip install 'ham-optim[{extra}]'"


def missing_message(extra: str, what: str) -> str | None:
    """One line if `extra` is not installed, naming what needed it and how to install it; else None."""
    if installed(extra):
        return None
    return f"{what} needs {EXTRAS[extra][1]}, which is not installed; install the {extra} extra ({install_hint(extra)})"


def missing_for_option(group: str, option: str) -> str | None:
    extra = PLUGIN_OPTIONS.get((group, option))
    return missing_message(extra, f"{group}={option}") if extra else None


def require(extra: str, what: str) -> None:
    """ConfigError (one line, exit 2) if `extra` is not installed."""
    problem = missing_message(extra, what)
    if problem:
        from ham.errors import ConfigError

        raise ConfigError(problem)
