"""Node classification, full batch (paper section 6, appendix D.4.2; the setup of Luo et al. 2024).

One optimizer step = one epoch of Luo et al.'s loop: the model sees the whole graph, the loss is the cross-entropy
over the training nodes (the targets hold -100 elsewhere, which cross-entropy ignores), and the model is evaluated
after every step on the validation and test nodes. Reported, as the paper does: the best validation metric over
training (`val/best`), with the test metric of that same evaluation (`test/at_best_val`); accuracy, or ROC-AUC
where the dataset's declaration says so (minesweeper). Checkpoints follow trainer.checkpoint_every_steps only (not
every epoch: an epoch is one step here); the best-validation record is part of them, so a resumed run reports
what an uninterrupted one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ham import registry
from ham.errors import ConfigError
from ham.train.distributed import DistEnv

IGNORE = -100  # F.cross_entropy's default ignore_index


@dataclass
class Graph:
    """The model's input: node features and edges (moved to the device together)."""
    x: torch.Tensor
    edge_index: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "Graph":
        return Graph(self.x.to(device, non_blocking=non_blocking),
                     self.edge_index.to(device, non_blocking=non_blocking))


class FullGraphLoader:
    """One batch per epoch, the whole graph: (Graph, targets). The ResumableLoader interface the loop uses."""

    test_time_flip = False

    def __init__(self, graph: Graph, targets: torch.Tensor, **eval_data: Any):
        self.graph, self.targets, self.eval_data = graph, targets, eval_data
        self._start = 0

    def __len__(self) -> int:
        return 1

    def set_epoch(self, epoch: int) -> None:
        pass

    def set_start_batch(self, k: int) -> None:
        self._start = k

    def __iter__(self):
        if self._start == 0:
            yield self.graph, self.targets
        self._start = 0


class NodeClassification:
    save_every_epoch = False  # an epoch is one step: checkpoints every trainer.checkpoint_every_steps

    def data(self, cfg: DictConfig, env: DistEnv, *, per_rank_batch: int, eval_batch: int, channels_last: bool):
        from ham.data.datasets import DatasetInfo

        if env.world_size > 1:
            raise ConfigError(f"dataset={cfg.dataset.name} trains full batch on one process; allowed: world size 1 "
                              f"(python train.py, not torchrun)")
        options = OmegaConf.to_container(cfg.dataset.options, resolve=True)
        if cfg.dataset.smoke_images is not None:  # smoke=cpu: a small generated graph of the dataset's shape
            from ham.data.graphs import sbm

            classes, features = registry.fact("dataset", cfg.dataset.name, "shape") or (
                options.get("num_classes", 5), options.get("num_features", 32))
            g = sbm(name=cfg.dataset.name, seed=cfg.seed, num_classes=classes, num_features=features,
                    nodes_per_class=max(4, cfg.dataset.smoke_images // classes))
        else:
            builder = registry.get("dataset", cfg.dataset.name).implementation()
            g = builder(cfg.data_dir, name=cfg.dataset.name, seed=cfg.seed, **options)
        targets = torch.where(g.train_mask, g.y, torch.full_like(g.y, IGNORE))
        graph = Graph(g.x, g.edge_index)
        train = FullGraphLoader(graph, targets)
        val = FullGraphLoader(graph, targets, y=g.y, val_mask=g.val_mask, test_mask=g.test_mask, metric=g.metric)
        info = DatasetInfo(name=g.name, num_classes=g.num_classes, in_chans=int(g.x.shape[1]), img_size=0,
                           train_size=int(g.train_mask.sum()), val_size=int(g.val_mask.sum()))
        return train, val, info

    @torch.no_grad()
    def evaluate(self, model, loader: FullGraphLoader, device, *, autocast, channels_last: bool = False):
        d = loader.eval_data
        with autocast():
            logits = model(loader.graph.to(device)).float()
        y = d["y"].to(device)
        out: dict[str, float] = {}
        for split in ("val", "test"):
            mask = d[f"{split}_mask"].to(device)
            out[f"{split}/{d['metric']}"] = 100.0 * metric(d["metric"], logits[mask], y[mask])
        vm = d["val_mask"].to(device)
        out["val/loss"] = float(F.cross_entropy(logits[vm], y[vm]))
        return out

    def track_best(self, val: dict[str, float], history: dict[str, Any], step: int) -> dict[str, float]:
        """The best validation metric so far and the test metric of that evaluation (the first best wins, as in
        Luo et al.'s loop), kept in the checkpointed history."""
        key = next(k for k in val if k.startswith("val/") and k != "val/loss")
        test_key = "test/" + key.split("/", 1)[1]
        best = history.get("best_eval")
        if best is None or val[key] > best["val"]:
            best = history["best_eval"] = {"step": step, "val": val[key], "test": val[test_key]}
        return {**val, "val/best": best["val"], "test/at_best_val": best["test"], "best_step": best["step"]}


def metric(name: str, logits: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy, or ROC-AUC of the positive class's probability (binary labels; Luo et al.'s eval_rocauc)."""
    if name == "acc":
        return float((logits.argmax(1) == y).float().mean()) if y.numel() else 0.0
    if name == "rocauc":
        return roc_auc(logits.softmax(1)[:, 1], y)
    raise ValueError(f"unknown metric {name!r}; allowed: acc, rocauc")


def roc_auc(score: torch.Tensor, y: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counting one half (the Mann-Whitney form of ROC-AUC)."""
    pos, neg = score[y == 1], score[y != 1]
    if not len(pos) or not len(neg):
        return float("nan")
    total = 0.0
    for chunk in pos.split(4096):
        diff = chunk[:, None] - neg[None, :]
        total += float((diff > 0).sum()) + 0.5 * float((diff == 0).sum())
    return total / (len(pos) * len(neg))
