"""Chapter 02's explorer: which logit position is scored against which label, and the gradient it gets."""

from __future__ import annotations

import html
import math

import ipywidgets as W
import torch

from ..causal_lm import causal_lm_loss, next_token_labels
from ..text import CharTokenizer
from . import _signed_bar

__all__ = ["AlignmentViewer"]

_KEPT, _NONE, _PICKED = "#cfe8cf", "#eeeeee", "#1f77b4"


def _show(ch: str) -> str:
    return {" ": "&#9251;", "\n": "&#8629;"}.get(ch, html.escape(ch))


class AlignmentViewer(W.VBox):
    """A short text through ``causal_lm_loss``: the shift, the ignored positions, the loss and one gradient row.

    The text, followed by ``padding`` pad tokens (labels ``-100``), gets seeded random logits
    ``[1, seq, vocab]``.  ``position`` picks a column; ``logit`` sets the logit that column gives to its
    target (the next character), so the reader can watch that target's probability, the loss and the
    gradient row ``(softmax - onehot(next token)) / N`` move.  A column with no target (the last real
    character, padding) has a zero gradient row whatever its (finite) logits.

    ``viewer.loss``, ``viewer.grad`` (the selected row), ``viewer.kept`` and ``viewer.targets`` hold the
    numbers shown, computed by ``causal_lm_loss`` and autograd in float64.  The logits lie on the logit
    slider's grid (step 0.5), so the slider always shows the exact logit the loss uses, and a value sent
    back by the browser a hair off the grid (a slider echo) is rounded to it and changes nothing.
    """

    def __init__(self, text: str = "Jack and Jill", padding: int = 2, position: int = 0, seed: int = 0):
        if len(text) < 2:
            raise ValueError(f"text needs at least 2 characters to have a next token, got {text!r}")
        self.text, self.seed = text, seed
        self.tokenizer = CharTokenizer(text, specials=("<pad>",))
        self.overrides: dict[tuple[int, int], float] = {}
        self.padding = W.IntSlider(value=padding, min=0, max=4, description="padding")
        self.position = W.IntSlider(value=position, min=0, max=len(text) + padding - 1, description="position t")
        self.logit = W.FloatSlider(value=0.0, min=-6.0, max=12.0, step=0.5, description="z[t, target]")
        self.html = W.HTML()
        self._syncing = False
        self.padding.observe(self._on_padding, names="value")
        self.position.observe(self._on_position, names="value")
        self.logit.observe(self._on_logit, names="value")
        self._sync_logit()
        self._update()
        super().__init__([W.HBox([self.position, self.logit, self.padding]), self.html])

    # ---- the tensors -------------------------------------------------------------------------------------
    def tensors(self):
        """``(input_ids [1, seq], labels [1, seq], logits [1, seq, vocab])``; labels are -100 on padding."""
        ids = self.tokenizer.encode(self.text)  # [chars]
        pad = self.padding.value
        input_ids = torch.cat([ids, ids.new_full((pad,), self.tokenizer.pad_id)])[None]  # [1, seq]
        labels = input_ids.clone()
        labels[0, len(self.text) :] = -100  # padding is not a target
        g = torch.Generator().manual_seed(self.seed)
        seq, vocab = input_ids.shape[1], self.tokenizer.vocab_size
        logits = 2 * torch.randn(1, seq, vocab, generator=g, dtype=torch.float64)  # [1, seq, vocab]
        # on the logit slider's grid (step 0.5, [min, max]): the slider shows exactly the logit computed with
        logits = self._on_grid(logits)
        for (t, k), value in self.overrides.items():
            if t < seq:
                logits[0, t, k] = value
        return input_ids, labels, logits

    def _on_grid(self, value):
        """Round to the logit slider's step and clip to its range (a float or a tensor)."""
        lo, hi, step = self.logit.min, self.logit.max, self.logit.step
        if torch.is_tensor(value):
            return (value / step).round().mul(step).clamp(lo, hi)
        return float(min(hi, max(lo, round(value / step) * step)))

    def _target(self, t: int) -> int | None:
        """The label row t is scored against, or None."""
        _, labels, _ = self.tensors()
        y = int(next_token_labels(labels)[0, t])
        return None if y == -100 else y

    # ---- slider handlers ----------------------------------------------------------------------------------
    def _on_padding(self, change):
        self._syncing = True
        self.position.max = len(self.text) + self.padding.value - 1
        self._syncing = False
        self._sync_logit()
        self._update()

    def _on_position(self, change):
        if self._syncing:
            return
        self._sync_logit()
        self._update()

    def _on_logit(self, change):
        if self._syncing:
            return
        t = self.position.value
        k = self._target(t)
        input_ids, _, logits = self.tensors()
        if k is None:  # no target: the slider moves the logit of the current token, which the loss ignores
            k = int(input_ids[0, t])
        value = self._on_grid(float(self.logit.value))
        if value != self.logit.value:  # a browser echo a hair off the grid: show the grid value
            self._syncing = True
            self.logit.value = value
            self._syncing = False
        if value == float(logits[0, t, k]):  # nothing changed (e.g. the echo of a position move)
            return
        self.overrides[(t, k)] = value
        self._update()

    def _sync_logit(self):
        """Show the selected column's current logit for its target without triggering an update."""
        t = self.position.value
        input_ids, _, logits = self.tensors()
        k = self._target(t)
        k = int(input_ids[0, t]) if k is None else k
        self._syncing = True
        self.logit.value = float(logits[0, t, k])  # on the grid already: exactly the value computed with
        self._syncing = False

    # ---- compute and render -----------------------------------------------------------------------------
    def compute(self):
        input_ids, labels, logits = self.tensors()
        leaf = logits.clone().requires_grad_(True)
        loss = causal_lm_loss(leaf, labels)  # [] mean over kept targets (NaN if none)
        loss.backward()
        targets = next_token_labels(labels)[0].tolist()  # [seq]
        return input_ids[0].tolist(), targets, leaf.detach()[0], leaf.grad[0], float(loss.detach())

    def _update(self, change=None):
        ids, targets, logits, grad, self.loss = self.compute()
        t = self.position.value
        seq, vocab = logits.shape
        self.targets = [None if y == -100 else y for y in targets]
        self.kept = sum(y is not None for y in self.targets)
        self.grad = grad[t].tolist()
        vocab_names = self.tokenizer.vocab

        def cell(content, bg, picked):
            border = f"2px solid {_PICKED}" if picked else "1px solid #ddd"
            return (f'<td style="width:22px;text-align:center;background:{bg};border:{border}">{content}</td>')

        head = "".join(cell(i, "#fff", i == t) for i in range(seq))
        inputs = "".join(cell(_show(vocab_names[i]) if i else "&#9633;", "#fff", j == t) for j, i in enumerate(ids))
        scored = "".join(
            cell(_show(vocab_names[y]) if y is not None else "&middot;", _KEPT if y is not None else _NONE, j == t)
            for j, y in enumerate(self.targets)
        )
        grid = (
            '<table style="font-family:monospace;border-collapse:collapse">'
            f"<tr><td>t</td>{head}</tr><tr><td>input x_t</td>{inputs}</tr>"
            f"<tr><td>target x_(t+1)</td>{scored}</tr></table>"
        )
        steps = [
            ("logits", f"[1, {seq}, {vocab}]"),
            ("labels (padding = -100)", f"[1, {seq}]"),
            ("F.pad(labels, (0, 1), value=-100)", f"[1, {seq + 1}]"),
            ("[..., 1:]  (the shift)", f"[1, {seq}]"),
            ("logits.view(-1, vocab)  (no copy)", f"[{seq}, {vocab}]"),
            ("shift_labels.view(-1)", f"[{seq}]"),
            ("kept targets N", f"{self.kept}"),
        ]
        shapes = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td></tr>" for a, b in steps)
        y = self.targets[t]
        if y is None:
            why = "padding" if t >= len(self.text) else "the last character: nothing follows it"
            detail = f"position {t} has no target ({why}); its gradient row is zero"
        else:
            p = float(logits[t].softmax(-1)[y])
            detail = (f"position {t} is scored against {_show(vocab_names[y])!s}: p = {p:.4f}, "
                      f"-log p = {-math.log(p):.4f}, contributes -log p / N to the loss")
        rows = "".join(
            f"<tr><td>{_show(name) if len(name) == 1 else html.escape(name)}{' &larr; target' if k == y else ''}</td>"
            f"<td>{_signed_bar(g * max(self.kept, 1))} {g:+.4f}</td></tr>"
            for k, (name, g) in enumerate(zip(vocab_names, self.grad))
        )
        loss = "nan (no target kept: 0/0)" if self.kept == 0 else f"{self.loss:.4f}"
        self.html.value = (
            f"{grid}<p style=\"font-family:monospace\">green = scored, grey = ignored; {self.kept} of {seq} "
            f"positions have a target</p>"
            '<div style="display:flex;gap:24px;font-family:monospace"><table>'
            f"<tr><th>step</th><th>shape</th></tr>{shapes}</table>"
            f'<table><tr><th>token</th><th>dL/dz[{t}] = (softmax - onehot) / N</th></tr>{rows}</table></div>'
            f'<p style="font-family:monospace">{detail}<br>loss = <b class="lossbook-loss">{loss}</b></p>'
        )
