"""Node-classification graphs (declared in ham/data/node_options.py): a generated SBM graph, and the paper's 13
datasets read from data_dir with PyTorch Geometric's dataset classes (never downloaded: a missing dataset is one
line naming it and how to get it, checked before anything is created).

Each builder returns a NodeGraph: features, edges (undirected, self loops once: Luo et al.'s preprocessing),
labels and the boolean train/val/test masks of the split this run uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ham import registry
from ham.errors import ConfigError
from ham.extras import require


@dataclass
class NodeGraph:
    name: str
    x: torch.Tensor            # [N, F] float32
    edge_index: torch.Tensor   # [2, E] long
    y: torch.Tensor            # [N] long
    train_mask: torch.Tensor   # [N] bool
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    metric: str                # acc | rocauc
    split: int = 0             # which of the dataset's splits (seed modulo their number)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])


def _mask(n: int, idx: Any) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.as_tensor(np.asarray(idx), dtype=torch.long)] = True
    return m


def _preprocess(edge_index: torch.Tensor, n: int, self_loops: bool) -> torch.Tensor:
    """Luo et al.: to_undirected, remove_self_loops, add_self_loops (every node gets exactly one)."""
    if not self_loops:
        return edge_index
    from torch_geometric.utils import add_self_loops, remove_self_loops, to_undirected

    edge_index = to_undirected(edge_index, num_nodes=n)
    edge_index, _ = remove_self_loops(edge_index)
    edge_index, _ = add_self_loops(edge_index, num_nodes=n)
    return edge_index


# ------------------------------------------------------------------ the generated SBM graph
def sbm(data_dir: str | None = None, *, name: str = "sbm", seed: int = 0, num_classes: int = 5, nodes_per_class: int = 200,
        avg_degree: float = 4.0, homophily: float = 0.7, num_features: int = 32, feature_signal: float = 1.0,
        train_fraction: float = 0.1, val_fraction: float = 0.2, graph_seed: int | None = None,
        split_seed: int = 123, self_loops: bool = True) -> NodeGraph:
    """A stochastic-block-model graph (PyG's stochastic_blockmodel_graph): one block per class; a node's expected
    degree is avg_degree, a `homophily` fraction of it inside its own class (0.7, the default: homophilic; 0.2: heterophilic).
    Features: the class mean (Gaussian, norm ~ feature_signal) plus unit Gaussian noise, so features alone are a
    weak signal and the graph carries the rest. Graph, features and the random split come from graph_seed (null:
    the run's seed), through a private generator: the global RNG is not touched."""
    require("graph", "dataset=sbm")
    from torch_geometric.utils import stochastic_blockmodel_graph

    if train_fraction + val_fraction >= 1:
        raise ConfigError(f"dataset.options: train_fraction + val_fraction = {train_fraction + val_fraction} "
                          f"leaves no test nodes; allowed: a sum < 1")
    g_seed = seed if graph_seed is None else graph_seed
    n = num_classes * nodes_per_class
    p_in = homophily * avg_degree / max(1, nodes_per_class - 1)
    p_out = (1 - homophily) * avg_degree / max(1, n - nodes_per_class)
    if p_in > 1 or p_out > 1:
        raise ConfigError(f"dataset.options.avg_degree={avg_degree} is too large for {nodes_per_class} nodes per "
                          f"class (an edge probability above 1); allowed: a smaller avg_degree or more nodes")
    probs = [[p_in if i == j else p_out for j in range(num_classes)] for i in range(num_classes)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(g_seed)
        edge_index = stochastic_blockmodel_graph([nodes_per_class] * num_classes, probs)
    gen = torch.Generator().manual_seed(g_seed + 1)
    y = torch.arange(num_classes).repeat_interleave(nodes_per_class)
    means = torch.randn(num_classes, num_features, generator=gen) * (feature_signal / num_features ** 0.5)
    x = means[y] + torch.randn(n, num_features, generator=gen) / num_features ** 0.5
    perm = torch.randperm(n, generator=gen)
    n_train, n_val = int(round(train_fraction * n)), int(round(val_fraction * n))
    return NodeGraph("sbm", x, _preprocess(edge_index, n, self_loops), y, _mask(n, perm[:n_train]),
                     _mask(n, perm[n_train:n_train + n_val]), _mask(n, perm[n_train + n_val:]), num_classes, "acc")


# ------------------------------------------------------------------ the paper's datasets, from data_dir
def real(data_dir: str | None, *, name: str, seed: int = 0, split_seed: int = 123,
         self_loops: bool = True) -> NodeGraph:
    """One of the 13 datasets of Tables 10/11, read from data_dir (the layout ham/data/node_options.py names)."""
    decl = registry.get("dataset", name)
    require("graph", f"dataset={name}")
    from ham.data.catalog import check_dataset

    check_dataset(name, data_dir)  # one line naming what is missing and how to get it; PyG never downloads
    kind, pyg_name = decl.facts["source"]
    root = Path(data_dir)
    import torch_geometric.datasets as D
    import torch_geometric.transforms as T

    splits: list[tuple[Any, Any, Any]]
    if kind == "filtered":  # Platonov et al.'s filtered chameleon/squirrel (.npz, not in PyG)
        d = np.load(root / decl.facts["files"][0])
        x, y = torch.as_tensor(d["node_features"]).float(), torch.as_tensor(d["node_labels"]).long()
        edge_index = torch.as_tensor(d["edges"]).long().t().contiguous()
        n = x.shape[0]
        splits = [(d["train_masks"][i], d["val_masks"][i], d["test_masks"][i]) for i in range(len(d["train_masks"]))]
        splits = [tuple(np.flatnonzero(m) for m in s) for s in splits]
    else:
        if kind == "planetoid":
            data = D.Planetoid(root=str(root / "Planetoid"), name=pyg_name)[0]
        elif kind == "wikics":
            data = D.WikiCS(root=str(root / "wikics"))[0]
        elif kind == "amazon":
            data = D.Amazon(root=str(root / "Amazon"), name=pyg_name, transform=T.NormalizeFeatures())[0]
        elif kind == "coauthor":
            data = D.Coauthor(root=str(root / "Coauthor"), name=pyg_name, transform=T.NormalizeFeatures())[0]
        elif kind == "heterophilous":
            data = D.HeterophilousGraphDataset(root=str(root), name=pyg_name)[0]
        else:
            raise ValueError(f"unknown source kind {kind!r} of dataset {name!r}")
        x, y, edge_index, n = data.x.float(), data.y.long().view(-1), data.edge_index, data.num_nodes
        if kind == "planetoid":  # Luo et al.'s class_rand_splits: 20 per class, 500 val, 1000 test, one split
            splits = [_per_class_split(y, 20, 500, 1000, split_seed)]
        elif kind == "wikics":  # validation = val | stopping (Luo et al.)
            vm = data.val_mask | data.stopping_mask
            splits = [(np.flatnonzero(data.train_mask[:, i].numpy()), np.flatnonzero(vm[:, i].numpy()),
                       np.flatnonzero(data.test_mask.numpy())) for i in range(data.train_mask.shape[1])]
        elif kind in ("amazon", "coauthor"):  # Luo et al.'s fixed split file
            idx = np.load(root / f"{name}_split.npz")
            splits = [(idx["train"], idx["valid"], idx["test"])]
        else:
            splits = [tuple(np.flatnonzero(m[:, i].numpy()) for m in (data.train_mask, data.val_mask, data.test_mask))
                      for i in range(data.train_mask.shape[1])]
    k = seed % len(splits)
    tr, va, te = splits[k]
    return NodeGraph(name, x, _preprocess(edge_index, n, self_loops), y, _mask(n, tr), _mask(n, va), _mask(n, te),
                     int(y.max()) + 1, decl.facts.get("metric", "acc"), split=k)


def _per_class_split(y: torch.Tensor, per_class: int, n_val: int, n_test: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    train, rest = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).view(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train.append(idx[:per_class])
        rest.append(idx[per_class:])
    rest = torch.cat(rest)
    rest = rest[torch.randperm(len(rest), generator=gen)]
    return torch.cat(train).numpy(), rest[:n_val].numpy(), rest[n_val:n_val + n_test].numpy()
