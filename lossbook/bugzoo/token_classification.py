"""Chapter 05's bug zoo: plausible, wrong token-classification losses.

Each takes what ``token_classification_loss`` takes, plus the batch's
``word_ids`` (``-1`` for special tokens and padding) and ``attention_mask``,
which a model's forward has at hand and the correct loss ignores, so
``checks.compare_losses`` can run them on the same cases
(``token_classification_cases``).  Never use them.

``label_all_tokens_loss`` is not a bug: it is the documented alternative
(every piece labelled, ``B-`` turned into ``I-`` on continuation pieces, as
``run_ner.py``'s ``label_all_tokens``), the reference that
``copies_b_onto_continuations`` fails against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "label_all_tokens_loss",
    "copies_b_onto_continuations",
    "labels_every_subword",
    "scores_padding_as_tag_0",
    "shifted_like_causal_lm",
    "per_sentence_mean_of_means",
    "token_classification_cases",
]


def _relabel_continuations(labels, word_ids, b_to_i):
    """First-piece labels -> every piece labelled: a continuation gets ``b_to_i[first piece's label]``."""
    labels = labels.clone()
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if word_ids[b, t] >= 0 and word_ids[b, t] == word_ids[b, t - 1]:
                tag = int(labels[b, t - 1])
                labels[b, t] = tag if b_to_i is None else b_to_i[tag]
    return labels


def label_all_tokens_loss(logits, labels, num_labels, word_ids=None, ignore_index=-100, **kwargs):
    """NOT a bug: the documented option, every piece labelled with ``B-X`` turned into ``I-X`` on continuations.

    Takes first-piece ``labels`` and the batch's ``word_ids`` and scores every piece, as
    ``encode_batch(..., label_all_tokens=True)`` labels them; the reference for the bug below.
    """
    from ..demos.token_classification import B_TO_I

    every = _relabel_continuations(labels, word_ids, B_TO_I)
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), every.reshape(-1), ignore_index=ignore_index)


def copies_b_onto_continuations(logits, labels, num_labels, word_ids=None, ignore_index=-100,
                                **kwargs):
    """BUG: every piece labelled with its word's tag verbatim, ``B-`` included.

    "Srinivasa" becomes ``B-PER B-PER B-PER``, which BIO decoding over the pieces reads as three
    people; and a word of k pieces still counts k times.  Fails against ``label_all_tokens_loss``.
    """
    every = _relabel_continuations(labels, word_ids, None)
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), every.reshape(-1),
                           ignore_index=ignore_index)


# The first edition's name for the same function (kept for code that imports it).
labels_every_subword = copies_b_onto_continuations


def scores_padding_as_tag_0(logits, labels, num_labels, attention_mask=None, ignore_index=-100, **kwargs):
    """BUG: labels padded with 0 (tag "O") instead of -100, so every pad token is trained to say "O"."""
    labels = torch.where(attention_mask == 0, torch.zeros_like(labels), labels)  # pad label -> 0
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), labels.reshape(-1), ignore_index=ignore_index)


def shifted_like_causal_lm(logits, labels, num_labels, ignore_index=-100, **kwargs):
    """BUG: the causal-LM shift applied to tags; token t is scored against the tag of t + 1."""
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]  # [batch, seq]
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), shifted.reshape(-1),
                           ignore_index=ignore_index)


def per_sentence_mean_of_means(logits, labels, num_labels, ignore_index=-100, **kwargs):
    """BUG: each sentence averaged over its own tagged tokens, then the sentences averaged."""
    means = []
    for row_logits, row_labels in zip(logits, labels):  # [seq, classes], [seq]
        if (row_labels != ignore_index).any():
            means.append(F.cross_entropy(row_logits.float(), row_labels, ignore_index=ignore_index))
    return torch.stack(means).mean()


def token_classification_cases(seed: int = 0, *, dtype=torch.float32) -> list[dict]:
    """Tagged sentences of different lengths, tokenized, aligned and padded, with random logits.

    Each case: ``logits`` [batch, seq, tags], ``labels``, ``word_ids`` and
    ``attention_mask`` [batch, seq], ``num_labels``.
    """
    from ..demos.token_classification import TAGS, SubwordTokenizer, all_words, encode_batch, make_tagged_sentences

    tokenizer = SubwordTokenizer(all_words())
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, start in [(4, 0), (2, 7), (3, 13)]:
        sentences = make_tagged_sentences(batch, seed=1000 * seed + start)
        enc = encode_batch(sentences, tokenizer)
        logits = (2 * torch.randn(*enc["labels"].shape, len(TAGS), generator=g)).to(dtype)
        cases.append(
            {
                "logits": logits,
                "labels": enc["labels"],
                "num_labels": len(TAGS),
                "word_ids": enc["word_ids"],
                "attention_mask": enc["attention_mask"],
            }
        )
    return cases
