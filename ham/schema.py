"""Typed config schema: every option of every component, declared once, with its allowed values.

Each component (model, dataset, optimizer, schedule, each sparsifier, ham, trainer, logger) is a dataclass
registered with Hydra's ConfigStore. The root schema `train_schema` types the fixed groups directly; the groups
whose options carry different keys (model, dataset, optimizer, sparsifier) pull their option's schema in through
the option file's defaults list (`- /schema/<group>/<option>@_here_`). Hydra then rejects unknown keys and wrong
types while composing; `check(cfg)` adds what types cannot say (ranges, choices, finiteness, cross-field rules).

Nothing here imports torch: `train.py --help` and every config error come back without paying for it.
The YAML files in configs/ keep the values and the comments that explain the paper's choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ham.errors import ConfigError, one_line
from ham.sparse.schedules import acdc_phase_epochs, acdc_schedule_fits

# Names the registries implement (tests/test_config.py checks they agree with ham.models / ham.sparse / ...).
MODEL_NAMES = ("resnet18", "resnet50", "deit_small", "small_cnn", "mlp")
DATASET_NAMES = ("imagenet", "cifar100", "digits", "synthetic")
SPARSIFIER_NAMES = ("dense", "random", "acdc", "rigl", "str", "signin", "mw")
HAM_VARIANTS = ("deployed", "signed")
HAM_BACKENDS = ("auto", "foreach", "fused", "reference")
DISTRIBUTIONS = ("uniform", "erk", "balanced")
AUTO_BOOL = ("auto", True, False)


def opt(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, choices: tuple | None = None, finite: bool = True, each: bool = False,
        doc: str = "") -> Any:
    """A dataclass field with its allowed values. `each`: the bounds apply to every element of a list."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "finite": finite, "each": each, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: dataclasses.replace(default), metadata=meta)
    return field(default=default, metadata=meta)


class Component:
    """Base of the schema dataclasses: `cross_check(node, root, path)` for rules across keys (override)."""

    @classmethod
    def cross_check(cls, node: DictConfig, root: DictConfig, path: str) -> None:
        pass


# ------------------------------------------------------------------ model
@dataclass
class ModelConfig(Component):
    name: str = opt(choices=MODEL_NAMES)
    kwargs: Dict[str, Any] = opt({}, doc="extra constructor arguments")


@dataclass
class NoKwargs:
    pass


@dataclass
class ResNet50Kwargs:
    zero_init_residual: bool = opt(True, doc="last BN gamma of each block = 0 (ffcv-imagenet)")


@dataclass
class DeiTKwargs:
    drop_path_rate: float = opt(0.1, ge=0, lt=1, doc="stochastic depth")
    drop_rate: float = opt(0.0, ge=0, lt=1, doc="dropout before the head")


@dataclass
class PlainModel(ModelConfig):
    kwargs: NoKwargs = opt(NoKwargs())


@dataclass
class ResNet50Model(ModelConfig):
    name: str = opt("resnet50", choices=("resnet50",))
    kwargs: ResNet50Kwargs = opt(ResNet50Kwargs())


@dataclass
class DeiTSmallModel(ModelConfig):
    name: str = opt("deit_small", choices=("deit_small",))
    kwargs: DeiTKwargs = opt(DeiTKwargs())
    patch_size = 16  # class constant, not a config key

    @classmethod
    def cross_check(cls, node, root, path):
        size = _select(root, "dataset.img_size")
        if size is not None and (size < cls.patch_size or size % cls.patch_size):
            raise ConfigError(f"model=deit_small needs dataset.img_size to be a multiple of {cls.patch_size} "
                              f"(its patch size), got {size} (dataset={_select(root, 'dataset.name')}); allowed: "
                              f"dataset.img_size=224 or another multiple of {cls.patch_size}, or another model")


