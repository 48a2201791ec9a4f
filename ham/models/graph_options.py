"""Graph neural networks' declarations (node classification, paper Tables 10-15). Torch-free.

The architecture of the code the paper builds on (Luo et al. 2024, "Classic GNNs are strong baselines"): optional
input linear layer, `layers` message-passing convolutions, each followed by an optional residual linear branch,
LayerNorm or BatchNorm, ReLU and dropout, then a linear classifier. Built with PyTorch Geometric's layers (the
`graph` extra). Fact ham_only: the model's `ham_parameters()` are exactly the tensors the hyperbolic step acts on
(appendix D.4: the convolutions' weights and biases and the attention parameters; never the residual/input/output
linear layers or the norms); every other tensor gets the base optimizer's step alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ham.models.options import ModelConfig
from ham.options import opt
from ham.registry import declare


@dataclass
class GNNKwargs:
    hidden: int = opt(64, ge=1, doc="hidden channels (Luo et al.: hidden_channels)")
    layers: int = opt(2, ge=1, doc="message-passing layers (local_layers)")
    dropout: float = opt(0.5, ge=0, lt=1)
    residual: bool = opt(False, doc="add a linear branch to each convolution (--res)")
    norm: str = opt("none", choices=("none", "ln", "bn"), doc="LayerNorm (--ln) or BatchNorm (--bn) after each layer")
    pre_linear: bool = opt(False, doc="a linear layer + dropout before the first convolution (--pre_linear)")
    heads: int = opt(1, ge=1, doc="attention heads (GAT; concatenated: hidden must be a multiple)")


@declare("model", "gcn", build="ham.models.graph:gcn", label="GCN", ham_only=True, graph=True, extra="graph")
class GCNModel(ModelConfig):
    """GCN (PyG GCNConv, symmetric normalisation) in Luo et al.'s MPNN frame."""
    kwargs: GNNKwargs = opt(GNNKwargs())


@declare("model", "gat", build="ham.models.graph:gat", label="GAT", ham_only=True, graph=True, extra="graph")
class GATModel(ModelConfig):
    """GAT (PyG GATConv, no added self loops, no conv bias: Luo et al.'s code) in the MPNN frame."""
    kwargs: GNNKwargs = opt(GNNKwargs())


@declare("model", "gatv2", build="ham.models.graph:gatv2", label="GATv2", ham_only=True, graph=True, extra="graph")
class GATv2Model(ModelConfig):
    """GATv2 (PyG GATv2Conv, the paper's text) in the same frame as gat."""
    kwargs: GNNKwargs = opt(GNNKwargs())


@declare("model", "sage", build="ham.models.graph:sage", label="SAGE", ham_only=True, graph=True, extra="graph")
class SAGEModel(ModelConfig):
    """GraphSAGE (PyG SAGEConv, mean aggregation) in Luo et al.'s MPNN frame."""
    kwargs: GNNKwargs = opt(GNNKwargs())
