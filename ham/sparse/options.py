"""The sparsifiers' declarations: each one's typed options, label and facts (ham/registry.py). Torch-free.

The implementations live beside this file (`build=`); the option YAMLs in configs/sparsifier/ hold only the
values a preset needs and the paper's comments. Fact `mask_source`: Sign-In can take its masks from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from ham.errors import ConfigError, one_line
from ham.options import Component, check_node, opt, select
from ham.registry import declare, defaults, get, named_with
from ham.sparse.distributions import DISTRIBUTIONS
from ham.sparse.schedules import acdc_phase_epochs, acdc_schedule_fits


@dataclass
class SparsifierConfig(Component):
    """Options every mask-based sparsifier shares."""
    name: str = opt()
    sparsity: float = opt(0.9, ge=0, lt=1, doc="exact final fraction of zeros over conv/linear weights")
    keep_first_dense: bool = opt(False)
    keep_last_dense: bool = opt(False)


@declare("sparsifier", "dense", build="ham.sparse.base:Dense", label="Dense")
class DenseSparsifier(Component):
    """No pruning."""
    sparsity: float = opt(0.0, choices=(0.0,), doc="dense: always 0")


@declare("sparsifier", "random", build="ham.sparse.random_pai:RandomPaI", label="Random", mask_source=True)
class RandomSparsifier(SparsifierConfig):
    """Random pruning at initialisation: fixed random masks (uniform / ERK / balanced per layer)."""
    distribution: str = opt("erk", choices=DISTRIBUTIONS)
    seed: int = opt(0, ge=0, doc="mask seed, identical on every rank")


@declare("sparsifier", "acdc", build="ham.sparse.acdc:AcDc", label="AC/DC", mask_source=True)
class AcDcSparsifier(SparsifierConfig):
    """Ac/Dc (Peste et al. 2021): alternating dense and global-magnitude-pruned phases."""
    warmup_fraction: float = opt(0.1, ge=0, lt=1)
    phase_fraction: float = opt(0.05, gt=0, lt=1)
    last_dense_fraction: float = opt(0.75, ge=0, lt=1)
    final_fraction: float = opt(0.85, ge=0, lt=1)
    compress_epochs: Optional[List[int]] = opt(None, ge=0, each=True, doc="explicit list overrides fractions")
    decompress_epochs: Optional[List[int]] = opt(None, ge=0, each=True)
    reset_momentum: str = opt("all", choices=("all", "pruned_layers", "none"))

    @classmethod
    def cross_check(cls, node, root, path):
        check_acdc_schedule(node, select(root, "trainer.epochs"), path)


@declare("sparsifier", "rigl", build="ham.sparse.rigl:RigL", label="RiGL", mask_source=True)
class RigLSparsifier(SparsifierConfig):
    """RigL (Evci et al. 2020): drop by magnitude, regrow by dense gradient, ERK layer densities."""
    distribution: str = opt("erk", choices=DISTRIBUTIONS)
    delta_t: int = opt(100, ge=1, doc="steps between mask updates (at delta_t_batch, if set)")
    delta_t_batch: Optional[int] = opt(4096, ge=1, doc="global batch delta_t is counted at; null: this run's")
    min_updates: int = opt(10, ge=0, doc="short runs: delta_t capped so that at least this many updates run")
    drop_fraction: float = opt(0.3, gt=0, le=1)
    end_fraction: float = opt(0.75, gt=0, le=1)
    seed: int = opt(0, ge=0)


@declare("sparsifier", "str", build="ham.sparse.str_:STR", label="STR")
class STRSparsifier(SparsifierConfig):
    """STR (Kusupati et al. 2020): learned soft thresholds per layer (as published: s_init + threshold decay)."""
    sparsity: float = opt(0.9, ge=0, lt=1, doc="reference mode: the cell's target (STR's sparsity follows from "
                                               "s_init and the decay; see summary.json); budget/projection: exact")
    s_init: float = opt(-5.0)
    threshold_weight_decay: Optional[float] = opt(None, ge=0, doc="null: the optimizer's weight decay")
    exact_target: bool = opt(False, doc="ours: final projection to exactly `sparsity` (not in STR)")
    mode: str = opt("reference", choices=("reference", "budget"),
                    doc="reference: STR as published (s_init + decay only); budget (ours): a controller holds a "
                        "rising sparsity budget")
    budget_start_fraction: float = opt(0.0, ge=0, lt=1)
    budget_end_fraction: float = opt(0.75, gt=0, le=1, doc="the budget reaches `sparsity` here")
    budget_every: int = opt(10, ge=1, doc="steps between controller updates")

    @classmethod
    def cross_check(cls, node, root, path):
        if node.budget_start_fraction >= node.budget_end_fraction:
            raise ConfigError(f"{path}.budget_start_fraction={node.budget_start_fraction} is not allowed; it must "
                              f"be below {path}.budget_end_fraction={node.budget_end_fraction}")

    @classmethod
    def row_label(cls, node, label):
        """Our additions are named in every table: never a paper cell's "STR"."""
        if node.get("mode") == "budget":
            return f"{label} + budget (ours)"
        return f"{label} + projection (ours)" if node.get("exact_target") else label


