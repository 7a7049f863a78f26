"""Chapter 05's explorer: sentence -> pieces -> word ids -> labels, and the loss and gradient per token.

The numbers shown come from ``token_classification_loss`` and autograd, so
what the reader sees is what the tests check.
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..demos.token_classification import TAGS, SubwordTokenizer, align_labels, all_words
from ..token_classification import token_classification_loss
from . import _signed_bar

__all__ = ["EXAMPLE_SENTENCES", "AlignmentExplorer"]

EXAMPLE_SENTENCES = [
    ("Srinivasa Ramanujan lives in Reykjavik .", [1, 2, 0, 0, 3, 0]),
    ("yesterday Ada met Jordan in New York .", [0, 1, 0, 1, 0, 3, 4, 0]),
    ("in Montevideo nobody knows Grace Hopper .", [0, 3, 0, 0, 1, 2, 0]),
]
_MAX_TOKENS = 48  # logits are drawn once per sentence at this length, so padding never reshuffles them


class AlignmentExplorer(W.VBox):
    """Pick a sentence, toggle ``label_all_tokens``, pad it, and move one logit of one token.

    After every change: ``explorer.pieces``, ``explorer.word_ids``,
    ``explorer.labels`` (one per token, ``-100`` where ignored),
    ``explorer.logits`` (Float[Tensor, "1 seq tags"], float64),
    ``explorer.loss`` and ``explorer.grad_row`` (d loss / d logits of the
    chosen token, zero when its label is ignored) and ``explorer.kept``.
    """

    def __init__(self, sentence: int = 0, label_all_tokens: bool = False, padding: int = 3, seed: int = 0):
        self.tokenizer = SubwordTokenizer(all_words())
        self.seed = seed
        self._edits: dict[tuple[int, int, int], float] = {}  # (sentence, position, tag) -> logit
        self.sentence = W.Dropdown(
            options=[(s, i) for i, (s, _) in enumerate(EXAMPLE_SENTENCES)], value=sentence, description="sentence"
        )
        self.label_all = W.Checkbox(value=label_all_tokens, description="label_all_tokens")
        self.padding = W.IntSlider(value=padding, min=0, max=8, description="padding")
        self.position = W.IntSlider(value=1, min=0, max=1, description="token")
        self.tag = W.Dropdown(options=[(t, i) for i, t in enumerate(TAGS)], value=0, description="tag")
        self.logit = W.FloatSlider(value=0.0, min=-8.0, max=8.0, step=0.1, description="its logit")
        self.html = W.HTML()
        self._syncing = False
        for w in (self.sentence, self.label_all, self.padding, self.position, self.tag):
            w.observe(self._update, names="value")
        self.logit.observe(self._edit_logit, names="value")
        self._update()
        controls = W.VBox([self.sentence, self.label_all, self.padding, self.position, self.tag, self.logit])
        super().__init__([controls, self.html])

    # ---- the numbers --------------------------------------------------------------------------------------------

    def tensors(self):
        """``(logits [1, seq, tags] float64, labels [1, seq])`` for the current controls."""
        text, word_tags = EXAMPLE_SENTENCES[self.sentence.value]
        pieces, word_ids = self.tokenizer(text.split())
        pieces = pieces + ["[PAD]"] * self.padding.value  # padding has no word: word id None
        word_ids = word_ids + [None] * self.padding.value
        self.pieces, self.word_ids = pieces, word_ids
        self.labels = align_labels(word_tags, word_ids, label_all_tokens=self.label_all.value)
        g = torch.Generator().manual_seed(self.seed * 100 + self.sentence.value)
        base = torch.randn(_MAX_TOKENS, len(TAGS), generator=g, dtype=torch.float64)  # [max, tags]
        # on the logit slider's 0.1 grid: the slider shows exactly the logit the loss uses, and the value a
        # browser echoes back after a re-sync is that same logit (off the grid, it snapped and became an edit)
        base = torch.round(base * 10) / 10
        for (s, t, k), v in self._edits.items():
            if s == self.sentence.value:
                base[t, k] = v
        logits = base[: len(pieces)].unsqueeze(0)  # [1, seq, tags]
        return logits, torch.tensor([self.labels])  # [1, seq]

    def compute(self):
        logits, labels = self.tensors()
        leaf = logits.clone().requires_grad_(True)
        loss = token_classification_loss(leaf, labels, num_labels=len(TAGS))  # []
        loss.backward()
        self.logits = logits
        self.kept = int((labels != -100).sum())
        self.loss = float(loss.detach())
        self.grad = leaf.grad[0]  # [seq, tags]
        self.grad_row = self.grad[self.position.value].tolist()  # [tags]

    # ---- the controls -------------------------------------------------------------------------------------------

    def _edit_logit(self, change=None):
        if self._syncing:
            return
        self._edits[(self.sentence.value, self.position.value, self.tag.value)] = float(self.logit.value)
        self._update()

    def _update(self, change=None):
        if self._syncing:
            return
        logits, _ = self.tensors()
        seq = logits.shape[1]
        self._syncing = True  # keep the sliders consistent without re-entering
        self.position.max = seq - 1
        self.logit.value = float(logits[0, self.position.value, self.tag.value])
        self._syncing = False
        self.compute()
        self._render()

    def _render(self):
        seq, pos = len(self.pieces), self.position.value

        def cell(text, kept, chosen=False):
            bg = "#cfe8cf" if kept else "#eee"
            border = "2px solid #d62728" if chosen else "1px solid #ddd"
            return f'<td style="text-align:center;padding:2px 5px;background:{bg};border:{border}">{text}</td>'

        rows = {"position": [], "piece": [], "word id": [], "label": [], "|grad| of row": []}
        for t in range(seq):
            kept, chosen = self.labels[t] != -100, t == pos
            label = TAGS[self.labels[t]] if kept else "-100"
            wid = "None" if self.word_ids[t] is None else str(self.word_ids[t])
            norm = float(self.grad[t].abs().sum())
            for key, text in zip(rows, (t, html.escape(self.pieces[t]), wid, label, f"{norm:.3f}")):
                rows[key].append(cell(text, kept, chosen))
        table = "".join(f"<tr><th style='text-align:left'>{k}</th>{''.join(v)}</tr>" for k, v in rows.items())
        grad_rows = "".join(
            f"<tr><td>{tag}{' &larr; y' if self.labels[pos] == k else ''}</td>"
            f"<td>{float(self.logits[0, pos, k]):+.2f}</td><td>{_signed_bar(g)} {g:+.4f}</td></tr>"
            for k, (tag, g) in enumerate(zip(TAGS, self.grad_row))
        )
        ignored = self.labels[pos] == -100
        why = " (label -100: ignored, gradient exactly 0)" if ignored else f" (= (softmax - onehot) / {self.kept})"
        loss = "nan (every label ignored: 0/0)" if self.kept == 0 else f"{self.loss:.4f}"
        c = len(TAGS)
        self.html.value = (
            '<div style="font-family:monospace">'
            f"<p>logits [1, {seq}, {c}] &rarr; view(-1, {c}) [{seq}, {c}]; labels [1, {seq}] &rarr; [{seq}]; "
            f"kept {self.kept} of {seq} (green); grey = -100</p>"
            f'<table style="border-collapse:collapse">{table}</table>'
            f'<p>loss = sum of kept cross-entropies / {self.kept} = <b class="lossbook-loss">{loss}</b></p>'
            f"<p>gradient row of token {pos} ({html.escape(self.pieces[pos])}){why}</p>"
            f"<table><tr><th>tag</th><th>logit</th><th>d loss / d logit</th></tr>{grad_rows}</table></div>"
        )
