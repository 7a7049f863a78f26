"""Chapter 05's bug zoo: plausible, wrong token-classification losses.

Each takes what ``token_classification_loss`` takes, plus the batch's
``word_ids`` (``-1`` for special tokens and padding) and ``attention_mask``,
which a model's forward has at hand and the correct loss ignores, so
``checks.compare_losses`` can run them on the same cases
(``token_classification_cases``).  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "labels_every_subword",
    "scores_padding_as_tag_0",
    "shifted_like_causal_lm",
    "per_sentence_mean_of_means",
    "token_classification_cases",
]


def labels_every_subword(logits, labels, num_labels, word_ids=None, ignore_index=-100, **kwargs):
    """BUG: continuation pieces get their word's label, so a word of k pieces counts k times."""
    labels = labels.clone()
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            same_word = word_ids[b, t] >= 0 and word_ids[b, t] == word_ids[b, t - 1]
            if same_word:
                labels[b, t] = labels[b, t - 1]  # copy the first piece's tag forward
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), labels.reshape(-1), ignore_index=ignore_index)


def scores_padding_as_tag_0(logits, labels, num_labels, attention_mask=None, ignore_index=-100, **kwargs):
    """BUG: labels padded with 0 (tag "O") instead of -100, so every pad token is trained to say "O"."""
    labels = torch.where(attention_mask == 0, torch.zeros_like(labels), labels)  # pad label -> 0
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), labels.reshape(-1), ignore_index=ignore_index)


def shifted_like_causal_lm(logits, labels, num_labels, ignore_index=-100, **kwargs):
    """BUG: the causal-LM shift applied to tags; token t is scored against the tag of token t + 1."""
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]  # [batch, seq]
    return F.cross_entropy(logits.reshape(-1, num_labels).float(), shifted.reshape(-1), ignore_index=ignore_index)


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
