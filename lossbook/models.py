"""Tiny models for the chapters' training demos."""

from __future__ import annotations

from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """in_dim -> hidden -> ... -> out_dim, GELU between layers; returns logits."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int = 2):
        super().__init__()
        dims = [in_dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # [..., in_dim] -> [..., out_dim]
        return self.net(x)
