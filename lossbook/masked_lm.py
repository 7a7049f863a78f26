"""The masked language-model loss and the 80/10/10 masking that produces its labels.

Chapter: notebooks/03_masked_lm.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.ForMaskedLMLoss`` (the loss) and
``transformers.DataCollatorForLanguageModeling.torch_mask_tokens`` (the masking).
Devlin et al. 2019, "BERT", section 3.1, Task #1: Masked LM.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from ._checks import (
    check_float,
    check_integer,
    check_position_labels,
    check_vocab_size,
    named_label_errors,
    shape_str,
)
from .cross_entropy import per_position_cross_entropy

__all__ = ["masked_lm_loss", "Masking", "sample_masking", "mask_tokens", "mask_then_score"]


def masked_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    **kwargs,
) -> torch.Tensor:
    """Cross-entropy of a masked LM: every position whose label is not ``ignore_index``, no shift.

    ``logits``: Float[Tensor, "batch seq vocab"] (any leading dims).
    ``labels``: Long[Tensor, "batch seq"], the original token id where the masking selected a
    position, ``ignore_index`` elsewhere (what :func:`mask_tokens` returns).  The model sees the
    whole corrupted sequence, so nothing is shifted.

    loss = sum over selected t of [logsumexp(z_t) - z_t[y_t]] / D, D = ``num_items_in_batch`` or
    the selected count; nothing selected and no count gives 0/0 = NaN (a 4-token sequence under
    15% masking: probability 0.85**4 = 0.52).  Devlin et al. 2019 (BERT), section 3.1, Task #1.

    Upstream: transformers ``loss.loss_utils.ForMaskedLMLoss``; what differs: chapter 03's table.
    """
    check_masked_lm(logits, labels, vocab_size, ignore_index)
    with named_label_errors("labels", labels, logits.shape[-1], ignore_index, "token id"):
        return per_position_cross_entropy(
            logits, labels, num_items_in_batch, ignore_index, **kwargs
        )  # []


def check_masked_lm(logits, labels, vocab_size, ignore_index) -> None:
    """:func:`masked_lm_loss`'s inputs, each checked with an error naming it and its shape."""
    check_float("logits", logits)
    if logits.dim() < 2:
        raise ValueError(f"logits must be [batch, seq, vocab] (or [seq, vocab]), got shape {shape_str(logits)}")
    check_vocab_size(vocab_size, logits)
    check_position_labels("labels", labels, logits, ignore_index)


