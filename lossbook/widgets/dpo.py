"""Chapter 09's explorers: every DPO variant's loss and gradient weight against the implicit reward margin, and
the shapes of ``sequence_logps``."""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..bugzoo.dpo import unshifted_gather
from ..dpo import LOSS_TYPES, dpo_loss, sequence_logps

__all__ = ["VariantExplorer", "LogpsTracer", "variant_curve"]

_SMOOTHED = ("exo_pair", "robust", "aot", "aot_unpaired", "cdpo")


def variant_curve(loss_type: str, beta: float, label_smoothing: float = 0.0, margins=None, discopop_tau: float = 0.05):
    """``(margins, losses, weights)`` of ``dpo_loss`` along the implicit reward margin m = r_w - r_l.

    The pair's log-ratios are split symmetrically, h_w = m / (2 beta), h_l = -m / (2 beta) (the variants that
    read h_w and h_l apart, nca_pair, bco_pair, sppo_hard, apo_*, see this split), lengths 1 for ipo and
    sigmoid_norm.  ``weights`` = -d loss / d m by autograd: how hard a step pushes the margin up.  Raises what
    ``dpo_loss`` raises (e.g. label smoothing with ``sigmoid``).
    """
    if loss_type == "sft":
        raise ValueError("sft does not depend on the margin (it is the chosen completions' NLL)")
    m = torch.linspace(-6, 6, 121, dtype=torch.float64) if margins is None else margins.double()
    m = m.clone().requires_grad_(True)
    zero = torch.zeros_like(m)
    kw = {}
    if loss_type in ("ipo", "sigmoid_norm"):
        kw = {"chosen_lengths": torch.ones_like(zero), "rejected_lengths": torch.ones_like(zero)}
    if loss_type == "discopop":
        kw = {"discopop_tau": discopop_tau}
    losses, _, _ = dpo_loss(m / (2 * beta), -m / (2 * beta), zero, zero, beta=beta, loss_type=loss_type,
                            label_smoothing=label_smoothing, **kw)
    (grad,) = torch.autograd.grad(losses.sum(), m)
    return m.detach(), losses.detach(), -grad


def _svg(xs, series, width=420, height=220, *, x_label="margin r_w - r_l", zero_line=True, y_range=True):
    """An inline SVG line plot (no scripts, so the built book shows it from the saved widget state).

    ``series``: ``(ys, color)`` or ``(ys, color, label)`` per curve; ``zero_line`` draws x = 0, ``y_range``
    prints the y range.  Chapter 14's widgets draw with it too."""
    lo = min(min(s[0]) for s in series)
    hi = max(max(s[0]) for s in series)
    lo, hi = min(lo, 0.0), max(hi, 1.0)
    x0, x1 = xs[0], xs[-1]

    def px(x, y):
        return (30 + (x - x0) / (x1 - x0) * (width - 40), 10 + (hi - y) / (hi - lo) * (height - 30))

    parts = [f'<svg width="{width}" height="{height}" style="background:#fff;border:1px solid #ddd">']
    ax, ay = px(x0, 0.0)
    bx, _ = px(x1, 0.0)
    parts.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{ay:.1f}" stroke="#999"/>')
    if zero_line:
        zx, _ = px(0.0, 0.0)
        parts.append(f'<line x1="{zx:.1f}" y1="10" x2="{zx:.1f}" y2="{height - 20}" stroke="#ccc"/>')
    for ys, color, *_ in series:
        pts = " ".join("{:.1f},{:.1f}".format(*px(x, y)) for x, y in zip(xs, ys))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
    parts.append(f'<text x="30" y="{height - 4}" font-size="11">{x_label} from {x0:g} to {x1:g}</text>')
    if y_range:
        parts.append(f'<text x="{width - 150}" y="20" font-size="11">y in [{lo:.2f}, {hi:.2f}]</text>')
    parts.append("</svg>")
    return "".join(parts)


