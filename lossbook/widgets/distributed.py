"""Chapter 12's explorer: ranks, micro-batches, their token counts, and the weight each token gets."""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..distributed import RECIPES, token_weights
from . import _bar

__all__ = ["TokenWeights"]

_LABELS = {
    "global_count": "all-reduced count x world size (transformers)",
    "per_rank_mean": "per-rank mean (DDP averages)",
    "no_world_size_factor": "all-reduced count, no world-size factor",
    "all_reduced_loss": "all-reduce the loss instead of the count",
}


class TokenWeights(W.VBox):
    """A data-parallel step: ``ranks`` x ``micro_batches`` shards, their kept-token counts, each token's weight.

    Rank 0's micro-batches hold ``rank0_tokens`` targets each, the other ranks' ``other_tokens`` (micro-batch j
    loses ``j`` of them, at least 1 kept), so the counts are uneven as with length-grouped batches.  For the
    chosen ``recipe`` (``lossbook.distributed.RECIPES``) the table shows the weight of one token of each
    shard in the gradient after DDP's mean, in units of the full batch's 1/N, and the share of the gradient
    each shard gets.  The full batch gives every token weight 1 (in these units) and the shares sum to 1.

    ``explorer.counts`` ([ranks, micro_batches] int64), ``explorer.weights`` (float64, from
    ``token_weights``) and ``explorer.total`` (sum of count x weight: 1 for the full batch) hold the numbers shown.
    """

    def __init__(self, ranks: int = 2, micro_batches: int = 1, rank0_tokens: int = 20, other_tokens: int = 110,
                 recipe: str = "per_rank_mean"):
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
        self.ranks = W.IntSlider(value=ranks, min=1, max=4, description="ranks")
        self.micro_batches = W.IntSlider(value=micro_batches, min=1, max=3, description="micro-batches")
        self.rank0_tokens = W.IntSlider(value=rank0_tokens, min=1, max=128, description="rank 0 tokens")
        self.other_tokens = W.IntSlider(value=other_tokens, min=1, max=128, description="other ranks")
        self.recipe = W.Dropdown(options=[(_LABELS[r], r) for r in RECIPES], value=recipe, description="recipe")
        self.html = W.HTML()
        controls = [self.ranks, self.micro_batches, self.rank0_tokens, self.other_tokens, self.recipe]
        for w in controls:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox(controls), self.html])])

    def compute(self):
        base = [self.rank0_tokens.value] + [self.other_tokens.value] * (self.ranks.value - 1)
        counts = torch.tensor([[max(b - j, 1) for j in range(self.micro_batches.value)] for b in base])  # [R, k]
        weights = token_weights(counts, self.recipe.value)  # [R, k] float64
        return counts, weights

    def _update(self, change=None):
        self.counts, self.weights = self.compute()
        N = int(self.counts.sum())
        shares = self.counts.double() * self.weights  # [R, k]: each shard's share of the gradient
        self.total = float(shares.sum())
        rows = []
        for r in range(self.counts.shape[0]):
            for j in range(self.counts.shape[1]):
                rel = float(self.weights[r, j] * N)
                share = float(shares[r, j])
                rows.append(
                    f"<tr><td>rank {r}</td><td>micro-batch {j}</td><td>{int(self.counts[r, j])}</td>"
                    f"<td>{_bar(min(rel, 8.0), 15, '#1f77b4')} {rel:.4f}</td>"
                    f"<td>{_bar(share, 120, '#2ca02c')} {share:.4f}</td></tr>"
                )
        verdict = ("= the full batch" if torch.allclose(self.weights * N, torch.ones_like(self.weights))
                   else "not the full batch")
        self.html.value = (
            '<table style="border-collapse:collapse;font-family:monospace">'
            "<tr><th>rank</th><th>shard</th><th>kept tokens</th><th>weight per token x N</th>"
            "<th>share of the gradient</th></tr>" + "".join(rows) + "</table>"
            f'<p style="font-family:monospace">N = {N} tokens; {html.escape(_LABELS[self.recipe.value])}: '
            f'total weight <b class="lossbook-loss">{self.total:.4f}</b> ({verdict})</p>'
        )
