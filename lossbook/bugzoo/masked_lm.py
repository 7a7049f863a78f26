"""Chapter 03's bug zoo: plausible, wrong masked-LM objectives, each failing the check that lossbook passes.

Every exhibit has the signature of :func:`lossbook.masked_lm.mask_then_score` (mask ``input_ids`` with a
generator seeded by ``seed``, score ``logits``) and draws the same random numbers, so the check
``compare_losses(exhibit, mask_then_score, cases)`` isolates the one mistake.  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masked_lm import mask_tokens, masked_lm_loss

__all__ = ["scores_every_position", "scores_only_mask_positions", "shifts_labels", "masks_special_tokens"]


def _mask(input_ids, seed, mask_token_id, vocab_size, special_ids, mlm_probability):
    generator = torch.Generator().manual_seed(int(seed))
    return mask_tokens(input_ids, mask_token_id, vocab_size, mlm_probability, special_ids, generator)


def scores_every_position(logits, input_ids, seed, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15):
    """BUG: labels = input_ids everywhere (never set to -100 outside the selection).

    85% of the scored positions show their answer in the input: the cheapest way down is to copy it.
    """
    _inputs, _labels = _mask(input_ids, seed, mask_token_id, vocab_size, special_ids, mlm_probability)
    return masked_lm_loss(logits, input_ids.clone())  # every position scored, padding too


def scores_only_mask_positions(logits, input_ids, seed, mask_token_id, vocab_size, special_ids=(),
                               mlm_probability=0.15):
    """BUG: labels recovered as "wherever the input is <mask>": the random and unchanged 20%
    are not scored."""
    inputs, _labels = _mask(input_ids, seed, mask_token_id, vocab_size, special_ids,
                            mlm_probability)
    labels = torch.where(inputs == mask_token_id, input_ids,
                         torch.full_like(input_ids, -100))  # [batch, seq]
    return masked_lm_loss(logits, labels)


def shifts_labels(logits, input_ids, seed, mask_token_id, vocab_size, special_ids=(),
                  mlm_probability=0.15):
    """BUG: the labels shifted one step left, as a causal LM's loss does: position t is scored
    on token t + 1."""
    _inputs, labels = _mask(input_ids, seed, mask_token_id, vocab_size, special_ids,
                            mlm_probability)
    shifted = F.pad(labels, (0, 1), value=-100)[..., 1:]  # [batch, seq]
    return masked_lm_loss(logits, shifted)


def masks_special_tokens(logits, input_ids, seed, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15):
    """BUG: special_ids forgotten: <pad> positions are selected, masked and scored like text."""
    _inputs, labels = _mask(input_ids, seed, mask_token_id, vocab_size, (), mlm_probability)
    return masked_lm_loss(logits, labels)
