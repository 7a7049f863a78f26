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
    "RhymeSplits",
    "load_rhyme_splits",
    "unigram_nll",
    "ngram_nll",
    "stream_windows",
    "strided_windows",
    "mean_nll",
    "sharded_losses",
    "copying_logits",
    "causal_lm_cases",
    "check_zigzag_targets",
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


@dataclass
class RhymeSplits:
    """The shipped rhymes in three disjoint sets of whole rhymes: train, validation (model selection) and test."""

    tokenizer: CharTokenizer
    train_ids: torch.Tensor  # Long[Tensor, "tokens"]
    val_ids: torch.Tensor  # Long[Tensor, "tokens"]
    test_ids: torch.Tensor  # Long[Tensor, "tokens"]
    val_titles: list[str]
    test_titles: list[str]


def load_rhyme_splits(every: int = 6, val_offset: int = 2, test_offset: int = 5) -> RhymeSplits:
    """Rhyme i goes to validation when ``i % every == val_offset``, to test when ``== test_offset``, else train.

    The test rhymes are those :func:`load_rhymes` holds out with ``heldout_every=every`` (default offsets);
    the validation rhymes come out of its training set, so choices (training steps, smoothing) are made on
    them and the test split is read once, at the end.
    """
    if not isinstance(every, int) or every < 3 or not (0 <= val_offset < every and 0 <= test_offset < every) \
            or val_offset == test_offset:
        raise ValueError(f"need every >= 3 and two different offsets in [0, every), got every={every!r}, "
                         f"val_offset={val_offset!r}, test_offset={test_offset!r}")
    text = load_text("nursery_rhymes")
    rhymes = text.strip().split("\n\n")
    tok = CharTokenizer(text)
    groups = {"train": [], "val": [], "test": []}
    for i, r in enumerate(rhymes):
        key = "val" if i % every == val_offset else "test" if i % every == test_offset else "train"
        groups[key].append(r)
    ids = {k: tok.encode("\n\n".join(v) + "\n\n") for k, v in groups.items()}
    return RhymeSplits(tok, ids["train"], ids["val"], ids["test"], [r.splitlines()[0] for r in groups["val"]],
                       [r.splitlines()[0] for r in groups["test"]])


def ngram_nll(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int, order: int = 2,
              add: float = 1.0) -> float:
    """Mean NLL (nats) of ``eval_ids`` under a count-based n-gram model of ``train_ids`` (add-``add`` smoothing).

    p(x_t | the previous order-1 tokens) = (count(context, x_t) + add) / (count(context) + add * vocab).
    It scores the targets a causal LM scores, x_1 ... x_{T-1} (x_0 has nothing before it); the first
    order-2 of them use the shorter contexts available.  The honest baseline for a character-level LM:
    a network that does not beat counting has learnt nothing a table could not hold.
    """
    for name, ids in (("train_ids", train_ids), ("eval_ids", eval_ids)):
        check_integer(name, ids, "token ids")
        check_rank(name, ids, (1,), "1-D [tokens]")
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    if not add > 0:
        raise ValueError(f"add must be > 0 (add-k smoothing; 0 gives log 0 for unseen n-grams), got {add!r}")
    from collections import Counter

    train, data = train_ids.tolist(), eval_ids.tolist()
    counts = [Counter() for _ in range(order)]  # counts[n][(context of length n) + (token,)]
    contexts = [Counter() for _ in range(order)]
    for n in range(order):
        for t in range(n, len(train)):
            gram = tuple(train[t - n : t + 1])
            counts[n][gram] += 1
            contexts[n][gram[:-1]] += 1
    total = 0.0
    if len(data) < 2:
        raise ValueError(f"eval_ids needs at least 2 tokens (one target), got shape {shape_str(eval_ids)}")
    for t in range(1, len(data)):
        n = min(order - 1, t)
        gram = tuple(data[t - n : t + 1])
        total -= math.log((counts[n][gram] + add) / (contexts[n][gram[:-1]] + add * vocab_size))
    return total / (len(data) - 1)


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