class VariantExplorer(W.VBox):
    """A ``loss_type`` dropdown and sliders for beta, label smoothing and a margin: the loss and the gradient
    weight -dL/dm of that variant against the implicit reward margin m, with DPO's curves for comparison.

    ``explorer.loss_at`` and ``explorer.weight_at`` hold the values at the margin slider; ``explorer.error`` the
    message when ``dpo_loss`` refuses the settings (label smoothing with a type that does not read it).
    """

    def __init__(self, loss_type: str = "sigmoid", beta: float = 0.1, label_smoothing: float = 0.0,
                 margin: float = 1.0):
        options = [t for t in LOSS_TYPES if t != "sft"]
        self.loss_type = W.Dropdown(options=options, value=loss_type, description="loss_type")
        self.beta = W.FloatLogSlider(value=beta, base=10, min=-2, max=0.5, step=0.05, description="beta")
        self.label_smoothing = W.FloatSlider(value=label_smoothing, min=0.0, max=0.45, step=0.05,
                                             description="smoothing")
        self.margin = W.FloatSlider(value=margin, min=-6.0, max=6.0, step=0.25, description="margin m")
        self.html = W.HTML()
        for w in (self.loss_type, self.beta, self.label_smoothing, self.margin):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([self.loss_type, self.beta, self.label_smoothing, self.margin]),
                                  self.html])])

    def compute(self):
        t, beta, e = self.loss_type.value, float(self.beta.value), float(self.label_smoothing.value)
        if t == "exo_pair" and e == 0.0:
            e = 1e-3  # EXO needs e > 0; the paper's value
        xs, losses, weights = variant_curve(t, beta, e)
        at = torch.tensor([float(self.margin.value)], dtype=torch.float64)
        _, loss_at, weight_at = variant_curve(t, beta, e, margins=at)
        return xs, losses, weights, float(loss_at[0]), float(weight_at[0])

    def _update(self, change=None):
        self.error = None
        try:
            xs, losses, weights, self.loss_at, self.weight_at = self.compute()
        except (ValueError, TypeError) as err:
            self.error = str(err)
            self.loss_at = self.weight_at = float("nan")
            self.html.value = (f'<p style="font-family:monospace;color:#b00;max-width:520px">dpo_loss refuses: '
                               f'{html.escape(self.error)}</p>')
            return
        _, dpo_l, dpo_w = variant_curve("sigmoid", float(self.beta.value))
        clip = 4.0  # keep quadratic and exponential losses on readable axes
        series = [(dpo_l.clamp(max=clip).tolist(), "#bbbbbb", "DPO loss"),
                  (dpo_w.clamp(-clip, clip).tolist(), "#f2c199", "DPO weight"),
                  (losses.clamp(max=clip).tolist(), "#1f77b4", "loss"),
                  (weights.clamp(-clip, clip).tolist(), "#ff7f0e", "weight")]
        t = self.loss_type.value
        note = "" if t in _SMOOTHED else " (this loss type does not read label smoothing)"
        self.html.value = (
            _svg(xs.tolist(), series)
            + '<p style="font-family:monospace"><span style="color:#1f77b4">blue: loss</span>, '
            '<span style="color:#ff7f0e">orange: gradient weight -dL/dm</span>; light: DPO (sigmoid) '
            f"for comparison; values clipped at +-{clip:g}{html.escape(note)}<br>"
            f"at m = {self.margin.value:+.2f}: loss = <b class=\"lossbook-loss\">{self.loss_at:.4f}</b>, "
            f"weight = {self.weight_at:+.4f}</p>"
        )