@declare("sparsifier", "signin", build="ham.sparse.signin:SignIn", label="Sign-In")
class SignInSparsifier(SparsifierConfig):
    """Sign-In (Gadhikar & Burkholz 2024): m*w reparameterisation with resets, masks from a source."""
    mask_source: str = opt("random", choices=named_with("sparsifier", "mask_source"))
    period: int = opt(10, ge=1, doc="epochs between resets of m^2 - w^2")
    weight_decay_form: str = opt("factors", choices=("factors", "product"))
    product_weight_decay: float = opt(5e-5, ge=0)
    reset_momentum: bool = opt(True)
    source: Dict[str, Any] = opt({}, doc="options of the mask source (checked against its schema)")

    @classmethod
    def cross_check(cls, node, root, path):
        source_cls = get("sparsifier", node.mask_source).schema
        allowed = [f.name for f in dataclasses.fields(source_cls) if f.name not in SHARED_SPARSIFIER_KEYS]
        for key in node.source:
            if key not in allowed:
                raise ConfigError(f"{path}.source.{key} is not an option of mask_source={node.mask_source}; "
                                  f"allowed: {', '.join(allowed)}")
        try:
            typed = OmegaConf.merge(OmegaConf.structured(source_cls(sparsity=node.sparsity)), node.source)
        except Exception as e:  # noqa: BLE001 -- an OmegaConf type error; say which key
            raise ConfigError(f"{path}.source: {one_line(e)}") from None
        check_node(typed, root, f"{path}.source")


SHARED_SPARSIFIER_KEYS = ("name", "sparsity", "keep_first_dense", "keep_last_dense")


def source_defaults(mask_source: str) -> dict[str, Any]:
    """A Sign-In mask source's own options at their config defaults (so RiGL+Sign-In updates like RiGL)."""
    return defaults("sparsifier", mask_source, skip=SHARED_SPARSIFIER_KEYS)


@declare("sparsifier", "mw", build="ham.sparse.mw:MW", label="m*w")
class MWSparsifier(SparsifierConfig):
    """Dense m*w reparameterisation baseline (the paper's Fig. 2a)."""
    sparsity: float = opt(0.0, choices=(0.0,), doc="a dense baseline: always 0 (sparse m*w: sparsifier=signin)")
    product_weight_decay: float = opt(5e-5, ge=0)
    gamma: float = opt(1.0, ge=0, doc="m^2 - w^2 at init")


def check_acdc_schedule(node: Any, epochs: int, path: str = "sparsifier") -> None:
    fractions = {k: node[k] for k in ("warmup_fraction", "phase_fraction", "last_dense_fraction", "final_fraction")}
    c, d = acdc_phase_epochs(epochs, **fractions)
    c = list(node["compress_epochs"]) if node["compress_epochs"] is not None else c
    d = list(node["decompress_epochs"]) if node["decompress_epochs"] is not None else d
    if not acdc_schedule_fits(c, d, epochs):
        raise ConfigError(f"{path}: the Ac/Dc phase schedule does not fit trainer.epochs={epochs} (compress at "
                          f"{c}, decompress at {d}); allowed: at least 20 epochs with the default fractions, or "
                          f"explicit {path}.compress_epochs/decompress_epochs that alternate inside the run")


@declare("sparsifier", "snip", build="ham.sparse.snip:SNIP", label="SNIP")
class SNIPSparsifier(SparsifierConfig):
    """SNIP (Lee et al. 2019): pruning at initialisation by connection sensitivity |weight x gradient|."""
    batches: int = opt(1, ge=1, le=1000, doc="first training batches the scores are summed over (no update on "
                                               "them); SNIP used one")
