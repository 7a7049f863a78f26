"""Chapter 13's explorers: PPO's clipped objective and its gradient against the ratio, and the per-token gradient
weights of a batch of unequal-length completions under each loss type."""

from __future__ import annotations

import ipywidgets as W
import torch

from ..policy_gradient import policy_gradient_loss
from .dpo import _svg

__all__ = ["ClipExplorer", "TokenWeights", "clip_curve", "token_weights"]

WEIGHT_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def clip_curve(advantage: float, epsilon: float, epsilon_high: float, ratios=None):
    """``(ratios, objective, gradient)`` of one token under ``policy_gradient_loss(loss_type="bnpo")``: the
    objective is minus the loss, -dL/d rho by autograd through rho = exp(logp - old)."""
    rho = torch.linspace(0.2, 2.0, 181, dtype=torch.float64) if ratios is None else ratios.double()
    logp = rho.log().clone().requires_grad_(True)[:, None]  # [points, 1]: one token per row, old = 0
    old = torch.zeros_like(logp)
    adv = torch.full((len(rho),), float(advantage), dtype=torch.float64)
    mask = torch.ones_like(old)
    objective = []
    grads = []
    for i in range(len(rho)):  # one loss per point: bnpo of one token is that token's clipped loss
        row = logp[i:i + 1].detach().clone().requires_grad_(True)
        loss = policy_gradient_loss(row, old[i:i + 1], adv[i:i + 1], mask[i:i + 1], loss_type="bnpo",
                                    epsilon=epsilon, epsilon_high=epsilon_high)
        (g,) = torch.autograd.grad(loss, row)
        objective.append(-float(loss.detach()))
        grads.append(-float(g[0, 0]) / float(rho[i]) + 0.0)  # d/d rho = d/d logp / rho; + 0.0: no -0
    return rho, torch.tensor(objective), torch.tensor(grads)


class ClipExplorer(W.VBox):
    """Sliders for the ratio rho, the advantage A, epsilon and epsilon_high: the clipped objective (blue) and its
    gradient d/d rho (orange) against rho; ``objective_at``, ``gradient_at`` hold the values at the slider."""

    def __init__(self, ratio: float = 1.0, advantage: float = 1.0, epsilon: float = 0.2, epsilon_high: float = 0.2):
        self.ratio = W.FloatSlider(value=ratio, min=0.2, max=2.0, step=0.05, description="ratio rho")
        self.advantage = W.FloatSlider(value=advantage, min=-2.0, max=2.0, step=0.25, description="advantage A")
        self.epsilon = W.FloatSlider(value=epsilon, min=0.05, max=0.5, step=0.01, description="epsilon")
        self.epsilon_high = W.FloatSlider(value=epsilon_high, min=0.05, max=0.5, step=0.01,
                                          description="epsilon_high")
        self.html = W.HTML()
        for w in (self.ratio, self.advantage, self.epsilon, self.epsilon_high):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([self.ratio, self.advantage, self.epsilon, self.epsilon_high]),
                                  self.html])])

    def _update(self, change=None):
        a, e, eh = float(self.advantage.value), float(self.epsilon.value), float(self.epsilon_high.value)
        xs, obj, grad = clip_curve(a, e, eh)
        _, o_at, g_at = clip_curve(a, e, eh, ratios=torch.tensor([float(self.ratio.value)]))
        self.objective_at, self.gradient_at = float(o_at[0]), float(g_at[0])
        clipped = self.gradient_at == 0.0
        self.html.value = (
            _svg(xs.tolist(), [(obj.tolist(), "#1f77b4", "objective"), (grad.tolist(), "#ff7f0e", "gradient")])
            .replace("margin r_w - r_l", "ratio rho")
            + '<p style="font-family:monospace"><span style="color:#1f77b4">blue: objective min(rho A, clip(rho) A)'
            '</span>, <span style="color:#ff7f0e">orange: its gradient d/d rho</span><br>'
            f"at rho = {self.ratio.value:.2f}: objective = <b class=\"lossbook-loss\">{self.objective_at:+.4f}</b>, "
            f"gradient = {self.gradient_at:+.4f}"
            f"{' (clipped: this token gets no gradient)' if clipped else ''}</p>"
        )


def token_weights(lengths, max_completion_length=None):
    """Per completion, the weight of each of its tokens under each loss type: -dL/d logp_{i,t} by autograd
    through ``policy_gradient_loss`` (on-policy, advantage 1 for every completion, no KL).  Returns
    {loss_type: [weight of completion i]}."""
    lengths = [int(n) for n in lengths]
    width = max_completion_length or max(lengths)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).double()  # [batch, seq]
    out = {}
    for loss_type in WEIGHT_TYPES:
        logp = torch.full(mask.shape, -1.0, dtype=torch.float64, requires_grad=True)
        kw = {"max_completion_length": width} if loss_type == "dr_grpo" else {}
        loss = policy_gradient_loss(logp, None, torch.ones(len(lengths), dtype=torch.float64), mask,
                                    loss_type=loss_type, **kw)
        (g,) = torch.autograd.grad(loss, logp)
        out[loss_type] = [float(-g[i, 0]) for i in range(len(lengths))]
    return out


class TokenWeights(W.VBox):
    """Three completions of the lengths set by the sliders n0, n1, n2: each one's tokens as a bar, each token's
    gradient weight under grpo, bnpo, dr_grpo and dapo, and the completion's total weight; ``weights`` holds
    {loss_type: [per-token weight of completion i]}."""

    def __init__(self, lengths=(2, 5, 12), max_completion_length: int = 12):
        self.n = [W.IntSlider(value=int(v), min=1, max=24, description=f"n{i}") for i, v in enumerate(lengths)]
        self.max_completion_length = W.IntSlider(value=max_completion_length, min=1, max=24,
                                                 description="max length L")
        self.html = W.HTML()
        for w in (*self.n, self.max_completion_length):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([*self.n, self.max_completion_length]), self.html])])

    def _update(self, change=None):
        lengths = [int(w.value) for w in self.n]
        width = max(int(self.max_completion_length.value), max(lengths))  # L is at least the longest completion
        self.weights = token_weights(lengths, width)
        rows = ["<tr><th>completion</th><th>tokens</th>"
                + "".join(f"<th>{t}: per token / total</th>" for t in WEIGHT_TYPES) + "</tr>"]
        for i, n in enumerate(lengths):
            cells = "".join(f"<td>{self.weights[t][i]:.4f} / {self.weights[t][i] * n:.4f}</td>"
                            for t in WEIGHT_TYPES)
            rows.append(f"<tr><td>{i}</td><td style='font-family:monospace'>{'&#9608;' * n} {n}</td>{cells}</tr>")
        self.html.value = ("<table style='font-family:monospace'>" + "".join(rows) + "</table>"
                           f"<p>L = {width}; weight = -dL/d log pi(token), advantage 1 for every completion: grpo "
                           "gives a short completion's tokens more weight, the others weigh every token alike.</p>")