def strided_windows(ids: torch.Tensor, length: int, stride: int, pad_id: int = 0, ignore_index: int = -100):
    """Overlapping windows for *strided* perplexity: every next token scored once, with more context.

    Windows of ``length`` tokens start every ``stride`` tokens; each window scores only the targets the
    previous window did not (its last ``stride``; the first window scores all of its own), so every
    position but the first window's has at least ``length - stride`` tokens of context.  ``stride ==
    length`` is :func:`stream_windows`.  Returns ``(input_ids, shift_labels)``, Long[Tensor, "windows
    length"], for :func:`mean_nll` (the Hugging Face perplexity recipe, on shifted labels).
    """
    check_integer("ids", ids, "token ids")
    check_rank("ids", ids, (1,), "1-D [tokens]")
    if not (isinstance(stride, int) and isinstance(length, int) and 0 < stride <= length):
        raise ValueError(f"need 0 < stride <= length, got stride={stride!r}, length={length!r}")
    targets = next_token_labels(ids, ignore_index)  # [tokens]
    n = ids.numel()
    inputs, labels = [], []
    scored_until = 0
    for begin in range(0, n, stride):
        end = min(begin + length, n)
        x = ids[begin:end]
        y = targets[begin:end].clone()
        y[: scored_until - begin] = ignore_index  # scored by an earlier window
        pad = length - x.numel()
        inputs.append(torch.cat([x, x.new_full((pad,), pad_id)]))
        labels.append(torch.cat([y, y.new_full((pad,), ignore_index)]))
        scored_until = end
        if end == n:
            break
    return torch.stack(inputs), torch.stack(labels)


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


def sharded_losses(logits: torch.Tensor, labels: torch.Tensor, shards: int, *,
                   shift: str = "once", ignore_index: int = -100) -> list[torch.Tensor]:
    """Split the sequence dimension into ``shards`` pieces (context parallelism); score each.

    ``shift="once"``: shift the full labels first, hand each shard its piece as
    ``shift_labels`` (the transformers recipe); ``shift="local"``: let each shard shift
    its own labels, which loses the target of every shard's last position.  Both divide
    by one shared ``num_items_in_batch``, the kept targets of the full sequence, so the
    shard losses add up to a whole-sequence loss.
    """
    check_float("logits", logits)
    check_rank("logits", logits, (3,), "[batch, seq, vocab]")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {list(logits.shape[:-1])}, "
                         f"got {shape_str(labels)}")
    if shift not in ("once", "local"):
        raise ValueError(f"shift must be 'once' or 'local', got {shift!r}")
    full_targets = next_token_labels(labels, ignore_index)  # [batch, seq]
    total = (full_targets != ignore_index).sum()  # [] the shared denominator
    pieces = zip(logits.chunk(shards, dim=1), labels.chunk(shards, dim=1),
                 full_targets.chunk(shards, dim=1))
    out = []
    for z, y, t in pieces:  # z: [batch, seq/shards, vocab]
        if shift == "once":
            out.append(causal_lm_loss(z, None, shift_labels=t, num_items_in_batch=total,
                                      ignore_index=ignore_index))
        else:
            out.append(causal_lm_loss(z, y, num_items_in_batch=total,
                                      ignore_index=ignore_index))
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


# --- the exercises' checks: each prints a verdict only (PASS / FAIL / not attempted), never the answer -----------


def _zigzag(x: torch.Tensor, shards: int) -> list[torch.Tensor]:
    """Device k's part of ``x`` (dim 1 cut into 2 * shards chunks): chunks k and 2 * shards - 1 - k, in order."""
    chunks = x.chunk(2 * shards, dim=1)
    return [torch.cat([chunks[k], chunks[2 * shards - 1 - k]], dim=1) for k in range(shards)]


