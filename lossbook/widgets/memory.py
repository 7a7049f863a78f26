"""Chapter 11's explorer: pick batch, seq, vocab, hidden, dtype and chunk size; see predicted and measured peaks."""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..demos.memory import peak_memory, predicted_peak

__all__ = ["MemoryExplorer"]

_DTYPES = [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


class MemoryExplorer(W.VBox):
    """The loss alone (hidden states in, gradients of hidden states and weight out), naive and chunked.

    ``explorer.measured`` and ``explorer.predicted``: dicts ``{"naive": bytes, "chunked": bytes}``; measured
    by ``lossbook.memory.StorageTracker`` on the meta device (every tensor PyTorch allocates, counted without
    computing anything, so a Llama-sized vocabulary answers at once), predicted by
    ``lossbook.demos.memory.predicted_peak``.  ``chunk`` 0 means the default (the hidden size).
    """

    def __init__(self, batch=1, seq=2048, vocab=128256, hidden=256, dtype="float32", chunk=0):
        self.batch = W.IntSlider(value=batch, min=1, max=16, description="batch B")
        self.seq = W.Dropdown(options=[256, 512, 1024, 2048, 4096, 8192], value=seq, description="seq T")
        self.vocab = W.Dropdown(options=[32000, 50257, 128256, 151936, 256000], value=vocab, description="vocab V")
        self.hidden = W.Dropdown(options=[64, 256, 1024, 2048, 4096], value=hidden, description="hidden H")
        self.dtype = W.Dropdown(options=_DTYPES, value=dict(_DTYPES)[dtype], description="dtype")
        chunks = [("H (default)", 0)] + [(str(n), n) for n in (32, 128, 512, 2048, 8192)]
        self.chunk = W.Dropdown(options=chunks, value=chunk, description="chunk")
        self.html = W.HTML()
        controls = [self.batch, self.seq, self.vocab, self.hidden, self.dtype, self.chunk]
        for w in controls:
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox(controls), self.html])])

    def _args(self):
        return (self.batch.value, self.seq.value, self.vocab.value, self.hidden.value, self.dtype.value,
                self.chunk.value or None)

    def _update(self, change=None):
        args = self._args()
        self.measured = peak_memory(*args)
        self.predicted = predicted_peak(*args)
        b, t, v, h, dtype, c = args
        rows = "".join(
            f"<tr><td>{name}</td><td style='text-align:right'>{_mib(self.predicted[name])}</td>"
            f"<td style='text-align:right'>{_mib(self.measured[name])}</td></tr>" for name in ("naive", "chunked"))
        ratio = self.measured["chunked"] / self.measured["naive"]
        self.html.value = (
            f"<div style='font-family:monospace'>tokens = {b * t:,}, one float32 [tokens, vocab] = "
            f"{_mib(b * t * v * 4)}, chunk = {min(c or h, b * t)}<table><tr><th>path</th><th>predicted</th>"
            f"<th>measured</th></tr>{rows}</table>chunked / naive = {ratio:.3f}<br>"
            f"{html.escape(str(dtype))}</div>")