# ------------------------------------------------------------------ dataset
@dataclass
class FFCVOptions:
    """dataset.loader=ffcv: data_dir holds train.beton/val.beton from `python -m ham.data.ffcv_write`."""
    num_workers: Optional[int] = opt(None, ge=1, doc="decoding threads per rank; null: trainer.num_workers")
    os_cache: bool = opt(True, doc="memory-map the files through the OS page cache (shared by a node's ranks)")
    batches_ahead: int = opt(3, ge=1, doc="batches decoded ahead of the training step")


@dataclass
class ProgressiveResizing:
    enabled: bool = opt(False, doc="ffcv-imagenet's progressive resizing of the training crops")
    start_res: int = opt(160, ge=32, doc="training resolution up to start_epoch")
    end_res: int = opt(192, ge=32, doc="training resolution from end_epoch (in between: linear, multiples of 32)")
    start_epoch: Optional[int] = opt(None, ge=0, doc="null: 65/88 of trainer.epochs (ffcv-imagenet)")
    end_epoch: Optional[int] = opt(None, ge=1, doc="null: 76/88 of trainer.epochs (ffcv-imagenet)")


@dataclass
class ImageNetFFCVOptions(FFCVOptions):
    progressive: ProgressiveResizing = opt(ProgressiveResizing())
    eval_img_size: Optional[int] = opt(None, ge=32, doc="validation resolution; null: dataset.img_size")
    test_time_flip: bool = opt(False, doc="validation logits averaged over the image and its mirror")


FFCV_NATIVE_SIZE = {"cifar100": 32, "digits": 8}


@dataclass
class DatasetConfig(Component):
    name: str = opt(choices=DATASET_NAMES)
    loader: str = opt("torchvision", choices=("torchvision", "ffcv"))
    img_size: int = opt(ge=1, doc="training/eval resolution")
    download: bool = opt(False, doc="fetch the dataset when missing (cifar100 only)")
    augment: bool = opt(True)
    options: NoKwargs = opt(NoKwargs())
    ffcv: FFCVOptions = opt(FFCVOptions(), doc="options of dataset.loader=ffcv")
    smoke_images: Optional[int] = opt(None, ge=1, doc="smoke tests (smoke=cpu): this many generated training "
                                                      "images of the dataset's shape instead of its files")

    @classmethod
    def cross_check(cls, node, root, path):
        if node.smoke_images is not None and node.loader == "ffcv":
            raise ConfigError(f"{path}.smoke_images={node.smoke_images} does not go with {path}.loader=ffcv (no "
                              f"files are read); allowed: {path}.loader=torchvision with smoke_images")
        if node.loader != "ffcv":
            return
        if node.name == "synthetic":
            raise ConfigError(f"{path}.loader=ffcv is not available for dataset=synthetic (no files to read); "
                              f"allowed: {path}.loader=torchvision, or dataset=imagenet|cifar100|digits")
        native = FFCV_NATIVE_SIZE.get(node.name)
        if native is not None and node.img_size != native:
            raise ConfigError(f"{path}.img_size={node.img_size} does not fit {path}.loader=ffcv for "
                              f"dataset={node.name} (its files hold {native}x{native} images and the loader does not "
                              f"resize them); allowed: {path}.img_size={native}, or {path}.loader=torchvision")


@dataclass
class ImageNetOptions:
    auto_augment: Optional[str] = opt(None, doc="timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1")
    re_prob: float = opt(0.0, ge=0, le=1, doc="random-erasing probability")
    re_mode: str = opt("pixel", choices=("const", "rand", "pixel"))
    color_jitter: float = opt(0.4, ge=0)
    interpolation: Optional[str] = opt(None, choices=(None, "bilinear", "bicubic", "random"))
    crop_pct: float = opt(0.875, gt=0, le=1, doc="validation centre-crop ratio")


@dataclass
class DigitsOptions:
    val_fraction: float = opt(0.2, gt=0, lt=1)
    shift: int = opt(1, ge=0, doc="random shift augmentation, pixels")


@dataclass
class SyntheticOptions:
    num_classes: int = opt(10, ge=1)
    in_chans: int = opt(3, ge=1)
    train_size: int = opt(256, ge=1)
    val_size: int = opt(64, ge=1)


