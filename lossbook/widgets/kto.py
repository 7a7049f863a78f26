"""Chapter 14's explorers: KTO's value curves as beta, the reference point and the weights move; and the
rewards of DPO, CPO (summed) and SimPO (averaged) as a completion grows longer."""

from __future__ import annotations

import ipywidgets as W
import torch

from ..dpo import dpo_loss
from ..kto import kto_loss
from ..reference_free import cpo_loss
from .dpo import _svg as dpo_svg

__all__ = ["KTOValueExplorer", "LengthRewards", "kto_curves", "length_rewards"]


def kto_curves(beta: float, z0: float, desirable_weight: float, undesirable_weight: float, rewards=None):
    """``(r, desirable_losses, undesirable_losses, desirable_grads, undesirable_grads)`` of ``kto_loss`` along
    the log-ratio r (the same r for a desirable and an undesirable example; reference at 0); the grads are
    d loss / d r by autograd."""
    r = torch.linspace(-10, 10, 81, dtype=torch.float64) if rewards is None else rewards.double()
    r = r.clone().requires_grad_(True)
    zero = torch.zeros_like(r)
    losses, _, _ = kto_loss(r, r, zero, zero, torch.tensor(float(z0), dtype=torch.float64), beta=beta,
                            desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    n = r.shape[0]
    (grad,) = torch.autograd.grad(losses[:n].sum(), r, retain_graph=True)
    (grad_u,) = torch.autograd.grad(losses[n:].sum(), r)
    return r.detach(), losses[:n].detach(), losses[n:].detach(), grad, grad_u


def _svg(xs, series, x_label):
    """Chapter 09's inline SVG line plot, without its x = 0 line and y range."""
    return dpo_svg(xs, series, height=200, x_label=x_label, zero_line=False, y_range=False)


class KTOValueExplorer(W.VBox):
    """Sliders for beta, the reference point z0, the two weights and a log-ratio r: KTO's loss for a desirable
    (blue) and an undesirable (red) example against r, and a table of both losses and gradients at r.

    ``explorer.at`` holds ``{"desirable": (loss, grad), "undesirable": (loss, grad)}`` at the r slider.
    """

    def __init__(self, beta: float = 0.5, z0: float = 1.0, desirable_weight: float = 1.0,
                 undesirable_weight: float = 1.0, r: float = 2.0):
        self.beta = W.FloatSlider(value=beta, min=0.05, max=2.0, step=0.05, description="beta")
        self.z0 = W.FloatSlider(value=z0, min=0.0, max=5.0, step=0.25, description="z0 (KL)")
        self.desirable_weight = W.FloatSlider(value=desirable_weight, min=0.0, max=8.0, step=0.25,
                                              description="desirable w")
        self.undesirable_weight = W.FloatSlider(value=undesirable_weight, min=0.0, max=8.0, step=0.25,
                                                description="undesirable w")
        self.r = W.FloatSlider(value=r, min=-10.0, max=10.0, step=0.5, description="log-ratio r")
        self.html = W.HTML()
        controls = (self.beta, self.z0, self.desirable_weight, self.undesirable_weight, self.r)
        for w in controls:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox(list(controls)), self.html])])

    def _settings(self):
        return (float(self.beta.value), float(self.z0.value), float(self.desirable_weight.value),
                float(self.undesirable_weight.value))

    def _update(self, change=None):
        xs, ld, lu, gd, gu = kto_curves(*self._settings())
        _, ad, au, agd, agu = kto_curves(*self._settings(), rewards=torch.tensor([float(self.r.value)]))
        self.at = {"desirable": (float(ad[0]), float(agd[0])), "undesirable": (float(au[0]), float(agu[0]))}
        rows = "".join(f"<tr><td>{name}</td><td>{loss:.4f}</td><td>{grad:+.4f}</td></tr>"
                       for name, (loss, grad) in self.at.items())
        self.html.value = (
            _svg(xs.tolist(), [(ld.tolist(), "#1f77b4"), (lu.tolist(), "#d62728")], "log-ratio r")
            + '<table style="font-family:monospace"><tr><th>example</th><th>loss</th><th>d loss / d r</th></tr>'
            + rows + "</table>"
            + '<p style="font-family:monospace"><span style="color:#1f77b4">blue: desirable</span>, '
            f'<span style="color:#d62728">red: undesirable</span>; at r = {self.r.value:+.2f} the desirable loss '
            f'is <b class="lossbook-loss">{self.at["desirable"][0]:.4f}</b></p>'
        )