class Masking(NamedTuple):
    """What the masking decided, position by position (Bool[Tensor, "batch seq"] each, on the CPU).

    ``selected``: scored by the loss (label = original token).  Of those, ``replaced`` became the mask
    token, ``randomized`` became ``random_ids`` (Long[Tensor, "batch seq"], or ``None`` when no position
    can be randomized), and the rest, ``unchanged``, kept their token.
    """

    selected: torch.Tensor
    replaced: torch.Tensor
    randomized: torch.Tensor
    random_ids: torch.Tensor | None

    @property
    def unchanged(self) -> torch.Tensor:
        return self.selected & ~self.replaced & ~self.randomized


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def sample_masking(
    input_ids: torch.Tensor,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_ids=(),
    generator: torch.Generator | None = None,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    special_tokens_mask: torch.Tensor | None = None,
) -> Masking:
    """Draw the random choices of BERT's masking for ``input_ids`` (Long[Tensor, "batch seq"]).

    Random numbers come from ``generator`` (a CPU ``torch.Generator``; ``None`` = the global
    one) in the order and shapes of transformers' ``torch_mask_tokens`` (in
    ``DataCollatorForLanguageModeling``), so the same seed gives the collator's masking:

    1. ``selected ~ Bernoulli(mlm_probability)`` per position, 0 for special tokens
       (ids in ``special_ids``, or positions where ``special_tokens_mask`` is true);
    2. ``replaced = Bernoulli(mask_replace_prob) & selected``;
    3. ``randomized = Bernoulli(random_replace_prob / (1 - mask_replace_prob)) & selected
       & ~replaced`` (the conditional probability that makes ``random_replace_prob`` the
       unconditional share), skipped if ``mask_replace_prob == 1`` or ``random_replace_prob == 0``;
    4. ``random_ids ~ Uniform{0, ..., vocab_size - 1}``: the whole vocabulary, special tokens
       included, as upstream draws from ``len(tokenizer)``; a "random" token may equal the original.
    """
    check_integer("input_ids", input_ids, "token ids")
    if input_ids.dim() == 0:
        raise ValueError("input_ids must have a sequence dimension (shape [batch, seq] or [seq]), "
                         "got a 0-dim tensor")
    if (isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral)
            or vocab_size < 1):
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    mlm_probability = _probability("mlm_probability", mlm_probability)
    mask_replace_prob = _probability("mask_replace_prob", mask_replace_prob)
    random_replace_prob = _probability("random_replace_prob", random_replace_prob)
    if mask_replace_prob + random_replace_prob > 1:
        raise ValueError(
            f"mask_replace_prob + random_replace_prob must not exceed 1 "
            f"(the rest stays unchanged), got {mask_replace_prob} + {random_replace_prob}"
        )
    ids = input_ids.detach().cpu()  # [batch, seq]; the caller's tensor is never written to
    if ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids holds token id {low if low < 0 else high}, "
                f"outside [0, {vocab_size}) for vocab_size={vocab_size} "
                f"(shape {shape_str(input_ids)})"
            )
    if special_tokens_mask is not None:
        if (not torch.is_tensor(special_tokens_mask)
                or special_tokens_mask.shape != input_ids.shape):
            is_tensor = torch.is_tensor(special_tokens_mask)
            got = (shape_str(special_tokens_mask) if is_tensor
                   else type(special_tokens_mask).__name__)
            raise ValueError(
                f"special_tokens_mask must be a tensor of the shape of input_ids "
                f"{shape_str(input_ids)}, got {got}"
            )
        special = special_tokens_mask.detach().cpu().bool()
    else:
        special = torch.zeros(ids.shape, dtype=torch.bool)
    if (special_ids is None or isinstance(special_ids, (str, bytes))
            or not hasattr(special_ids, "__iter__")):
        raise TypeError(f"special_ids must be an iterable of token ids (use () for none), got "
                        f"{type(special_ids).__name__}")
    for s in special_ids:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"special_ids must hold int token ids, "
                            f"got {s!r} ({type(s).__name__})")
        special = special | (ids == int(s))

    # the same calls, shapes and dtypes as torch_mask_tokens:
    # the generator's stream is consumed identically
    probability_matrix = torch.full(ids.shape, mlm_probability)  # [batch, seq]
    probability_matrix.masked_fill_(special, value=0.0)
    selected = torch.bernoulli(probability_matrix, generator=generator).bool()  # [batch, seq]
    replaced = (torch.bernoulli(torch.full(ids.shape, mask_replace_prob), generator=generator)
                .bool() & selected)
    if mask_replace_prob == 1 or random_replace_prob == 0:
        return Masking(selected, replaced, torch.zeros_like(selected), None)
    scaled = random_replace_prob / (1 - mask_replace_prob)  # P(random | selected, not replaced)
    randomized = (torch.bernoulli(torch.full(ids.shape, scaled), generator=generator).bool()
                  & selected & ~replaced)
    random_ids = torch.randint(vocab_size, ids.shape, dtype=torch.long,
                               generator=generator)  # [batch, seq]
    return Masking(selected, replaced, randomized, random_ids)


