"""Plotting helpers shared by the chapters (matplotlib, nothing interactive)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

__all__ = ["plot_history", "plot_decision_regions", "plot_bars"]


def plot_history(history, keys=("train_loss",), *, ax=None, logy: bool = False, title: str | None = None):
    """Curves of logged metrics against the training step."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    for key in keys:
        steps, values = zip(*history[key])
        ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.set_title(title or ", ".join(keys))
    ax.grid(alpha=0.3)
    return ax


@torch.no_grad()
def plot_decision_regions(model, x: torch.Tensor, y: torch.Tensor, *, ax=None, resolution: int = 200, title=None):
    """Predicted class over the plane (model maps [points, 2] -> [points, classes]) and the data on top."""
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    device = next(model.parameters()).device
    lo, hi = x.min(0).values - 0.2, x.max(0).values + 0.2
    gx, gy = torch.meshgrid(
        torch.linspace(lo[0], hi[0], resolution), torch.linspace(lo[1], hi[1], resolution), indexing="xy"
    )
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=-1)  # [resolution**2, 2]
    pred = model(grid.to(device)).argmax(-1).cpu().view(resolution, resolution)  # [resolution, resolution]
    classes = int(max(y.max(), pred.max())) + 1
    colors = [plt.cm.tab10(i % 10) for i in range(classes)]
    ax.contourf(gx, gy, pred, levels=[c - 0.5 for c in range(classes + 1)], colors=colors, alpha=0.25)
    ax.scatter(x[:, 0], x[:, 1], c=[colors[i] for i in y.tolist()], s=6)
    ax.set_aspect("equal")
    ax.set_title(title or "decision regions")
    return ax


def plot_bars(labels, values, *, ax=None, logy: bool = False, title: str | None = None, ylabel: str | None = None):
    """A labelled bar chart, each bar annotated with its value."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    bars = ax.bar(labels, values, color=plt.cm.tab10.colors[: len(values)])
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.1e}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    if logy:
        ax.set_yscale("log")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title or "")
    return ax
