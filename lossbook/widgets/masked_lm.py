"""Chapter 03's explorer: BERT masking of a sentence, the labels it produces, and the loss they select."""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..masked_lm import mask_tokens, masked_lm_loss
from ..text import CharTokenizer, load_text

__all__ = ["MaskingExplorer"]

# colours of a position's fate
_FATE_COLOURS = {"<mask>": "#ffbf80", "random": "#f4a6a6", "unchanged": "#a6c8f4", "": "#ffffff", "special": "#ddd"}


def _char(s: str) -> str:
    return {" ": "&#9251;", "\n": "&#8629;"}.get(s, html.escape(s))


class MaskingExplorer(W.VBox):
    """A sentence through ``mask_tokens`` and ``masked_lm_loss``: sliders for ``mlm_probability`` and the seed.

    The sentence is encoded with the character tokenizer of the shipped rhymes, followed by ``padding``
    ``<pad>`` tokens (special: never selected).  The logits are fixed (seeded ``3 * randn``, shape
    ``[1, seq, vocab]``) so that only the masking moves the loss.  After every slider move,
    ``explorer.inputs``, ``explorer.labels`` and ``explorer.masking`` hold what :func:`mask_tokens` returned,
    ``explorer.loss`` the value of :func:`masked_lm_loss` and ``explorer.grad`` its gradient wrt the logits
    (``[seq, vocab]``, zero outside the selected positions).  The table's label row shows each label as the
    character it stands for (its id in the cell's tooltip), or -100 where nothing is scored.
    """

    def __init__(self, text: str = "Humpty Dumpty sat on a wall,", mlm_probability: float = 0.15, seed: int = 0,
                 padding: int = 3, logits_seed: int = 0):
        self.tokenizer = CharTokenizer(load_text("nursery_rhymes"))
        tok = self.tokenizer
        ids = torch.cat([tok.encode(text), torch.full((padding,), tok.pad_id)])  # [seq]
        self.ids = ids[None]  # [1, seq]
        g = torch.Generator().manual_seed(logits_seed)
        self.logits = 3 * torch.randn(1, ids.numel(), tok.vocab_size, generator=g)  # [1, seq, vocab]
        self.probability = W.FloatSlider(value=mlm_probability, min=0.0, max=1.0, step=0.05,
                                         description="mlm_prob", readout_format=".2f")
        self.seed = W.IntSlider(value=seed, min=0, max=99, description="seed")
        self.html = W.HTML()
        for w in (self.probability, self.seed):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([self.probability, self.seed]), self.html])

    def compute(self):
        tok = self.tokenizer
        generator = torch.Generator().manual_seed(self.seed.value)
        inputs, labels, masking = mask_tokens(self.ids, tok.mask_id, tok.vocab_size, self.probability.value,
                                              special_ids=tok.special_ids, generator=generator, return_masking=True)
        logits = self.logits.clone().requires_grad_(True)  # [1, seq, vocab]
        loss = masked_lm_loss(logits, labels)  # []
        loss.backward()
        return inputs, labels, masking, float(loss.detach()), logits.grad[0]  # grad: [seq, vocab]

    def _fates(self) -> list[str]:
        m = self.masking
        special = torch.isin(self.ids[0], torch.tensor(self.tokenizer.special_ids))
        fates = []
        for t in range(self.ids.shape[1]):
            if special[t]:
                fates.append("special")
            elif m.replaced[0, t]:
                fates.append("<mask>")
            elif m.randomized[0, t]:
                fates.append("random")
            elif m.selected[0, t]:
                fates.append("unchanged")
            else:
                fates.append("")
        return fates

    def _update(self, change=None):
        self.inputs, self.labels, self.masking, self.loss, self.grad = self.compute()
        tok, fates = self.tokenizer, self._fates()
        self.grad_norms = self.grad.norm(dim=-1).tolist()  # [seq]
        seq, vocab = self.ids.shape[1], tok.vocab_size
        n_ordinary = sum(f != "special" for f in fates)
        kept = int(self.masking.selected.sum())
        counts = {k: fates.count(k) for k in ("<mask>", "random", "unchanged")}

        def cell(content, colour="#fff", title=""):
            return (f'<td title="{html.escape(title)}" style="min-width:22px;text-align:center;border:1px solid #ccc;'
                    f'background:{colour}">{content}</td>')

        def show(i: int) -> str:
            return html.escape(tok.vocab[i]) if i in tok.special_ids else _char(tok.vocab[i])

        original = "".join(cell(show(i)) for i in self.ids[0].tolist())
        selected = "".join(cell("&#10003;" if s else "") for s in self.masking.selected[0].tolist())
        inputs = "".join(cell(show(i), _FATE_COLOURS[f], f) for i, f in zip(self.inputs[0].tolist(), fates))
        labels = "".join(cell(show(y), title=f"label id {y}") if y != -100
                         else cell('<span style="color:#aaa">-100</span>') for y in self.labels[0].tolist())
        grads = "".join(cell(f"{g:.2f}" if g else '<span style="color:#aaa">0</span>') for g in self.grad_norms)
        legend = " ".join(f'<span style="background:{_FATE_COLOURS[k]};padding:0 4px">{html.escape(k)}</span>'
                          for k in ("<mask>", "random", "unchanged", "special"))
        steps = [
            ("logits", [1, seq, vocab]), ("labels (from mask_tokens)", [1, seq]),
            ("logits.view(-1, vocab)", [seq, vocab]), ("labels.view(-1)", [seq]),
            ("mask = labels != -100", [seq]), ("log_softmax(logits)[mask].gather(labels)", [kept]),
            ("-sum / kept", []),
        ]
        shape_rows = "".join(f"<tr><td>{html.escape(op)}</td><td>{shape}</td></tr>" for op, shape in steps)
        loss = "nan (no position selected: 0/0)" if kept == 0 else f"{self.loss:.4f}"
        mono = 'style="font-family:monospace;border-collapse:collapse"'
        self.html.value = (
            f"<table {mono}>"
            f"<tr><th>original</th>{original}</tr><tr><th>selected</th>{selected}</tr>"
            f"<tr><th>input</th>{inputs}</tr><tr><th>label</th>{labels}</tr>"
            f"<tr><th>|dL/dz_t|</th>{grads}</tr></table>"
            f'<p style="font-family:monospace">{legend} &middot; label: the original character, scored '
            f"(its token id on hover), or -100, not scored<br>"
            f"selected {kept} of {n_ordinary} ordinary tokens (expected p&middot;N = "
            f"{self.probability.value * n_ordinary:.2f}): {counts['<mask>']} &rarr; &lt;mask&gt;, "
            f"{counts['random']} &rarr; random, {counts['unchanged']} unchanged</p>"
            f'<table style="font-family:monospace"><tr><th>step</th><th>shape</th></tr>{shape_rows}</table>'
            f'<p style="font-family:monospace">masked_lm_loss = <b class="lossbook-loss">{loss}</b></p>'
        )