def check_zigzag_targets(fn, name: str = "exercise 2") -> None:
    """Exercise: ``fn(labels, shards)`` -> the ``shift_labels`` piece of every device under zigzag context
    parallelism (device k holds chunks k and 2 * shards - 1 - k of the sequence cut into 2 * shards chunks).

    Each device's logits are cut the same way, scored with its piece and one shared ``num_items_in_batch``
    (the kept targets of all the pieces, as an all-reduce would count them); the sum over devices must equal
    ``causal_lm_loss`` of the whole sequence, in float64, on random logits (padding of several lengths, a row
    that is all padding, ignored labels inside a row) for 2, 3 and 4 devices.
    """
    from ..checks import print_verdict

    if fn is Ellipsis:
        return print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
    g = torch.Generator().manual_seed(11)
    settings = 0
    for batch, seq, vocab in [(3, 12, 7), (2, 24, 11), (1, 8, 5)]:
        logits = 2 * torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64)  # [batch, seq, vocab]
        labels = torch.randint(1, vocab, (batch, seq), generator=g)  # [batch, seq]
        for row in range(1, batch):
            labels[row, seq - 3 * row:] = -100  # right padding of several lengths
        if batch > 1:
            labels[-1] = -100  # a row with nothing to score
        labels[0, seq // 2 + 1] = -100  # an ignored label inside a row
        full = causal_lm_loss(logits, labels)  # []
        for shards in (2, 3, 4):
            if seq % (2 * shards):
                continue
            settings += 1
            try:
                pieces = [torch.as_tensor(p) for p in fn(labels.clone(), shards)]
            except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
                return print_verdict(f"FAIL  {name}: your function raised {type(err).__name__}: {err}", False)
            want = [batch, seq // shards]
            if len(pieces) != shards or any(list(p.shape) != want for p in pieces):
                return print_verdict(f"FAIL  {name}: expected {shards} pieces of shape {want} for {shards} "
                                     f"devices, got {[list(p.shape) for p in pieces]}", False)
            total = max(sum(int((p != -100).sum()) for p in pieces), 1)  # the shared count
            try:
                parts = [causal_lm_loss(z, None, shift_labels=p.long(), num_items_in_batch=total)
                         for z, p in zip(_zigzag(logits, shards), pieces)]
            except Exception as err:  # e.g. a label outside the vocabulary
                return print_verdict(f"FAIL  {name}: scoring your pieces raised {type(err).__name__}: {err}",
                                     False)
            if not abs(float(sum(parts)) - float(full)) <= 1e-9:
                return print_verdict(f"FAIL  {name}: the devices' losses do not add up to the full sequence's "
                                     f"loss ({shards} devices, [batch, seq] = {[batch, seq]})", False)
    print_verdict(f"PASS  {name}: the devices' losses add up to the full sequence's loss "
                  f"(tolerance 1e-09, {settings} settings)", True)



def nll_by_context(model, ids: torch.Tensor, length: int, bucket: int = 16) -> list[float]:
    """Mean next-token NLL (nats) of ``model`` by how much context a target has: windows of ``length`` tokens
    start at *every* offset of ``ids``, so each target is scored at each position of a window, and the targets
    with ``[0, bucket)`` tokens of context, ``[bucket, 2 bucket)``, ... are averaged separately.  The same
    targets in every bucket: only the context differs."""
    check_integer("ids", ids, "token ids")
    check_rank("ids", ids, (1,), "1-D [tokens]")
    if not (isinstance(length, int) and 1 < length < ids.numel()):
        raise ValueError(f"need 1 < length < {ids.numel()} (the tokens in ids), got length={length!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    windows = ids.unfold(0, length + 1, 1)  # [starts, length + 1]: inputs and the next token
    total = torch.zeros(length, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, windows.shape[0], 256):
            w = windows[start : start + 256].to(device)
            logits = model(w[:, :-1]).float()  # [batch, length, vocab]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none")
            total += nll.double().sum(0).cpu()
    model.train(was_training)
    per_position = total / windows.shape[0]  # [length]
    return [float(per_position[a : a + bucket].mean()) for a in range(0, length, bucket)]
