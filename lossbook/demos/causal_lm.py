"""Demo material of chapter 02 (causal LM): the rhyme data, held-out scoring, sharding and test cases.

The model is ``lossbook.models.TinyTransformer(causal=True)``; the text is ``lossbook.text.load_text()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_float, check_integer, check_rank, shape_str
from ..causal_lm import causal_lm_loss, next_token_labels
from ..text import CharTokenizer, load_text

__all__ = [
    "RhymeData",
    "load_rhymes",
    "unigram_nll",
    "stream_windows",
    "mean_nll",
    "sharded_losses",
    "copying_logits",
    "causal_lm_cases",
]


@dataclass
class RhymeData:
    """The shipped rhymes split into whole rhymes: every ``heldout_every``-th rhyme is held out."""

    tokenizer: CharTokenizer
    train_text: str
    heldout_text: str
    heldout_titles: list[str]
    train_ids: torch.Tensor  # Long[Tensor, "tokens"]
    heldout_ids: torch.Tensor  # Long[Tensor, "tokens"]


def load_rhymes(heldout_every: int = 6) -> RhymeData:
    """Split ``load_text("nursery_rhymes")`` at blank lines; rhymes number k*heldout_every - 1 are held out.

    Whole rhymes are held out, so a held-out score measures how well the model predicts text it never saw,
    not lines it memorised.  The vocabulary is built from the whole text (``<pad>``, ``<mask>``, then the
    characters), so every held-out character has an id.
    """
    if not isinstance(heldout_every, int) or heldout_every < 2:
        raise ValueError(f"heldout_every must be an int >= 2, got {heldout_every!r}")
    text = load_text("nursery_rhymes")
    rhymes = text.strip().split("\n\n")
    held = [r for i, r in enumerate(rhymes) if i % heldout_every == heldout_every - 1]
    kept = [r for i, r in enumerate(rhymes) if i % heldout_every != heldout_every - 1]
    tok = CharTokenizer(text)
    train_text, heldout_text = "\n\n".join(kept) + "\n\n", "\n\n".join(held) + "\n\n"
    return RhymeData(tok, train_text, heldout_text, [r.splitlines()[0] for r in held],
                     tok.encode(train_text), tok.encode(heldout_text))


def unigram_nll(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int) -> float:
    """Mean NLL (nats) of ``eval_ids`` under the character frequencies of ``train_ids`` (add-one smoothing).

    The baseline a model must beat to show it uses context: exp of it is the unigram perplexity.
    """
    for name, ids in (("train_ids", train_ids), ("eval_ids", eval_ids)):
        check_integer(name, ids, "token ids")
        check_rank(name, ids, (1,), "1-D [tokens]")
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1  # [vocab]
    log_p = (counts / counts.sum()).log()  # [vocab]
    return float(-log_p[eval_ids].mean())


def stream_windows(ids: torch.Tensor, length: int, pad_id: int = 0, ignore_index: int = -100):
    """Cut a token stream into windows that score **every** next token exactly once.

    Returns ``(input_ids, shift_labels)``, both Long[Tensor, "windows length"].  The stream is shifted
    once, before it is cut (``next_token_labels``), so the last position of each window is scored against
    the first token of the next window; cutting first and letting the loss shift each window would lose
    those targets.  The last window is padded (``pad_id`` inputs, ``ignore_index`` targets).
    """
    check_integer("ids", ids, "token ids")
    check_rank("ids", ids, (1,), "1-D [tokens]")
    targets = next_token_labels(ids, ignore_index)  # [tokens]
    windows = math.ceil(ids.numel() / length)
    pad = windows * length - ids.numel()
    inputs = torch.cat([ids, ids.new_full((pad,), pad_id)]).view(windows, length)  # [windows, length]
    labels = torch.cat([targets, targets.new_full((pad,), ignore_index)]).view(windows, length)  # [windows, length]
    return inputs, labels


@torch.no_grad()
def mean_nll(model, input_ids: torch.Tensor, shift_labels: torch.Tensor, batch_size: int = 64,
             ignore_index: int = -100) -> float:
    """Mean next-token NLL (nats) of ``model`` over every kept target: one shared denominator for all batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = int((shift_labels != ignore_index).sum())
    loss = 0.0
    for start in range(0, input_ids.shape[0], batch_size):
        x = input_ids[start : start + batch_size].to(device)  # [batch, length]
        y = shift_labels[start : start + batch_size].to(device)  # [batch, length]
        batch_loss = causal_lm_loss(model(x), None, shift_labels=y, num_items_in_batch=total, ignore_index=ignore_index)
        loss += float(batch_loss)
    model.train(was_training)
    return loss


