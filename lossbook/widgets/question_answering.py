"""Chapter 06's explorer: start and end distributions over a short context, the gold span, loss and gradients.

Every number shown comes from ``question_answering_loss`` (float64) and autograd.
"""

from __future__ import annotations

import html
import math

import ipywidgets as W
import torch

from ..cross_entropy import fixed_cross_entropy
from ..question_answering import question_answering_loss
from . import _bar, _signed_bar

__all__ = ["SpanExplorer", "EXAMPLE_TOKENS", "CLS_CONTROL"]

CLS_CONTROL = "cut-off answer → [CLS]"  # the checkbox: label a window without the whole answer (0, 0)

EXAMPLE_TOKENS = (
    "[CLS]", "where", "did", "the", "cat", "sit", "?", "[SEP]",
    "the", "cat", "sat", "on", "the", "mat", "all", "day",
)  # fmt: skip


class SpanExplorer(W.VBox):
    """Move the predicted start and end, sharpen them, move the gold span (even out of the window).

    The logits of token i are ``base_i + sharpness * [i == predicted]`` for each head (``base`` is
    small seeded noise).  ``explorer.loss``, ``start_loss``, ``end_loss``, ``start_probs``,
    ``end_probs``, ``start_grad``, ``end_grad`` hold the numbers shown; ``explorer.steps`` lists
    ``(operation, shape)`` as the tensors flow through the loss.
    """

    def __init__(
        self,
        tokens=EXAMPLE_TOKENS,
        gold=(11, 13),
        predicted=(11, 13),
        sharpness=3.0,
        seed: int = 0,
        cls_for_cut_off: bool = True,
    ):
        self.tokens = list(tokens)
        seq = len(self.tokens)
        g = torch.Generator().manual_seed(seed)
        self.base_start = 0.5 * torch.randn(seq, generator=g, dtype=torch.float64)  # [seq]
        self.base_end = 0.5 * torch.randn(seq, generator=g, dtype=torch.float64)  # [seq]
        style = {"description_width": "110px"}
        layout = W.Layout(width="340px")

        def pos(value, description, low, high):
            return W.IntSlider(value=value, min=low, max=high, description=description, style=style, layout=layout)

        self.pred_start = pos(predicted[0], "predicted start", 0, seq - 1)
        self.pred_end = pos(predicted[1], "predicted end", 0, seq - 1)
        self.sharpness = W.FloatSlider(
            value=sharpness, min=0.0, max=10.0, step=0.5, description="sharpness", style=style, layout=layout
        )
        self.gold_start = pos(gold[0], "gold start", -2, seq + 3)
        self.gold_end = pos(gold[1], "gold end", -2, seq + 3)
        self.column = W.Checkbox(value=False, description="positions as [batch, 1]", indent=False)
        self.cls_for_cut_off = W.Checkbox(value=cls_for_cut_off, description=CLS_CONTROL, indent=False)
        self.html = W.HTML()
        controls = [
            self.pred_start,
            self.pred_end,
            self.sharpness,
            self.gold_start,
            self.gold_end,
            self.cls_for_cut_off,
            self.column,
        ]
        for w in controls:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox(controls), self.html])])

    def tensors(self):
        """``start_logits, end_logits`` ``[1, seq]`` and the gold positions ``[1]`` (or ``[1, 1]``)."""
        seq = len(self.tokens)
        onehot = torch.eye(seq, dtype=torch.float64)
        start_logits = (self.base_start + self.sharpness.value * onehot[self.pred_start.value]).unsqueeze(0)
        end_logits = (self.base_end + self.sharpness.value * onehot[self.pred_end.value]).unsqueeze(0)
        shape = (1, 1) if self.column.value else (1,)
        self.labelled = self.training_positions()
        starts = torch.full(shape, self.labelled[0])
        ends = torch.full(shape, self.labelled[1])
        return start_logits, end_logits, starts, ends  # [1, seq] x2, [1] or [1, 1] x2

    def training_positions(self) -> tuple[int, int]:
        """The gold positions the loss gets: ``(0, 0)`` ([CLS], "no answer in this window") when the box is
        ticked and the window does not hold the whole answer (the Hugging Face recipe), else the gold as set."""
        seq, gold = len(self.tokens), (self.gold_start.value, self.gold_end.value)
        inside = 0 <= gold[0] < seq and 0 <= gold[1] < seq
        return (0, 0) if self.cls_for_cut_off.value and not inside else gold

    def compute(self):
        start_logits, end_logits, starts, ends = self.tensors()
        start_logits.requires_grad_(True)
        end_logits.requires_grad_(True)
        loss = question_answering_loss(start_logits, end_logits, starts, ends)  # []
        loss.backward()
        seq = start_logits.shape[1]
        s, e = starts.view(-1).clamp(0, seq), ends.view(-1).clamp(0, seq)  # [1] each, for the per-head display
        start_loss = fixed_cross_entropy(start_logits.detach(), s, ignore_index=seq)
        end_loss = fixed_cross_entropy(end_logits.detach(), e, ignore_index=seq)
        return {
            "loss": float(loss.detach()),
            "start_loss": float(start_loss),
            "end_loss": float(end_loss),
            "start_probs": start_logits.detach().softmax(-1)[0].tolist(),
            "end_probs": end_logits.detach().softmax(-1)[0].tolist(),
            "start_grad": start_logits.grad[0].tolist(),
            "end_grad": end_logits.grad[0].tolist(),
            "clamped": (int(s), int(e)),
        }

    def _update(self, change=None):
        numbers = self.compute()
        for key, value in numbers.items():
            setattr(self, key, value)
        seq = len(self.tokens)
        shape = "[1, 1]" if self.column.value else "[1]"
        self.steps = [
            ("start_logits, end_logits", [1, seq]),
            (f"start_positions, end_positions {shape} -> squeeze(-1)", [1]),
            (f"clamp(0, {seq}); ignore_index = seq = {seq}", [1]),
            ("fixed_cross_entropy per head (mean over kept rows)", []),
            ("(start_loss + end_loss) / 2", []),
        ]
        self.html.value = self._render()

    def _render(self) -> str:
        seq = len(self.tokens)
        s, e = self.clamped
        rows = []
        for i, token in enumerate(self.tokens):
            in_span = s <= i <= e and s < seq
            marks = (" &larr; start" if i == s else "") + (" &larr; end" if i == e else "")
            bg = "#fff3b0" if in_span else "transparent"
            rows.append(
                f'<tr style="background:{bg}"><td>{i}</td><td>{html.escape(token)}{marks}</td>'
                f"<td>{_bar(self.start_probs[i], 80, '#2ca02c')} {self.start_probs[i]:.3f}</td>"
                f"<td>{_signed_bar(self.start_grad[i])} {self.start_grad[i]:+.3f}</td>"
                f"<td>{_bar(self.end_probs[i], 80, '#9467bd')} {self.end_probs[i]:.3f}</td>"
                f"<td>{_signed_bar(self.end_grad[i])} {self.end_grad[i]:+.3f}</td></tr>"
            )
        steps = "".join(f"<tr><td>{html.escape(op)}</td><td>{shape}</td></tr>" for op, shape in self.steps)
        gold = (self.gold_start.value, self.gold_end.value)
        labelled = self.labelled

        def head(name, value, clamped):
            if math.isnan(value):
                return f"{name} = nan (gold clamped to {clamped} = seq: ignored, 0 of 1 rows kept)"
            return f"{name} = {value:.4f}"

        note = ""
        if labelled != gold:
            note = " &rarr; not all in the window: labelled (0, 0), [CLS] = no answer (the recipe)"
        elif gold != (s, e):
            note = f" &rarr; clamped to ({s}, {e})"
        return (
            '<table style="font-family:monospace"><tr><th>step</th><th>shape</th></tr>' + steps + "</table>"
            '<table style="border-collapse:collapse;font-family:monospace">'
            "<tr><th>i</th><th>token</th><th>p_start</th><th>dL/dz_start</th><th>p_end</th><th>dL/dz_end</th></tr>"
            + "".join(rows)
            + "</table>"
            f'<p style="font-family:monospace">gold (start, end) = {gold}{note}<br>'
            f"{head('start CE', self.start_loss, s)}; {head('end CE', self.end_loss, e)}<br>"
            f'loss = (start CE + end CE) / 2 = <b class="lossbook-loss">{self.loss:.4f}</b></p>'
        )