def length_rewards(length: int, token_logp: float, token_logratio: float, beta: float, simpo_beta: float):
    """The implicit rewards of one completion of ``length`` tokens, each with log-prob ``token_logp`` under the
    policy and ``token_logratio`` more than under the reference: DPO's beta * summed log-ratio
    (``dpo_loss``), CPO's beta * summed log-prob (``cpo_loss``, sigmoid) and SimPO's beta * average log-prob
    (``cpo_loss``, simpo).  Returns a dict of floats."""
    n = torch.tensor([float(length)], dtype=torch.float64)
    policy = n * token_logp  # [1] summed log-prob under the policy
    ref = policy - n * token_logratio  # [1] under the reference: token_logratio less per token
    dpo = dpo_loss(policy, policy, ref, ref, beta=beta)[1]
    cpo = cpo_loss(policy, policy, beta=beta)[1]
    simpo = cpo_loss(policy / n, policy / n, beta=simpo_beta, loss_type="simpo")[1]
    return {"DPO (summed log-ratio)": float(dpo), "CPO (summed log-prob)": float(cpo),
            "SimPO (average log-prob)": float(simpo)}


class LengthRewards(W.VBox):
    """Sliders for the completion length, the per-token log-prob and log-ratio, beta (DPO, CPO) and SimPO's
    beta: the three implicit rewards against the length (1 to 64) and a table at the chosen length.

    ``widget.rewards`` holds the table's values."""

    def __init__(self, length: int = 8, token_logp: float = -1.0, token_logratio: float = 0.1, beta: float = 0.1,
                 simpo_beta: float = 2.0):
        self.length = W.IntSlider(value=length, min=1, max=64, description="length")
        self.token_logp = W.FloatSlider(value=token_logp, min=-3.0, max=-0.1, step=0.1, description="log p / token")
        self.token_logratio = W.FloatSlider(value=token_logratio, min=-0.5, max=0.5, step=0.05,
                                            description="log-ratio / token")
        self.beta = W.FloatSlider(value=beta, min=0.05, max=1.0, step=0.05, description="beta")
        self.simpo_beta = W.FloatSlider(value=simpo_beta, min=0.5, max=10.0, step=0.5, description="SimPO beta")
        self.html = W.HTML()
        controls = (self.length, self.token_logp, self.token_logratio, self.beta, self.simpo_beta)
        for w in controls:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox(list(controls)), self.html])])

    def _args(self, length):
        return (length, float(self.token_logp.value), float(self.token_logratio.value), float(self.beta.value),
                float(self.simpo_beta.value))

    def _update(self, change=None):
        lengths = list(range(1, 65))
        curves = [length_rewards(*self._args(n)) for n in lengths]
        names = list(curves[0])
        colors = ("#1f77b4", "#d62728", "#2ca02c")
        series = [([c[k] for c in curves], color) for k, color in zip(names, colors)]
        self.rewards = length_rewards(*self._args(int(self.length.value)))
        rows = "".join(f'<tr><td style="color:{color}">{html_name}</td><td>{value:+.4f}</td></tr>'
                       for (html_name, value), color in zip(self.rewards.items(), colors))
        self.html.value = (
            _svg([float(n) for n in lengths], series, "completion length")
            + '<table style="font-family:monospace"><tr><th>implicit reward</th><th>at this length</th></tr>'
            + rows + "</table>"
            + f'<p style="font-family:monospace">length {int(self.length.value)}: SimPO reward '
            f'<b class="lossbook-loss">{self.rewards["SimPO (average log-prob)"]:+.4f}</b>, the same at every '
            "length; the summed ones grow with it</p>"
        )