@dataclass
class ImageNetDataset(DatasetConfig):
    options: ImageNetOptions = opt(ImageNetOptions())
    ffcv: ImageNetFFCVOptions = opt(ImageNetFFCVOptions(), doc="options of dataset.loader=ffcv")

    @classmethod
    def cross_check(cls, node, root, path):
        super().cross_check(node, root, path)
        f, o = node.ffcv, node.options
        tricks = [k for k, on in (("progressive.enabled", f.progressive.enabled),
                                  ("eval_img_size", f.eval_img_size is not None),
                                  ("test_time_flip", f.test_time_flip)) if on]
        if node.loader != "ffcv":
            if tricks:
                raise ConfigError(f"{path}.ffcv.{tricks[0]} applies to {path}.loader=ffcv only (it is "
                                  f"{node.loader}); allowed: {path}.loader=ffcv, or leave it at its default")
            return
        timm = [k for k in ("auto_augment", "interpolation") if o[k] is not None] + (["re_prob"] if o.re_prob else [])
        if timm:
            raise ConfigError(f"{path}.options.{timm[0]} is not available with {path}.loader=ffcv (its decoder does "
                              f"RandomResizedCrop + flip, resizing with OpenCV's INTER_AREA); allowed: "
                              f"{path}.options.{timm[0]}=null/0, or {path}.loader=torchvision")
        model = _select(root, "model.name")
        p = f.progressive
        if p.enabled:
            epochs = _select(root, "trainer.epochs")
            start = p.start_epoch if p.start_epoch is not None else round(65 / 88 * epochs)
            end = p.end_epoch if p.end_epoch is not None else round(76 / 88 * epochs)
            if not 0 <= start < end <= epochs:
                raise ConfigError(f"{path}.ffcv.progressive: start_epoch={start} and end_epoch={end} do not fit "
                                  f"trainer.epochs={epochs}; allowed: 0 <= start_epoch < end_epoch <= {epochs}")
            if p.start_res > p.end_res:
                raise ConfigError(f"{path}.ffcv.progressive.start_res={p.start_res} is larger than end_res="
                                  f"{p.end_res}; allowed: start_res <= end_res")
        fixed = model == "deit_small"  # position embeddings for one patch grid
        if fixed and (p.enabled or (f.eval_img_size is not None and f.eval_img_size != node.img_size)):
            key = "progressive.enabled" if p.enabled else "eval_img_size"
            raise ConfigError(f"{path}.ffcv.{key} does not fit model=deit_small (its position embeddings fix the "
                              f"resolution to {path}.img_size={node.img_size}); allowed: the defaults, or a ResNet")


@dataclass
class CIFAR100Dataset(DatasetConfig):
    pass


@dataclass
class DigitsDataset(DatasetConfig):
    options: DigitsOptions = opt(DigitsOptions())


@dataclass
class SyntheticDataset(DatasetConfig):
    options: SyntheticOptions = opt(SyntheticOptions())


# ------------------------------------------------------------------ optimizer
@dataclass
class SAMConfig:
    rho: float = opt(0.05, gt=0, doc="SAM neighbourhood radius")
    adaptive: bool = opt(False, doc="ASAM")


@dataclass
class OptimizerConfig(Component):
    name: str = opt()
    lr: float = opt(gt=0, doc="peak lr for the GLOBAL batch")
    weight_decay: float = opt(ge=0)
    no_weight_decay_1d: bool = opt(True, doc="no decay on biases and norm parameters")
    fused: Any = opt("auto", choices=AUTO_BOOL, doc="torch's fused SGD/AdamW kernels (auto: where supported)")
    sam: Optional[SAMConfig] = opt(None, doc="set by optimizer=sam")


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = opt("sgd", choices=("sgd",))
    momentum: float = opt(0.9, ge=0, lt=1)
    nesterov: bool = opt(False)


