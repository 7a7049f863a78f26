"""Wrong answers to chapter 11's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

_LOSS = """
import torch.nn.functional as F

from lossbook.causal_lm import next_token_labels


def my_chunked_loss(hidden, weight, labels, bias=None, chunk_size=None, shift=False):  # noqa: F811
    if shift:
        labels = next_token_labels(labels)
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
{body}
"""

_PEAK = """
def my_chunked_peak(batch, seq, vocab, hidden, dtype=torch.float32, chunk_size=None):
    n, b = batch * seq, torch.finfo(dtype).bits // 8
    c = {chunk}
    half = dtype in (torch.float16, torch.bfloat16)
    return (vocab * hidden + c * vocab) * ({copies}) + {rest}
"""


def _peak(chunk="min(chunk_size or hidden, n)", copies="4 + b if half else b", rest="n * hidden * b + 16 * n"):
    return _PEAK.format(chunk=chunk, copies=copies, rest=rest)


MUTANTS = {
    "ex1": [
        ("four bytes whatever the dtype", "def my_logits_gib(batch, seq, vocab, dtype):\n"
                                          "    return batch * seq * vocab * 4 / 2**30"),
        ("GB (1e9 bytes), not GiB", "def my_logits_gib(batch, seq, vocab, dtype):\n"
                                    "    return batch * seq * vocab * (torch.finfo(dtype).bits // 8) / 1e9"),
        ("bits, not bytes", "def my_logits_gib(batch, seq, vocab, dtype):\n"
                            "    return batch * seq * vocab * torch.finfo(dtype).bits / 2**30"),
    ],
    "ex2": [
        ("no chunking at all: right values, three [tokens, vocab] tensors", _LOSS.format(body="""
    z = h @ weight.T + bias
    return F.cross_entropy(z, y, ignore_index=-100)""")),
        ("the mean of the chunks' means", _LOSS.format(body="""
    means = [F.cross_entropy(h[s:s + chunk_size] @ weight.T + bias, y[s:s + chunk_size], ignore_index=-100)
             for s in range(0, h.shape[0], chunk_size)]
    return sum(means) / len(means)""")),
        ("the reference itself", "my_chunked_loss = chunked_cross_entropy"),
        ("the bias left out", _LOSS.format(body="""
    total = 0.0
    for s in range(0, h.shape[0], chunk_size):
        total = total + F.cross_entropy(h[s:s + chunk_size] @ weight.T, y[s:s + chunk_size], ignore_index=-100,
                                        reduction="sum")
    return total / (y != -100).sum()""")),
    ],
    "ex3": [
        ("the chapter's own arithmetic called", "def my_chunked_peak(*args):\n"
                                                "    return demo.predicted_peak(*args)['chunked']"),
        ("the 16 bytes per token forgotten", _peak(rest="n * hidden * b")),
        ("the hidden states' gradient forgotten", _peak(rest="16 * n")),
        ("a chunk larger than the batch", _peak(chunk="chunk_size or hidden")),
        ("no half-precision copies", _peak(copies="b")),
    ],
}
