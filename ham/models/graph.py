"""Graph neural networks for node classification (declared in ham/models/graph_options.py), on PyG's layers.

`forward(graph)` takes an object with `x` (node features) and `edge_index` (ham/tasks/node.py's Graph).
`ham_parameters()` names the tensors HAM steps: every parameter of the convolutions (weights, biases, attention).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ham.extras import require


def _layers() -> Any:
    require("graph", "the graph models (gcn, gat, gatv2, sage)")
    import torch_geometric.nn as gnn

    return gnn


class GNN(nn.Module):
    """Luo et al.'s MPNN frame: [lin_in + dropout] -> (conv [+ lin] -> norm -> ReLU -> dropout) x layers -> linear."""

    def __init__(self, conv: str, in_chans: int, num_classes: int, *, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.5, residual: bool = False, norm: str = "none", pre_linear: bool = False,
                 heads: int = 1):
        super().__init__()
        if norm not in ("none", "ln", "bn"):
            raise ValueError(f"norm={norm!r} is not allowed; allowed: none, ln, bn")
        if conv.startswith("gat") and hidden % heads:
            raise ValueError(f"hidden={hidden} is not a multiple of heads={heads}")
        gnn = _layers()
        self.dropout, self.residual, self.norm, self.pre_linear = dropout, residual, norm, pre_linear
        self.lin_in = nn.Linear(in_chans, hidden) if pre_linear else None
        self.convs, self.lins, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        width = hidden if pre_linear else in_chans
        for _ in range(layers):
            if conv == "gcn":
                layer = gnn.GCNConv(width, hidden, cached=False, normalize=True)
            elif conv == "sage":
                layer = gnn.SAGEConv(width, hidden)
            elif conv in ("gat", "gatv2"):
                cls = gnn.GATConv if conv == "gat" else gnn.GATv2Conv
                layer = cls(width, hidden // heads, heads=heads, concat=True, add_self_loops=False, bias=False)
            else:
                raise ValueError(f"conv={conv!r} is not allowed; allowed: gcn, gat, gatv2, sage")
            self.convs.append(layer)
            self.lins.append(nn.Linear(width, hidden) if residual else nn.Identity())
            self.norms.append(nn.LayerNorm(hidden) if norm == "ln" else nn.BatchNorm1d(hidden) if norm == "bn"
                              else nn.Identity())
            width = hidden
        self.classifier = nn.Linear(hidden, num_classes)

    def ham_parameters(self) -> list[torch.Tensor]:
        """The convolutions' weights, biases and attention parameters (appendix D.4)."""
        return list(self.convs.parameters())

    def forward(self, graph: Any) -> torch.Tensor:
        x, edge_index = graph.x, graph.edge_index
        if self.lin_in is not None:
            x = F.dropout(self.lin_in(x), p=self.dropout, training=self.training)
        for conv, lin, norm in zip(self.convs, self.lins, self.norms):
            h = conv(x, edge_index)
            if self.residual:
                h = h + lin(x)
            x = F.dropout(F.relu(norm(h)), p=self.dropout, training=self.training)
        return self.classifier(x)


def _builder(conv: str):
    def build(num_classes: int, in_chans: int, img_size: int = 0, **kwargs: Any) -> GNN:
        return GNN(conv, in_chans, num_classes, **kwargs)

    build.__name__ = conv
    return build


gcn, gat, gatv2, sage = (_builder(c) for c in ("gcn", "gat", "gatv2", "sage"))