# mask_tokens' differences from upstream's ``torch_mask_tokens``, in full:
# - ``ignore_index`` is a parameter (upstream writes -100) and must not be a token id;
# - ids, probabilities, ``special_ids`` and the mask token are checked;
# - ``input_ids`` is never modified (upstream's ``torch_mask_tokens`` writes into its argument);
# - the outputs are on ``input_ids``' device;
# - ``labels`` are always ``torch.long`` (upstream keeps the input dtype, where -100 wraps to a
#   real token id in ``uint8``); ``inputs`` keep ``input_ids``' dtype, which must hold every id
#   of the vocabulary.
def mask_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_ids=(),
    generator: torch.Generator | None = None,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    ignore_index: int = -100,
    special_tokens_mask: torch.Tensor | None = None,
    return_masking: bool = False,
):
    """BERT's masking: ``(inputs, labels)`` for a masked LM, Int[Tensor, "batch seq"] like
    ``input_ids`` and Long[Tensor, "batch seq"].

    Each non-special token is selected with probability ``mlm_probability``; ``labels`` hold
    the original id there and ``ignore_index`` everywhere else.  Of the selected positions, a
    share ``mask_replace_prob`` (80%) becomes ``mask_token_id`` in ``inputs``,
    ``random_replace_prob`` (10%) a random id from ``[0, vocab_size)``, and the rest (10%) keep
    their token.  The draws (:func:`sample_masking`) follow transformers' collator call for call:
    ``generator=torch.Generator().manual_seed(s)`` gives the collator's masking with ``seed=s``.

    ``special_ids`` (e.g. the pad and mask ids) or a ``special_tokens_mask`` keep positions out
    of the selection; ``return_masking=True`` also returns the :class:`Masking`.  Unlike upstream,
    ``input_ids`` is never modified, ``ignore_index`` is a parameter (not a token id), inputs are
    checked, and ``labels`` are always ``torch.long`` (-100 would wrap in ``uint8``).
    """
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, numbers.Integral):
        raise TypeError(f"mask_token_id must be an int, got {type(mask_token_id).__name__}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    masking = sample_masking(input_ids, vocab_size, mlm_probability, special_ids, generator,
                             mask_replace_prob, random_replace_prob, special_tokens_mask)
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id={mask_token_id} is outside [0, {vocab_size}) "
                         f"for vocab_size={vocab_size}")
    if 0 <= ignore_index < vocab_size:
        raise ValueError(f"ignore_index={ignore_index} is a token id in [0, {vocab_size}): "
                         f"labels would be ambiguous")
    largest = torch.iinfo(input_ids.dtype).max
    if vocab_size - 1 > largest:
        raise ValueError(f"input_ids of dtype {input_ids.dtype} (largest value {largest}) "
                         f"cannot hold the ids of vocab_size={vocab_size}: "
                         f"random replacements would wrap around; use input_ids.long()")
    ids = input_ids.detach().cpu()  # [batch, seq]
    # a long copy: ignore_index (-100) must not wrap in a narrow dtype
    labels = ids.to(torch.long, copy=True)
    labels[~masking.selected] = ignore_index  # only the selected positions are scored
    inputs = ids.clone()  # a copy: the caller's tensor stays as it was
    inputs[masking.replaced] = mask_token_id
    if masking.random_ids is not None:
        inputs[masking.randomized] = masking.random_ids[masking.randomized].to(inputs.dtype)
    inputs, labels = inputs.to(input_ids.device), labels.to(input_ids.device)
    return (inputs, labels, masking) if return_masking else (inputs, labels)


def mask_then_score(logits, input_ids, seed, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15):
    """Mask ``input_ids`` with a generator seeded by ``seed``, then score ``logits`` against the labels.

    The whole masked-LM objective in one call, used by the chapter's checks and its bug zoo: a mistake in
    the masking or in the loss changes the value or the gradient with respect to ``logits``.  The logits
    are given, not computed from the masked inputs, so that a check compares the objectives themselves.
    """
    generator = torch.Generator().manual_seed(int(seed))
    _, labels = mask_tokens(input_ids, mask_token_id, vocab_size, mlm_probability, special_ids, generator)
    return masked_lm_loss(logits, labels)