def sharded_losses(logits: torch.Tensor, labels: torch.Tensor, shards: int, *, shift: str = "once",
                   ignore_index: int = -100) -> list[torch.Tensor]:
    """Split the sequence dimension into ``shards`` pieces (context parallelism) and score each piece.

    ``shift="once"``: shift the full labels first, hand each shard its piece as ``shift_labels`` (the
    transformers recipe); ``shift="local"``: let each shard shift its own labels, which loses the target of
    every shard's last position.  Both divide by one shared ``num_items_in_batch``, the kept targets of
    the full sequence, so the shard losses add up to a whole-sequence loss.
    """
    check_float("logits", logits)
    check_rank("logits", logits, (3,), "[batch, seq, vocab]")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {list(logits.shape[:-1])}, got {shape_str(labels)}")
    if shift not in ("once", "local"):
        raise ValueError(f"shift must be 'once' or 'local', got {shift!r}")
    full_targets = next_token_labels(labels, ignore_index)  # [batch, seq]
    total = (full_targets != ignore_index).sum()  # [] the shared denominator
    pieces = zip(logits.chunk(shards, dim=1), labels.chunk(shards, dim=1), full_targets.chunk(shards, dim=1))
    out = []
    for z, y, t in pieces:  # z: [batch, seq/shards, vocab]
        if shift == "once":
            out.append(causal_lm_loss(z, None, shift_labels=t, num_items_in_batch=total, ignore_index=ignore_index))
        else:
            out.append(causal_lm_loss(z, y, num_items_in_batch=total, ignore_index=ignore_index))
    return out


def copying_logits(input_ids: torch.Tensor, vocab_size: int, confidence: float = 20.0) -> torch.Tensor:
    """Logits of a "model" that predicts the token it is looking at: ``confidence`` on the current token.

    Float[Tensor, "batch seq vocab"].  It knows nothing about the future, so a correct causal LM loss
    stays high; a loss that forgets to shift scores it close to 0.
    """
    check_integer("input_ids", input_ids, "token ids")
    return confidence * torch.nn.functional.one_hot(input_ids, vocab_size).float()  # [batch, seq, vocab]


def causal_lm_cases(seed: int = 0, *, dtype: torch.dtype = torch.float32) -> list[dict]:
    """Inputs for ``causal_lm_loss``-shaped functions: ``(logits, labels, ignore_index)``.

    Right padding of different lengths per row (labels ``-100``), batch 1, a short sequence, a row that is
    all padding, and logits near +-30; the pad id is 0, so real tokens are drawn from [1, vocab).
    """
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab, scale in [(3, 8, 7, 3.0), (1, 5, 11, 3.0), (2, 2, 5, 3.0), (4, 12, 13, 30.0)]:
        logits = (scale * torch.randn(batch, seq, vocab, generator=g)).to(dtype)  # [batch, seq, vocab]
        labels = torch.randint(1, vocab, (batch, seq), generator=g)  # [batch, seq]
        for row in range(batch):
            pad = (row * 2) % (seq + 1)  # row 0 unpadded; later rows padded on the right
            if pad:
                labels[row, seq - pad :] = -100
        cases.append({"logits": logits, "labels": labels, "ignore_index": -100})
    return cases
