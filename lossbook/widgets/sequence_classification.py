"""Chapter 04's explorer: pick a problem type, move logits and labels, follow shapes, loss and gradient."""

from __future__ import annotations

import html
import warnings

import ipywidgets as W
import torch
import torch.nn.functional as F

from ..sequence_classification import sequence_classification_loss
from . import _bar, _signed_bar

__all__ = ["SequenceClassificationExplorer"]

_TYPES = [
    ("regression (MSE)", "regression"),
    ("single-label (cross-entropy)", "single_label_classification"),
    ("multi-label (BCE with logits)", "multi_label_classification"),
]
CLASSES = 3  # outputs of the classification heads in the explorer


class SequenceClassificationExplorer(W.VBox):
    """One head, three problem types: shapes through ``sequence_classification_loss`` and dL/dz.

    Row 0 of the batch is set by the sliders (logits z0..z2, and the label: ``y`` for regression, a
    class for single-label, ``y0..y2`` in [0, 1] for multi-label); the other ``batch - 1`` rows are fixed
    random examples (seeded).  Regression uses ``num_labels = 1`` (only z0), the classifiers 3.
    ``explorer.loss`` is lossbook's loss over the batch, ``explorer.grad`` autograd's dL/dz for row 0,
    ``explorer.closed_form`` the derived gradient for row 0 and ``explorer.steps`` the
    ``(operation, shape)`` list shown.
    """

    def __init__(self, problem_type: str = "single_label_classification", logits=(1.0, -0.5, 0.3),
                 batch: int = 1, seed: int = 0):
        if len(logits) != CLASSES:
            raise ValueError(f"logits has {len(logits)} entries, the explorer has {CLASSES} outputs")
        self.seed = seed
        self.problem = W.Dropdown(options=_TYPES, value=problem_type, description="problem")
        self.batch = W.IntSlider(value=batch, min=1, max=4, description="batch")
        self.sliders = [
            W.FloatSlider(value=float(v), min=-6.0, max=6.0, step=0.1, description=f"z{i}")
            for i, v in enumerate(logits)
        ]
        self.target = W.FloatSlider(value=0.5, min=-3.0, max=3.0, step=0.1, description="label y")
        self.target_class = W.Dropdown(options=[(f"class {i}", i) for i in range(CLASSES)], value=0,
                                       description="label y")
        self.targets = [
            W.FloatSlider(value=float(i % 2 == 0), min=0.0, max=1.0, step=0.05, description=f"y{i}")
            for i in range(CLASSES)
        ]
        self.html = W.HTML()
        for w in [self.problem, self.batch, *self.sliders, self.target, self.target_class, *self.targets]:
            w.observe(self._update, names="value")
        # the controls wrap in rows above the tables (side by side, the tables were clipped in the book's column)
        controls = W.HBox([self.problem, self.batch, *self.sliders, self.target, self.target_class, *self.targets],
                          layout=W.Layout(flex_flow="row wrap", width="100%"))
        self._update()
        super().__init__([controls, self.html], layout=W.Layout(width="100%"))

    # the batch: row 0 from the sliders, the rest fixed random rows
    def tensors(self):
        kind, b = self.problem.value, self.batch.value
        g = torch.Generator().manual_seed(self.seed)
        rest_z = 2 * torch.randn(3, CLASSES, generator=g, dtype=torch.float64)  # [3, classes]
        rest_reg = torch.randn(3, generator=g, dtype=torch.float64)  # [3]
        rest_cls = torch.randint(0, CLASSES, (3,), generator=g)  # [3]
        rest_multi = torch.randint(0, 2, (3, CLASSES), generator=g).double()  # [3, classes]
        z = torch.cat([torch.tensor([[s.value for s in self.sliders]], dtype=torch.float64), rest_z])[:b]
        if kind == "regression":
            labels = torch.cat([torch.tensor([self.target.value], dtype=torch.float64), rest_reg])[:b]  # [batch]
            return z[:, :1].clone(), labels, 1  # [batch, 1]
        if kind == "single_label_classification":
            return z, torch.cat([torch.tensor([self.target_class.value]), rest_cls])[:b], CLASSES  # [batch]
        labels = torch.cat([torch.tensor([[t.value for t in self.targets]], dtype=torch.float64), rest_multi])[:b]
        return z, labels, CLASSES  # [batch, classes] each

    def compute(self):
        z, labels, num_labels = self.tensors()
        z.requires_grad_(True)
        loss = sequence_classification_loss(labels, z, num_labels, self.problem.value)  # []
        loss.backward()
        return z.detach(), labels, num_labels, float(loss.detach()), z.grad[0].tolist()

    def _steps(self, z, labels, num_labels):
        kind, b = self.problem.value, z.shape[0]
        if kind == "regression":
            squeezed = list(z.squeeze().shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self.naive = float(F.mse_loss(z, labels))  # [batch, 1] vs [batch] broadcasts to [batch, batch]
            return [
                ("pooled_logits", [b, 1]),
                ("labels", [b]),
                ("pooled_logits.squeeze()", squeezed),
                ("labels.squeeze()", squeezed),
                ("(z - y) ** 2", squeezed),
                ("mean", []),
            ]
        if kind == "single_label_classification":
            return [
                ("pooled_logits", [b, num_labels]),
                ("labels (class indices)", [b]),
                (f"pooled_logits.view(-1, {num_labels})", [b, num_labels]),
                ("labels.view(-1)", [b]),
                ("log_softmax(z).gather(-1, y)", [b]),
                ("-mean", []),
            ]
        return [
            ("pooled_logits", [b, num_labels]),
            ("labels (multi-hot floats)", [b, num_labels]),
            ("BCE per (row, label)", [b, num_labels]),
            (f"mean over {b} x {num_labels} entries", []),
        ]

    def _closed_form(self, z, labels, num_labels):
        kind, b, row = self.problem.value, z.shape[0], z[0]
        if kind == "regression":
            return [(2 * (row[0] - labels[0]) / b).item()], [row[0].item()]
        if kind == "single_label_classification":
            p = row.softmax(-1)  # [classes]
            return ((p - F.one_hot(labels[0], num_labels).double()) / b).tolist(), p.tolist()
        p = torch.sigmoid(row)  # [classes]
        return ((p - labels[0]) / (b * num_labels)).tolist(), p.tolist()

    def _update(self, change=None):
        kind = self.problem.value
        for w, shown in [(self.target, kind == "regression"),
                         (self.target_class, kind == "single_label_classification"),
                         *[(t, kind == "multi_label_classification") for t in self.targets],
                         *[(s, kind != "regression" or i == 0) for i, s in enumerate(self.sliders)]]:
            w.layout.display = None if shown else "none"
        z, labels, num_labels, self.loss, self.grad = self.compute()
        self.steps = self._steps(z, labels, num_labels)
        self.closed_form, predictions = self._closed_form(z, labels, num_labels)
        self.html.value = self._render(z, labels, predictions)

    def _render(self, z, labels, predictions):
        kind, b = self.problem.value, z.shape[0]
        steps = "".join(f"<tr><td>{html.escape(op)}</td><td>{shape}</td></tr>" for op, shape in self.steps)
        if kind == "regression":
            head, formula = ("prediction z", "label y"), f"dL/dz0 = 2 (z0 - y) / {b}"
            targets = [f"{labels[0].item():+.2f}"]
        elif kind == "single_label_classification":
            head, formula = ("softmax(z)", "onehot(y)"), f"dL/dz = (softmax(z) - onehot(y)) / {b}"
            targets = ["1" if k == int(labels[0]) else "0" for k in range(len(predictions))]
        else:
            head, formula = ("sigmoid(z)", "label y"), f"dL/dz = (sigmoid(z) - y) / ({b} x {CLASSES})"
            targets = [f"{v:.2f}" for v in labels[0].tolist()]
        rows = "".join(
            f"<tr><td>z{k} = {z[0, k].item():+.1f}</td>"
            f"<td>{_bar(min(abs(p), 1.0), 100, '#2ca02c') if kind != 'regression' else ''} {p:.4f}</td>"
            f"<td>{t}</td><td>{_signed_bar(g)} {g:+.4f}</td></tr>"
            for k, (p, t, g) in enumerate(zip(predictions, targets, self.grad))
        )
        naive = ""
        if kind == "regression" and b > 1:
            naive = (f'<p style="font-family:monospace;color:#d62728">without the squeeze: F.mse_loss([{b}, 1], '
                     f"[{b}]) broadcasts to [{b}, {b}] and gives {self.naive:.4f} (torch only warns)</p>")
        return (
            '<table style="font-family:monospace"><tr><th>step</th><th>shape</th></tr>' + steps + "</table>"
            f'<p style="font-family:monospace">row 0 of {b} (the other rows are fixed random examples)</p>'
            '<table style="border-collapse:collapse;font-family:monospace">'
            f"<tr><th>logit</th><th>{head[0]}</th><th>{head[1]}</th><th>{html.escape(formula)}</th></tr>"
            + rows + "</table>"
            + f'<p style="font-family:monospace">loss = <b class="lossbook-loss">{self.loss:.4f}</b></p>' + naive
        )