@dataclass
class AdamWConfig(OptimizerConfig):
    name: str = opt("adamw", choices=("adamw",))
    betas: List[float] = opt([0.9, 0.999], ge=0, lt=1, each=True)
    eps: float = opt(1e-8, gt=0)

    @classmethod
    def cross_check(cls, node, root, path):
        if len(node.betas) != 2:
            raise ConfigError(f"{path}.betas={list(node.betas)} is not allowed; it must be two numbers in [0, 1)")


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


# ------------------------------------------------------------------ sparsifiers
@dataclass
class SparsifierConfig(Component):
    name: str = opt(choices=SPARSIFIER_NAMES)
    sparsity: float = opt(0.9, ge=0, lt=1, doc="exact final fraction of zeros over conv/linear weights")
    keep_first_dense: bool = opt(False)
    keep_last_dense: bool = opt(False)


@dataclass
class DenseSparsifier(Component):
    name: str = opt("dense", choices=("dense",))
    sparsity: float = opt(0.0, choices=(0.0,), doc="dense: always 0")


@dataclass
class RandomSparsifier(SparsifierConfig):
    name: str = opt("random", choices=("random",))
    distribution: str = opt("erk", choices=DISTRIBUTIONS)
    seed: int = opt(0, ge=0, doc="mask seed, identical on every rank")


@dataclass
class AcDcSparsifier(SparsifierConfig):
    name: str = opt("acdc", choices=("acdc",))
    warmup_fraction: float = opt(0.1, ge=0, lt=1)
    phase_fraction: float = opt(0.05, gt=0, lt=1)
    last_dense_fraction: float = opt(0.75, ge=0, lt=1)
    final_fraction: float = opt(0.85, ge=0, lt=1)
    compress_epochs: Optional[List[int]] = opt(None, ge=0, each=True, doc="explicit list overrides fractions")
    decompress_epochs: Optional[List[int]] = opt(None, ge=0, each=True)
    reset_momentum: str = opt("all", choices=("all", "pruned_layers", "none"))

    @classmethod
    def cross_check(cls, node, root, path):
        check_acdc_schedule(node, _select(root, "trainer.epochs"), path)


@dataclass
class RigLSparsifier(SparsifierConfig):
    name: str = opt("rigl", choices=("rigl",))
    distribution: str = opt("erk", choices=DISTRIBUTIONS)
    delta_t: int = opt(100, ge=1, doc="steps between mask updates (at delta_t_batch, if set)")
    delta_t_batch: Optional[int] = opt(4096, ge=1, doc="global batch delta_t is counted at; null: this run's")
    min_updates: int = opt(10, ge=0, doc="short runs: delta_t capped so that at least this many updates run")
    drop_fraction: float = opt(0.3, gt=0, le=1)
    end_fraction: float = opt(0.75, gt=0, le=1)
    seed: int = opt(0, ge=0)


@dataclass
class STRSparsifier(SparsifierConfig):
    name: str = opt("str", choices=("str",))
    s_init: float = opt(-5.0)
    threshold_weight_decay: Optional[float] = opt(None, ge=0, doc="null: the optimizer's weight decay")
    exact_target: bool = opt(True, doc="final projection to exactly `sparsity`")
    mode: str = opt("budget", choices=("budget", "reference"),
                    doc="budget: a controller holds a rising sparsity budget; reference: s_init + decay only")
    budget_start_fraction: float = opt(0.0, ge=0, lt=1)
    budget_end_fraction: float = opt(0.75, gt=0, le=1, doc="the budget reaches `sparsity` here")
    budget_every: int = opt(10, ge=1, doc="steps between controller updates")

    @classmethod
    def cross_check(cls, node, root, path):
        if node.budget_start_fraction >= node.budget_end_fraction:
            raise ConfigError(f"{path}.budget_start_fraction={node.budget_start_fraction} is not allowed; it must "
                              f"be below {path}.budget_end_fraction={node.budget_end_fraction}")


