"""Chapter 03's demo: a tiny character-level encoder learns to fill in masked characters of nursery rhymes.

The held-out set is made of whole rhymes the model never sees in training (every ``held_out_every``-th
rhyme), masked once with a fixed seed, so the reported accuracy is on unseen text and never changes
between evaluations.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..masked_lm import Masking, mask_tokens
from ..text import CharTokenizer, load_text, random_windows

__all__ = ["RhymeSplit", "split_rhymes", "mlm_batch", "EvalSet", "make_eval_set", "masked_accuracy",
           "majority_baseline", "fill_masks", "loss_cases", "masking_cases", "transformers_collator"]


class RhymeSplit(NamedTuple):
    tokenizer: CharTokenizer
    train_ids: torch.Tensor  # Long[Tensor, "chars"]
    held_out_ids: torch.Tensor  # Long[Tensor, "chars"]
    held_out_rhymes: list[str]


def split_rhymes(held_out_every: int = 6, offset: int = 3, name: str = "nursery_rhymes") -> RhymeSplit:
    """Split the shipped text into rhymes (blank-line separated); every ``held_out_every``-th one is held out.

    The tokenizer is built on the whole text, so both halves share one vocabulary.
    """
    text = load_text(name)
    rhymes = text.strip().split("\n\n")
    held = [r for i, r in enumerate(rhymes) if i % held_out_every == offset]
    kept = [r for i, r in enumerate(rhymes) if i % held_out_every != offset]
    tok = CharTokenizer(text)
    return RhymeSplit(tok, tok.encode("\n\n".join(kept)), tok.encode("\n\n".join(held)), held)


def mlm_batch(ids: torch.Tensor, tokenizer: CharTokenizer, batch_size: int, length: int,
              generator: torch.Generator, mlm_probability: float = 0.15):
    """``batch_size`` random windows of ``ids``, masked: ``(inputs, labels)``, each Long[Tensor, "batch length"]."""
    windows = random_windows(ids, batch_size, length, generator)  # [batch, length]
    return mask_tokens(windows, tokenizer.mask_id, tokenizer.vocab_size, mlm_probability,
                       special_ids=tokenizer.special_ids, generator=generator)


class EvalSet(NamedTuple):
    inputs: torch.Tensor  # Long[Tensor, "windows length"]
    labels: torch.Tensor  # Long[Tensor, "windows length"]
    masking: Masking


def make_eval_set(ids: torch.Tensor, tokenizer: CharTokenizer, length: int, repeats: int = 8, seed: int = 123,
                  mlm_probability: float = 0.15) -> EvalSet:
    """Cut ``ids`` into consecutive windows of ``length``, repeat them ``repeats`` times, mask them once (seeded).

    Repeats give every held-out character several chances to be selected, so the accuracy rests on
    about ``repeats * mlm_probability * len(ids)`` scored characters.
    """
    n = ids.numel() // length
    windows = ids[: n * length].view(n, length).repeat(repeats, 1)  # [repeats * n, length]
    generator = torch.Generator().manual_seed(seed)
    inputs, labels, masking = mask_tokens(windows, tokenizer.mask_id, tokenizer.vocab_size, mlm_probability,
                                          special_ids=tokenizer.special_ids, generator=generator,
                                          return_masking=True)
    return EvalSet(inputs, labels, masking)


@torch.no_grad()
def masked_accuracy(model, eval_set: EvalSet, where: str = "<mask>", batch_size: int = 256) -> float:
    """Share of the scored characters the model's argmax gets right.

    ``where="<mask>"``: only positions whose input is the mask token (the fill-in task, nothing visible);
    ``where="scored"``: every position with a label (the random and unchanged ones too).
    """
    keep = {"<mask>": eval_set.masking.replaced, "scored": eval_set.masking.selected}[where]  # [windows, length]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds = torch.cat([model(chunk.to(device)).argmax(-1).cpu()  # [chunk, length]
                       for chunk in eval_set.inputs.split(batch_size)])
    model.train(was_training)
    return float((preds[keep] == eval_set.labels[keep]).float().mean())


def majority_baseline(train_ids: torch.Tensor, eval_set: EvalSet, where: str = "<mask>") -> tuple[int, float]:
    """The most frequent training token and its accuracy on ``eval_set``: what a model that ignores context gets."""
    keep = {"<mask>": eval_set.masking.replaced, "scored": eval_set.masking.selected}[where]
    majority = int(torch.bincount(train_ids).argmax())
    return majority, float((eval_set.labels[keep] == majority).float().mean())


@torch.no_grad()
def fill_masks(model, tokenizer: CharTokenizer, text: str, positions, k: int = 3):
    """Replace the characters of ``text`` at ``positions`` by <mask>; the model's top-``k`` guesses for each.

    Returns ``(masked_text, rows)``, each row ``(position, true_char, [(char, probability), ...])``.
    """
    ids = tokenizer.encode(text)  # [seq]
    inputs = ids.clone()
    inputs[list(positions)] = tokenizer.mask_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs = model(inputs[None].to(device))[0].float().softmax(-1).cpu()  # [seq, vocab]
    model.train(was_training)
    rows = []
    for pos in positions:
        top = probs[pos].topk(k)
        rows.append((pos, text[pos], [(tokenizer.vocab[i], float(p)) for p, i in zip(top.values, top.indices)]))
    masked_text = "".join("_" if i in set(positions) else c for i, c in enumerate(text))
    return masked_text, rows


def loss_cases(seed: int = 0, dtype=torch.float32) -> list[dict]:
    """Inputs for ``masked_lm_loss``-shaped functions: ``logits`` [batch, seq, vocab], ``labels`` [batch, seq].

    15% of the labels kept (as after masking), batch 1, length 1, one row with no kept label, logits near +-100.
    """
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab in [(2, 7, 11), (1, 1, 5), (1, 16, 3), (4, 9, 29)]:
        logits = (3 * torch.randn(batch, seq, vocab, generator=g)).to(dtype)
        labels = torch.randint(0, vocab, (batch, seq), generator=g)
        labels[torch.rand(batch, seq, generator=g) > 0.15] = -100
        labels.view(-1)[0] = int(torch.randint(0, vocab, (1,), generator=g))  # at least one kept label
        if batch > 1:
            labels[-1] = -100  # a row with nothing to score
        cases.append({"logits": logits, "labels": labels})
    extreme = torch.tensor([[[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0]]], dtype=dtype)  # [1, 2, 3]
    cases.append({"logits": extreme, "labels": torch.tensor([[1, 0]])})
    return cases


def masking_cases(tokenizer: CharTokenizer, seed: int = 0, batch: int = 4, length: int = 48) -> list[dict]:
    """Cases for :func:`lossbook.masked_lm.mask_then_score`-shaped objectives: rhyme windows with padding.

    Each case: ``logits`` [batch, length, vocab] (seeded), ``input_ids`` (windows of the rhymes, rows
    padded with ``<pad>`` at the end by different amounts), a masking ``seed`` and the tokenizer's ids.
    """
    g = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(load_text("nursery_rhymes"))
    cases = []
    for case in range(3):
        input_ids = random_windows(ids, batch, length, g)  # [batch, length]
        for row in range(batch):
            input_ids[row, length - 4 * row:] = tokenizer.pad_id  # row r ends in 4r pads
        logits = 3 * torch.randn(batch, length, tokenizer.vocab_size, generator=g)  # [batch, length, vocab]
        cases.append({"logits": logits, "input_ids": input_ids, "seed": seed * 10 + case,
                      "mask_token_id": tokenizer.mask_id, "vocab_size": tokenizer.vocab_size,
                      "special_ids": tokenizer.special_ids})
    return cases


def transformers_collator(tokenizer: CharTokenizer, seed: int | None = None, **kwargs):
    """transformers' own ``DataCollatorForLanguageModeling`` over ``tokenizer``'s vocabulary (built in memory).

    A ``PreTrainedTokenizerFast`` with a word-level model whose vocabulary is ``tokenizer.vocab`` and whose
    pad and mask tokens are ``<pad>`` and ``<mask>``: the upstream reference for :func:`mask_tokens`, with
    no download.  ``kwargs`` go to the collator (``mlm_probability``, ``mask_replace_prob``, ...).
    Needs transformers and tokenizers (the ``upstream`` extra).
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(tokenizer.vocab)}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<pad>")),
                                   pad_token="<pad>", mask_token="<mask>")
    return DataCollatorForLanguageModeling(fast, seed=seed, **kwargs)
