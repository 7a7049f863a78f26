"""Chapter 11's bug zoo: chunked losses that look right and are not (never use them).

Each has ``chunked_cross_entropy``'s signature (bias, chunk_size, ignore_index, num_items_in_batch, shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..causal_lm import next_token_labels

__all__ = ["mean_per_chunk", "shift_per_chunk", "upcasts_whole_logits"]


def _flat(hidden, labels):
    return hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)


def _logits(h, weight, bias):
    z = h @ weight.T
    return z if bias is None else z + bias


def mean_per_chunk(hidden, weight, labels, bias=None, *, chunk_size=None, ignore_index=-100,
                   num_items_in_batch=None, shift=False):
    """BUG: every chunk is divided by its own count of targets, then the chunk means are averaged.

    Right only when every chunk has the same number of kept targets; padding makes them differ."""
    if shift:
        labels = next_token_labels(labels, ignore_index)
    h, y = _flat(hidden, labels)
    chunk_size = chunk_size or hidden.shape[-1]
    means = []
    for s in range(0, h.shape[0], chunk_size):
        yc = y[s:s + chunk_size]
        if (yc != ignore_index).any():
            z = _logits(h[s:s + chunk_size], weight, bias).float()
            means.append(F.cross_entropy(z, yc, ignore_index=ignore_index))
    return torch.stack(means).mean()


def shift_per_chunk(hidden, weight, labels, bias=None, *, chunk_size=None, ignore_index=-100,
                    num_items_in_batch=None, shift=False):
    """BUG: the tokens are cut into chunks first and each chunk's labels are shifted inside the
    chunk, so the last position of every chunk loses its target (the next chunk's first token)."""
    h, y = _flat(hidden, labels)
    chunk_size = chunk_size or hidden.shape[-1]
    total, count = 0.0, 0
    for s in range(0, h.shape[0], chunk_size):
        yc = y[s:s + chunk_size]
        if shift:
            yc = next_token_labels(yc, ignore_index)  # in the chunk: the boundary target is lost
        z = _logits(h[s:s + chunk_size], weight, bias).float()
        total = total + F.cross_entropy(z, yc, ignore_index=ignore_index, reduction="sum")
        count += int((yc != ignore_index).sum())
    return total / (num_items_in_batch if num_items_in_batch is not None else count)


def upcasts_whole_logits(hidden, weight, labels, bias=None, *, chunk_size=None, ignore_index=-100,
                         num_items_in_batch=None, shift=False):
    """BUG (of memory, not of value): the loop is chunked, but the full logits are computed and upcast to
    float32 first "for precision", so the [tokens, vocab] tensor the chunking was meant to avoid exists."""
    if shift:
        labels = next_token_labels(labels, ignore_index)
    h, y = _flat(hidden, labels)
    logits = _logits(h, weight, bias).float()  # [tokens, vocab] float32: the whole point lost
    chunk_size = chunk_size or hidden.shape[-1]
    total = sum(F.cross_entropy(logits[s:s + chunk_size], y[s:s + chunk_size], ignore_index=ignore_index,
                                reduction="sum") for s in range(0, h.shape[0], chunk_size))
    count = (y != ignore_index).sum()
    return total / (num_items_in_batch if num_items_in_batch is not None else count)
