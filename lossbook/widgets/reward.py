"""Chapter 07's explorers: one pair's Bradley–Terry loss and gradients, and the shapes of ``preference_probs``."""

from __future__ import annotations

import html
import math

import ipywidgets as W
import torch

from ..reward import pairwise_reward_loss, preference_probs
from . import _signed_bar

__all__ = ["RewardExplorer", "PreferenceShapes"]

_MONO = 'style="font-family:monospace"'


class RewardExplorer(W.VBox):
    """Sliders for ``r_c``, ``r_r``, the margin ``m`` and the centering coefficient ``lam`` of one pair.

    Shown: the loss ``pairwise_reward_loss`` gives, both gradients by autograd next to their closed forms
    ``dL/dr_c = -(1 - sigmoid(r_c - r_r - m)) + 2 lam (r_c + r_r)`` and
    ``dL/dr_r = (1 - sigmoid(r_c - r_r - m)) + 2 lam (r_c + r_r)``, and ``preference_probs`` (which never sees the
    margin).  ``explorer.loss``, ``.grads`` (autograd), ``.closed_form`` and ``.prob_chosen`` hold the numbers.
    """

    def __init__(self, r_chosen: float = 0.5, r_rejected: float = 1.0, margin: float = 0.0, coefficient: float = 0.0):
        self.r_chosen = W.FloatSlider(value=r_chosen, min=-6.0, max=6.0, step=0.1, description="r_c")
        self.r_rejected = W.FloatSlider(value=r_rejected, min=-6.0, max=6.0, step=0.1, description="r_r")
        self.margin = W.FloatSlider(value=margin, min=0.0, max=4.0, step=0.1, description="margin m")
        self.coefficient = W.FloatSlider(value=coefficient, min=0.0, max=0.2, step=0.01, description="center λ")
        self.html = W.HTML()
        controls = [self.r_chosen, self.r_rejected, self.margin, self.coefficient]
        for w in controls:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox(controls), self.html])])

    def compute(self):
        r_c = torch.tensor([self.r_chosen.value], dtype=torch.float64, requires_grad=True)  # [1]: one pair
        r_r = torch.tensor([self.r_rejected.value], dtype=torch.float64, requires_grad=True)  # [1]
        m, lam = self.margin.value, self.coefficient.value
        loss = pairwise_reward_loss(r_c, r_r, margin=m, center_rewards_coefficient=lam or None)  # []
        loss.backward()
        w = 1 / (1 + math.exp(-(r_c.item() - r_r.item() - m)))
        center = 2 * lam * (r_c.item() + r_r.item())
        closed = (-(1 - w) + center, (1 - w) + center)
        prob = float(preference_probs(r_c.detach(), r_r.detach())[0, 0])
        return float(loss.detach()), (float(r_c.grad), float(r_r.grad)), closed, prob

    def _update(self, change=None):
        self.loss, self.grads, self.closed_form, self.prob_chosen = self.compute()
        delta = self.r_chosen.value - self.r_rejected.value
        rows = "".join(
            f"<tr><td>dL/d{name}</td><td>{_signed_bar(g)} {g:+.4f}</td><td>{c:+.4f}</td></tr>"
            for name, g, c in zip(("r_c", "r_r"), self.grads, self.closed_form)
        )
        self.html.value = (
            f"<p {_MONO}>Δ = r_c - r_r = {delta:+.2f}; Δ - m = {delta - self.margin.value:+.2f}</p>"
            f"<p {_MONO}>loss = <b class=\"lossbook-loss\">{self.loss:.4f}</b></p>"
            f'<table style="border-collapse:collapse;font-family:monospace"><tr><th></th><th>autograd</th>'
            f"<th>closed form</th></tr>{rows}</table>"
            f"<p {_MONO}>P(chosen preferred) = sigmoid(Δ) = <b>{self.prob_chosen:.4f}</b> "
            "(the margin shapes training, not this probability)</p>"
        )


class PreferenceShapes(W.VBox):
    """``preference_probs`` step by step for a batch of pairs whose reward heads have ``k`` outputs.

    Sliders pick ``batch`` and ``k``; the rewards are fixed seeded random numbers.  ``explorer.steps`` is the list of
    ``(operation, shape)`` shown and ``explorer.probs`` the ``[batch, 2]`` result.
    """

    def __init__(self, batch: int = 3, k: int = 1, seed: int = 0):
        self.seed = seed
        self.batch = W.IntSlider(value=batch, min=1, max=5, description="batch")
        self.k = W.IntSlider(value=k, min=1, max=3, description="k outputs")
        self.html = W.HTML()
        for w in (self.batch, self.k):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([self.batch, self.k]), self.html])])

    def tensors(self):
        g = torch.Generator().manual_seed(self.seed)
        chosen = torch.randn(5, 3, generator=g)[: self.batch.value, : self.k.value]  # [batch, k]
        rejected = torch.randn(5, 3, generator=g)[: self.batch.value, : self.k.value]  # [batch, k]
        return chosen, rejected

    def _update(self, change=None):
        chosen, rejected = self.tensors()
        b, k = chosen.shape
        self.steps = [
            ("rewards_chosen, rewards_rejected", [b, k]),
            ("torch.stack(...)", [2, b, k]),
            (".mean(dim=2)  (over the k outputs)", [2, b]),
            (".softmax(dim=0)  (over the pair)", [2, b]),
            (".T", [b, 2]),
        ]
        self.probs = preference_probs(chosen, rejected)  # [batch, 2]
        steps = "".join(f"<tr><td>{html.escape(op)}</td><td>{shape}</td></tr>" for op, shape in self.steps)
        rows = "".join(
            f"<tr><td>{i}</td><td>{float(chosen[i].mean()):+.3f}</td><td>{float(rejected[i].mean()):+.3f}</td>"
            f"<td>{float(p[0]):.4f}</td><td>{float(p[1]):.4f}</td></tr>"
            for i, p in enumerate(self.probs)
        )
        self.html.value = (
            f"<table {_MONO}><tr><th>step</th><th>shape</th></tr>{steps}</table>"
            f"<table {_MONO}><tr><th>pair</th><th>mean r_c</th><th>mean r_r</th><th>P(chosen)</th>"
            f"<th>P(rejected)</th></tr>{rows}</table>"
        )
