"""Node-classification datasets' declarations (paper section 6 / appendix D.4.2, Tables 10-15). Torch-free.

Every dataset here has the fact task="ham.tasks.node:NodeClassification": the trainer asks that task for the data
(one full graph per step, the training nodes' labels as targets), the evaluation (val/test accuracy or ROC-AUC on
the split's masks, best validation so far) and nothing else changes in the loop. Facts:
  task        "module:Class" of the task (image datasets have none: image classification)
  shape       (classes, node features): what smoke=cpu generates in its place (a small SBM graph, no files)
  files       what must be under data_dir (relative paths); missing: one line naming the dataset and how to get it
  source      how ham/data/graphs.py reads it: (kind, PyG name)
  metric      acc | rocauc (Luo et al. report ROC-AUC for minesweeper)
  homophilic  the paper's grouping (Tables 10/13 vs 11/14)
  single_process  full-batch: one process trains the whole graph (no DDP)
  graph       its inputs are graphs: only models with the fact graph take them (and only they take them)
  extra       the package extra its code needs (checked before a run starts: one line naming it)
The builders need PyTorch Geometric (the `graph` extra); the declarations do not.

Splits follow the code the paper builds on (Luo et al. 2024, "Classic GNNs are strong baselines", medium_graph):
Planetoid: 20 training nodes per class, 500 validation, 1000 test, one split (seeded by options.split_seed) for
every run; WikiCS: its 20 splits (validation = val | stopping mask), run i uses split i; Amazon/Coauthor: Luo et
al.'s fixed split files (data_dir/<name>_split.npz, from their repository's data folder); the heterophilous sets
(Platonov et al. 2023): their 10 splits, run i uses split i. Here "run i" is `seed` modulo the number of splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ham.errors import ConfigError
from ham.options import opt, select
from ham.registry import declare
from ham.data.options import DatasetConfig

NODE_TASK = "ham.tasks.node:NodeClassification"
PYG_DOCS = "https://pytorch-geometric.readthedocs.io/en/latest/modules/datasets.html"


@dataclass
class NodeOptions:
    split_seed: int = opt(123, ge=0, doc="Planetoid: seed of the one random split (Luo et al.: 123)")
    self_loops: bool = opt(True, doc="undirected edges, self loops removed then added once (Luo et al.)")


@dataclass
class NodeDatasetConfig(DatasetConfig):
    """A node-classification graph (full batch)."""
    img_size: int = opt(1, ge=1, doc="unused by graphs (one full graph per step)")
    augment: bool = opt(False, doc="unused by graphs")
    options: NodeOptions = opt(NodeOptions())

    @classmethod
    def check_source(cls, data_dir: Path, download: bool = False) -> None:
        decl = next(d for d in _node_declarations() if d.schema is cls)
        for rel in decl.facts.get("files", ()):
            if not (data_dir / rel).is_file():
                raise ConfigError(f"data_dir={str(data_dir)!r} has no {decl.label} (expected {data_dir / rel}); "
                                  f"{decl.facts['get']}")

    @classmethod
    def train_size_at_least(cls, data_dir, options, need):
        return 1  # one graph: trainer.global_batch_size must be 1

    @classmethod
    def cross_check(cls, node, root, path):
        super().cross_check(node, root, path)
        if node.smoke_images is not None:  # smoke=cpu: a generated graph of the dataset's shape, no files read
            return
        gbs = select(root, "trainer.global_batch_size")
        if gbs is not None and gbs != 1:
            raise ConfigError(f"trainer.global_batch_size={gbs} does not fit dataset={node.name} (node "
                              f"classification trains on the whole graph: one graph per step); allowed: "
                              f"trainer.global_batch_size=1")


def _node_declarations():
    from ham.registry import declarations

    return [d for d in declarations("dataset").values() if d.facts.get("task") == NODE_TASK]


@dataclass
class SBMOptions(NodeOptions):
    num_classes: int = opt(5, ge=2, doc="blocks = classes")
    nodes_per_class: int = opt(200, ge=4)
    avg_degree: float = opt(4.0, gt=0, doc="expected neighbours per node")
    homophily: float = opt(0.7, ge=0, le=1, doc="expected fraction of a node's edges inside its own class")
    num_features: int = opt(32, ge=1)
    feature_signal: float = opt(1.0, ge=0, doc="distance of the class means in units of the feature noise")
    train_fraction: float = opt(0.1, gt=0, lt=1)
    val_fraction: float = opt(0.2, gt=0, lt=1)
    graph_seed: Optional[int] = opt(None, ge=0, doc="seed of the graph, features and split; null: the run's seed")


@declare("dataset", "sbm", build="ham.data.graphs:sbm", label="SBM", task=NODE_TASK, files=False, metric="acc",
         single_process=True, graph=True, extra="graph")
class SBMDataset(NodeDatasetConfig):
    """A generated stochastic-block-model graph (PyG's stochastic_blockmodel_graph): homophilic or heterophilic."""
    options: SBMOptions = opt(SBMOptions())


def _node(name: str, label: str, source: tuple[str, str], files: tuple[str, ...], get: str, *, shape: tuple[int, int],
          homophilic: bool, metric: str = "acc"):
    return declare("dataset", name, build="ham.data.graphs:real", label=label, task=NODE_TASK, source=source, shape=shape,
                   files=files, get=get, metric=metric, homophilic=homophilic, single_process=True, graph=True,
                   extra="graph")


def _pyg(cls: str, args: str) -> str:
    return (f"nothing is downloaded here: on a machine with internet run python -c \"from torch_geometric.datasets "
            f"import {cls}; {cls}({args})\" and copy DATA_DIR's contents into data_dir (PyG: {PYG_DOCS})")


def _planetoid(name: str) -> tuple[str, ...]:
    return tuple(f"Planetoid/{name}/raw/ind.{name.lower()}.{k}" for k in
                 ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"))


def _luo_split(name: str) -> str:
    return (f"; and {name}_split.npz (Luo et al.'s fixed split: the data/ folder of "
            f"https://github.com/LUOyk1999/tunedGNN) into data_dir")


_HETERO = ("from https://github.com/yandex-research/heterophilous-graphs (data/{f}) into data_dir/{d}/raw/ (or run "
           "PyG's HeterophilousGraphDataset(root='DATA_DIR', name='{n}') on a machine with internet and copy "
           "DATA_DIR's contents into data_dir)")


@_node("cora", "Cora", ("planetoid", "Cora"), _planetoid("Cora"), _pyg("Planetoid", "root='DATA_DIR/Planetoid', name='Cora'"),
       shape=(7, 1433), homophilic=True)
class CoraDataset(NodeDatasetConfig):
    """Cora citation graph (Planetoid), Luo et al.'s random 20-per-class split."""


@_node("citeseer", "CiteSeer", ("planetoid", "CiteSeer"), _planetoid("CiteSeer"),
       _pyg("Planetoid", "root='DATA_DIR/Planetoid', name='CiteSeer'"), shape=(6, 3703), homophilic=True)
class CiteSeerDataset(NodeDatasetConfig):
    """CiteSeer citation graph (Planetoid), Luo et al.'s random 20-per-class split."""


@_node("pubmed", "PubMed", ("planetoid", "PubMed"), _planetoid("PubMed"),
       _pyg("Planetoid", "root='DATA_DIR/Planetoid', name='PubMed'"), shape=(3, 500), homophilic=True)
class PubMedDataset(NodeDatasetConfig):
    """PubMed citation graph (Planetoid), Luo et al.'s random 20-per-class split."""


@_node("wikics", "Wiki-CS", ("wikics", "WikiCS"), ("wikics/raw/data.json",),
       _pyg("WikiCS", "root='DATA_DIR/wikics'"), shape=(10, 300), homophilic=True)
class WikiCSDataset(NodeDatasetConfig):
    """Wiki-CS (PyG WikiCS), its 20 splits."""


@_node("coauthor-cs", "Coauthor-CS", ("coauthor", "CS"), ("Coauthor/CS/raw/ms_academic_cs.npz", "coauthor-cs_split.npz"),
       _pyg("Coauthor", "root='DATA_DIR/Coauthor', name='CS'") + _luo_split("coauthor-cs"), shape=(15, 6805), homophilic=True)
class CoauthorCSDataset(NodeDatasetConfig):
    """Coauthor-CS (PyG Coauthor), Luo et al.'s fixed split."""


@_node("coauthor-physics", "Coauthor-Physics", ("coauthor", "Physics"),
       ("Coauthor/Physics/raw/ms_academic_phy.npz", "coauthor-physics_split.npz"),
       _pyg("Coauthor", "root='DATA_DIR/Coauthor', name='Physics'") + _luo_split("coauthor-physics"), shape=(5, 8415), homophilic=True)
class CoauthorPhysicsDataset(NodeDatasetConfig):
    """Coauthor-Physics (PyG Coauthor), Luo et al.'s fixed split."""


@_node("amazon-computer", "Amazon-Computers", ("amazon", "Computers"),
       ("Amazon/Computers/raw/amazon_electronics_computers.npz", "amazon-computer_split.npz"),
       _pyg("Amazon", "root='DATA_DIR/Amazon', name='Computers'") + _luo_split("amazon-computer"), shape=(10, 767), homophilic=True)
class AmazonComputersDataset(NodeDatasetConfig):
    """Amazon-Computers (PyG Amazon), Luo et al.'s fixed split."""


@_node("amazon-photo", "Amazon-Photo", ("amazon", "Photo"),
       ("Amazon/Photo/raw/amazon_electronics_photo.npz", "amazon-photo_split.npz"),
       _pyg("Amazon", "root='DATA_DIR/Amazon', name='Photo'") + _luo_split("amazon-photo"), shape=(8, 745), homophilic=True)
class AmazonPhotoDataset(NodeDatasetConfig):
    """Amazon-Photo (PyG Amazon), Luo et al.'s fixed split."""


@_node("amazon-ratings", "Amazon-Ratings", ("heterophilous", "Amazon-ratings"), ("amazon_ratings/raw/amazon_ratings.npz",),
       "get amazon_ratings.npz " + _HETERO.format(f="amazon_ratings.npz", n="Amazon-ratings", d="amazon_ratings"), shape=(5, 300), homophilic=False)
class AmazonRatingsDataset(NodeDatasetConfig):
    """Amazon-Ratings (PyG HeterophilousGraphDataset), its 10 splits."""


@_node("roman-empire", "Roman-Empire", ("heterophilous", "Roman-empire"), ("roman_empire/raw/roman_empire.npz",),
       "get roman_empire.npz " + _HETERO.format(f="roman_empire.npz", n="Roman-empire", d="roman_empire"), shape=(18, 300), homophilic=False)
class RomanEmpireDataset(NodeDatasetConfig):
    """Roman-Empire (PyG HeterophilousGraphDataset), its 10 splits."""


@_node("minesweeper", "Minesweeper", ("heterophilous", "Minesweeper"), ("minesweeper/raw/minesweeper.npz",),
       "get minesweeper.npz " + _HETERO.format(f="minesweeper.npz", n="Minesweeper", d="minesweeper"), shape=(2, 7), homophilic=False, metric="rocauc")
class MinesweeperDataset(NodeDatasetConfig):
    """Minesweeper (PyG HeterophilousGraphDataset), its 10 splits; ROC-AUC as Luo et al."""


@_node("squirrel", "Squirrel", ("filtered", "squirrel"), ("geom-gcn/squirrel/squirrel_filtered.npz",),
       "get squirrel_filtered.npz from https://github.com/yandex-research/heterophilous-graphs (data/) into "
       "data_dir/geom-gcn/squirrel/ (the filtered version Luo et al. use; not in PyG)", shape=(5, 2089), homophilic=False)
class SquirrelDataset(NodeDatasetConfig):
    """Squirrel, filtered (Platonov et al. 2023), its 10 splits."""


@_node("chameleon", "Chameleon", ("filtered", "chameleon"), ("geom-gcn/chameleon/chameleon_filtered.npz",),
       "get chameleon_filtered.npz from https://github.com/yandex-research/heterophilous-graphs (data/) into "
       "data_dir/geom-gcn/chameleon/ (the filtered version Luo et al. use; not in PyG)", shape=(5, 2325), homophilic=False)
class ChameleonDataset(NodeDatasetConfig):
    """Chameleon, filtered (Platonov et al. 2023), its 10 splits."""