@dataclass
class SignInSparsifier(SparsifierConfig):
    name: str = opt("signin", choices=("signin",))
    mask_source: str = opt("random", choices=("random", "acdc", "rigl"))
    period: int = opt(10, ge=1, doc="epochs between resets of m^2 - w^2")
    weight_decay_form: str = opt("factors", choices=("factors", "product"))
    product_weight_decay: float = opt(5e-5, ge=0)
    reset_momentum: bool = opt(True)
    source: Dict[str, Any] = opt({}, doc="options of the mask source (checked against its schema)")

    @classmethod
    def cross_check(cls, node, root, path):
        source_cls = SPARSIFIER_SCHEMAS[node.mask_source]
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
    return {f.name: f.default for f in dataclasses.fields(SPARSIFIER_SCHEMAS[mask_source])
            if f.name not in SHARED_SPARSIFIER_KEYS and f.default is not dataclasses.MISSING}


@dataclass
class MWSparsifier(SparsifierConfig):
    name: str = opt("mw", choices=("mw",))
    sparsity: float = opt(0.0, choices=(0.0,), doc="a dense baseline: always 0 (sparse m*w: sparsifier=signin)")
    product_weight_decay: float = opt(5e-5, ge=0)
    gamma: float = opt(1.0, ge=0, doc="m^2 - w^2 at init")


SPARSIFIER_SCHEMAS: dict[str, type] = {
    "dense": DenseSparsifier, "random": RandomSparsifier, "acdc": AcDcSparsifier, "rigl": RigLSparsifier,
    "str": STRSparsifier, "signin": SignInSparsifier, "mw": MWSparsifier}
MODEL_SCHEMAS: dict[str, type] = {"resnet18": PlainModel, "resnet50": ResNet50Model, "deit_small": DeiTSmallModel,
                                  "small_cnn": PlainModel, "mlp": PlainModel}
DATASET_SCHEMAS: dict[str, type] = {"imagenet": ImageNetDataset, "cifar100": CIFAR100Dataset,
                                    "digits": DigitsDataset, "synthetic": SyntheticDataset}
OPTIMIZER_SCHEMAS: dict[str, type] = {"sgd": SGDConfig, "adamw": AdamWConfig}


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
                raise ConfigError(f"{path}.{key}={_fmt(v)} is not allowed; allowed: auto or an integer >= {least}")


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


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schemas in (("model", MODEL_SCHEMAS), ("dataset", DATASET_SCHEMAS), ("optimizer", OPTIMIZER_SCHEMAS),
                           ("sparsifier", SPARSIFIER_SCHEMAS)):
        for name, cls in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=cls)


