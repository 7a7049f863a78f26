"""ipywidgets explorers: move a slider, watch shapes, probabilities, loss and gradient change.

Each explorer is a widget (display it as the last expression of a cell) whose
numbers come from lossbook itself, so what the reader sees is what the tests
check.  The HTML they render is plain inline-styled markup, so the built book
shows it from the notebook's embedded widget state.

This module holds chapter 01's explorers; each later chapter has a submodule
(``lossbook.widgets.causal_lm``, ...).
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..cross_entropy import fixed_cross_entropy

__all__ = [
    "LogitExplorer",
    "ShapeTracer",
    "causal_lm",
    "masked_lm",
    "sequence_classification",
    "token_classification",
    "question_answering",
    "reward",
    "reward_laplace",
    "distributed",
    "dpo",
    "spin",
    "memory",
]

def _bar(value: float, scale: float, color: str) -> str:
    """A bar of width |value| * scale px."""
    return (
        '<div style="display:inline-block;vertical-align:middle;height:12px;'
        f'width:{abs(value) * scale:.0f}px;background:{color}"></div>'
    )


def _signed_bar(value: float) -> str:
    """A bar growing left (negative) or right (positive) of a 60 px axis."""
    width = min(abs(value), 1.0) * 60
    left = 60 - width if value < 0 else 60
    color = "#d62728" if value < 0 else "#1f77b4"
    return (
        '<div style="position:relative;display:inline-block;width:120px;height:12px;'
        'border-left:1px solid #ccc;border-right:1px solid #ccc;vertical-align:middle">'
        f'<div style="position:absolute;left:{left:.0f}px;width:{width:.0f}px;height:12px;background:{color}"></div>'
        '<div style="position:absolute;left:60px;width:1px;height:12px;background:#444"></div></div>'
    )


class LogitExplorer(W.VBox):
    """Logit sliders -> softmax bars, cross-entropy and its gradient dL/dz = softmax(z) - onehot(y).

    ``explorer.loss``, ``explorer.probs`` and ``explorer.grad`` hold the
    numbers shown, computed by ``fixed_cross_entropy`` and autograd.
    """

    def __init__(self, logits=(2.0, 1.0, 0.1, -1.0), target: int = 0, names=None):
        names = list(names or [f"class {i}" for i in range(len(logits))])
        if len(names) != len(logits):
            raise ValueError(f"names has {len(names)} entries for {len(logits)} logits")
        self.names = names
        self.sliders = [
            W.FloatSlider(value=float(v), min=-10.0, max=10.0, step=0.1, description=f"z{i}", continuous_update=True)
            for i, v in enumerate(logits)
        ]
        self.target = W.Dropdown(options=[(n, i) for i, n in enumerate(names)], value=target, description="target y")
        self.html = W.HTML()
        for w in [*self.sliders, self.target]:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([*self.sliders, self.target]), self.html])])

    def compute(self):
        z = torch.tensor([[s.value for s in self.sliders]], dtype=torch.float64, requires_grad=True)  # [1, classes]
        y = torch.tensor([self.target.value])  # [1]
        loss = fixed_cross_entropy(z, y)  # []
        loss.backward()
        return float(loss.detach()), z.detach().softmax(-1)[0].tolist(), z.grad[0].tolist()

    def _update(self, change=None):
        self.loss, self.probs, self.grad = self.compute()
        rows = []
        for i, (name, p, g) in enumerate(zip(self.names, self.probs, self.grad)):
            mark = " &larr; y" if i == self.target.value else ""
            rows.append(
                f"<tr><td>{html.escape(name)}{mark}</td><td>{self.sliders[i].value:+.1f}</td>"
                f"<td>{_bar(p, 120, '#2ca02c')} {p:.4f}</td><td>{_signed_bar(g)} {g:+.4f}</td></tr>"
            )
        self.html.value = (
            '<table style="border-collapse:collapse;font-family:monospace">'
            "<tr><th>class</th><th>z</th><th>softmax(z)</th><th>dL/dz = p - onehot(y)</th></tr>"
            + "".join(rows)
            + '</table><p style="font-family:monospace">loss = -log p_y = '
            + f'<b class="lossbook-loss">{self.loss:.4f}</b></p>'
        )


class ShapeTracer(W.VBox):
    """[batch, seq, vocab] logits and [batch, seq] labels through flatten, mask, gather and reduce.

    Row b of the labels ends in ``padding + b`` ignored positions (capped at
    seq), so rows keep different numbers of targets.  ``tracer.steps`` lists
    ``(operation, shape)`` and ``tracer.loss`` the loss from ``fixed_cross_entropy``.
    """

    def __init__(self, batch: int = 2, seq: int = 5, vocab: int = 8, padding: int = 1, seed: int = 0):
        self.seed = seed
        self.batch = W.IntSlider(value=batch, min=1, max=4, description="batch")
        self.seq = W.IntSlider(value=seq, min=1, max=10, description="seq")
        self.vocab = W.IntSlider(value=vocab, min=2, max=50, description="vocab")
        self.padding = W.IntSlider(value=padding, min=0, max=10, description="padding")
        self.html = W.HTML()
        for w in (self.batch, self.seq, self.vocab, self.padding):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([self.batch, self.seq, self.vocab, self.padding]), self.html])])

    def tensors(self):
        b, t, v = self.batch.value, self.seq.value, self.vocab.value
        g = torch.Generator().manual_seed(self.seed)
        logits = torch.randn(b, t, v, generator=g)  # [batch, seq, vocab]
        labels = torch.randint(0, v, (b, t), generator=g)  # [batch, seq]
        for row in range(b):
            pad = min(self.padding.value + row, t)
            if pad:
                labels[row, t - pad :] = -100
        return logits, labels

    def _update(self, change=None):
        logits, labels = self.tensors()
        b, t, v = logits.shape
        flat_logits = logits.view(-1, v)  # [batch*seq, vocab]
        flat_labels = labels.view(-1)  # [batch*seq]
        mask = flat_labels != -100  # [batch*seq]
        kept = int(mask.sum())
        picked = flat_logits.log_softmax(-1)[mask].gather(-1, flat_labels[mask].unsqueeze(-1))  # [kept, 1]
        self.loss = float(fixed_cross_entropy(flat_logits, flat_labels))
        self.steps = [
            ("logits", [b, t, v]),
            ("labels", [b, t]),
            ("logits.view(-1, vocab)", [b * t, v]),
            ("labels.view(-1)", [b * t]),
            ("mask = labels != -100", [b * t]),
            ("log_softmax(logits)[mask].gather(labels)", list(picked.shape[:1])),
            ("-sum / kept", []),
        ]
        rows = "".join(f"<tr><td>{html.escape(op)}</td><td>{shape}</td></tr>" for op, shape in self.steps)
        cells = "".join(
            "<tr>"
            + "".join(
                f'<td style="width:26px;text-align:center;background:{"#cfe8cf" if y != -100 else "#eee"}">'
                f"{y if y != -100 else '&middot;'}</td>"
                for y in labels[row].tolist()
            )
            + "</tr>"
            for row in range(b)
        )
        loss = "nan (every label ignored: 0/0)" if kept == 0 else f"{self.loss:.4f}"
        self.html.value = (
            '<table style="font-family:monospace"><tr><th>step</th><th>shape</th></tr>' + rows + "</table>"
            f'<p style="font-family:monospace">labels (grey = ignored): {kept} of {b * t} kept</p>'
            f'<table style="font-family:monospace;border-collapse:collapse">{cells}</table>'
            f'<p style="font-family:monospace">loss = <b class="lossbook-loss">{loss}</b>; '
            f"logits hold {b * t * v} floats = {b * t * v * 4} bytes in float32</p>"
        )


# one module per later chapter; imported last, so they can build on the names above
from . import (  # noqa: E402
    causal_lm,
    distributed,
    dpo,
    masked_lm,
    memory,
    question_answering,
    reward,
    reward_laplace,
    sequence_classification,
    spin,
    token_classification,
)