class LogpsTracer(W.VBox):
    """One prompt + completion + padding through ``sequence_logps``: the shapes, which logit row scores which
    label, and the sum, next to seed 001's unshifted gather on the same numbers.

    ``tracer.logp`` is ``sequence_logps``'s value, ``tracer.unshifted`` the bug's, ``tracer.steps`` the
    ``(operation, shape)`` list.
    """

    def __init__(self, prompt: int = 3, completion: int = 4, padding: int = 2, vocab: int = 6, seed: int = 0):
        self.seed, self.vocab = seed, vocab
        self.prompt = W.IntSlider(value=prompt, min=0, max=5, description="prompt")
        self.completion = W.IntSlider(value=completion, min=1, max=6, description="completion")
        self.padding = W.IntSlider(value=padding, min=0, max=4, description="padding")
        self.html = W.HTML()
        for w in (self.prompt, self.completion, self.padding):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([self.prompt, self.completion, self.padding]), self.html])])

    def tensors(self):
        p, c, pad = self.prompt.value, self.completion.value, self.padding.value
        seq = p + c + pad
        g = torch.Generator().manual_seed(self.seed)
        logits = 2 * torch.randn(1, seq, self.vocab, generator=g, dtype=torch.float64)  # [1, seq, vocab]
        labels = torch.randint(1, self.vocab, (1, seq), generator=g)  # [1, seq]
        labels[0, p + c :] = -100  # padding
        mask = torch.zeros(1, seq, dtype=torch.long)
        mask[0, p : p + c] = 1  # the completion
        return logits, labels, mask

    def _update(self, change=None):
        logits, labels, mask = self.tensors()
        seq, v = logits.shape[1], logits.shape[2]
        self.logp = float(sequence_logps(logits, labels, mask)[0])
        self.unshifted = float(unshifted_gather(logits, labels, mask)[0])
        log_probs = logits[0, :-1].log_softmax(-1)  # [seq - 1, vocab]
        scored = (mask[0, 1:] == 1) & (labels[0, 1:] != -100)  # [seq - 1]
        n = int(scored.sum())
        self.steps = [
            ("logits", [1, seq, v]),
            ("logits[:, :-1].log_softmax(-1)", [1, seq - 1, v]),
            ("labels[:, 1:]  (the shifted targets)", [1, seq - 1]),
            ("gather(-1, targets[..., None])", [1, seq - 1, 1]),
            ("mask[:, 1:] & (targets != -100)", [1, seq - 1]),
            ("masked sum over seq", [1]),
        ]
        rows = "".join(f"<tr><td>{html.escape(op)}</td><td>{shape}</td></tr>" for op, shape in self.steps)
        head, tok, tgt, lp = [], [], [], []
        for t in range(seq):
            y = int(labels[0, t])
            kind = "P" if mask[0, t] == 0 and y != -100 else ("C" if mask[0, t] == 1 else "pad")
            head.append(f"<td>{t}</td>")
            tok.append(f"<td>{kind}{'' if y == -100 else y}</td>")
            if t < seq - 1:
                nxt = int(labels[0, t + 1])
                ok = bool(scored[t])
                tgt.append(f'<td style="background:{"#cfe8cf" if ok else "#eee"}">{nxt if nxt != -100 else "&middot;"}'
                           "</td>")
                lp.append(f"<td>{float(log_probs[t, nxt]):.2f}</td>" if ok else "<td>&middot;</td>")
            else:
                tgt.append("<td>&middot;</td>")
                lp.append("<td>&middot;</td>")
        grid = ('<table style="font-family:monospace;border-collapse:collapse;text-align:center">'
                f"<tr><td>t</td>{''.join(head)}</tr><tr><td>label (P prompt, C completion)</td>{''.join(tok)}</tr>"
                f"<tr><td>row t scores label t+1</td>{''.join(tgt)}</tr><tr><td>log p</td>{''.join(lp)}</tr></table>")
        self.html.value = (
            '<table style="font-family:monospace"><tr><th>step</th><th>shape</th></tr>' + rows + "</table>" + grid
            + f'<p style="font-family:monospace">{n} scored tokens; sequence_logps = '
            f'<b class="lossbook-loss">{self.logp:.4f}</b>; seed 001\'s unshifted gather on the same logits = '
            f"{self.unshifted:.4f}</p>"
        )