def describe(cls: type) -> list[str]:
    """`key: default  (allowed)  doc` per field, for --help."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "..."
        meta = f.metadata or {}
        allowed = ""
        if meta.get("choices") is not None:
            allowed = "|".join(_fmt(c) for c in meta["choices"])
        else:
            rng = [f"{sym} {meta[k]:g}" for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                   if meta.get(k) is not None]
            allowed = " and ".join(rng)
        text = f"{f.name}: {_fmt(default) if not isinstance(default, (list, dict)) else default}"
        if allowed:
            text += f"  ({allowed})"
        if meta.get("doc"):
            text += f"  {meta['doc']}"
        out.append(text)
    return out


# ------------------------------------------------------------------ checking
def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _fmt(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _describe(meta: dict, is_int: bool) -> str:
    if meta["choices"] is not None:
        return "allowed: " + ", ".join(_fmt(c) for c in meta["choices"])
    rng = []
    for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta[k] is not None:
            rng.append(f"{sym} {meta[k]:g}")
    kind = "an integer" if is_int else "a finite number"
    return f"it must be {kind}" + (f" {' and '.join(rng)}" if rng else "")


def _value_ok(v: Any, meta: dict) -> bool:
    if meta["choices"] is not None:
        return any(v == c and type(v) is type(c) or (isinstance(c, float) and isinstance(v, (int, float))
                                                      and not isinstance(v, bool) and v == c)
                   for c in meta["choices"])
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True  # not a number: the type was checked by OmegaConf
    if isinstance(v, float) and meta["finite"] and not math.isfinite(v):
        return False
    return ((meta["ge"] is None or v >= meta["ge"]) and (meta["gt"] is None or v > meta["gt"])
            and (meta["le"] is None or v <= meta["le"]) and (meta["lt"] is None or v < meta["lt"]))


def check_node(node: DictConfig, root: DictConfig, path: str, cls: type | None = None) -> None:
    """Range/choice checks of one typed node and its typed children, then its cross-field rules."""
    cls = cls or OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(cls):
        return
    names = {f.name for f in dataclasses.fields(cls)}
    for extra in node.keys():  # `+key=value` adds keys past the schema: no component would read them
        if extra not in names:
            key = f"{path}.{extra}" if path else str(extra)
            raise ConfigError(f"{key} is not a config key; keys of {path or 'the root config'}: "
                              f"{', '.join(sorted(names))}")
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        child = node._get_node(f.name) if f.name in node else None
        if isinstance(child, DictConfig):
            if not child._is_none():
                check_node(child, root, key)
            continue
        v = child._value() if child is not None else None
        if isinstance(child, ListConfig) and not child._is_none():
            v = child  # its elements, resolved (`each` bounds apply to them)
        meta = f.metadata
        if not meta:
            continue
        values = list(v) if isinstance(v, ListConfig) and meta["each"] else [v]
        for item in values:
            if item is None and (f.default is None or meta["choices"] and None in meta["choices"]):
                continue
            if not _value_ok(item, meta):
                shown = list(v) if isinstance(v, ListConfig) else v
                is_int = f.type in (int, "int", Optional[int], "Optional[int]", List[int], "Optional[List[int]]")
                raise ConfigError(f"{key}={_fmt(shown)} is not allowed; {_describe(meta, is_int)}")
    if issubclass(cls, Component):
        cls.cross_check(node, root, path)


def check(cfg: DictConfig) -> None:
    """Every range/choice/cross-field rule of the composed (resolved) config; raises ConfigError, one line."""
    for group, schemas in (("model", MODEL_SCHEMAS), ("dataset", DATASET_SCHEMAS), ("optimizer", OPTIMIZER_SCHEMAS),
                           ("sparsifier", SPARSIFIER_SCHEMAS)):
        node = cfg[group]
        name = node.get("name") if isinstance(node, DictConfig) else None
        if name not in schemas:
            raise ConfigError(f"{group}.name={_fmt(name)} is not allowed; allowed: {', '.join(schemas)}")
        if OmegaConf.get_type(node) is not schemas[name]:  # an option file without its schema, or a renamed one
            raise ConfigError(f"{group}.name={name} does not match the {group} option's schema "
                              f"({getattr(OmegaConf.get_type(node), '__name__', 'untyped')}); choose "
                              f"{group}={name} instead of renaming")
    check_node(cfg, cfg, "", TrainConfig)
    for key in ("schedule", "ham", "logger", "trainer", "model", "dataset", "optimizer", "sparsifier"):
        check_node(cfg[key], cfg, key)


def check_acdc_schedule(node: Any, epochs: int, path: str = "sparsifier") -> None:
    fractions = {k: node[k] for k in ("warmup_fraction", "phase_fraction", "last_dense_fraction", "final_fraction")}
    c, d = acdc_phase_epochs(epochs, **fractions)
    c = list(node["compress_epochs"]) if node["compress_epochs"] is not None else c
    d = list(node["decompress_epochs"]) if node["decompress_epochs"] is not None else d
    if not acdc_schedule_fits(c, d, epochs):
        raise ConfigError(f"{path}: the Ac/Dc phase schedule does not fit trainer.epochs={epochs} (compress at "
                          f"{c}, decompress at {d}); allowed: at least 20 epochs with the default fractions, or "
                          f"explicit {path}.compress_epochs/decompress_epochs that alternate inside the run")
