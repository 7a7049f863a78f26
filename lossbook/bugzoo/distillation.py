"""Chapter 15 (distillation): five plausible mistakes, each failing the check lossbook passes.

The soft-loss bugs take ``(student_logits, teacher_logits, labels, beta, temperature)`` at beta = 0 (the forward
KL, Hinton's soft-target loss) and fail ``compare_losses`` against ``distillation_loss`` on
``lossbook.demos.distillation.forward_kl_cases``; ``missing_t_squared`` takes ``(student_logits, teacher_logits,
labels, temperature, alpha)`` and fails against ``hinton_mixed_loss`` on ``hinton_cases``.  Never use them.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..causal_lm import causal_lm_loss

__all__ = [
    "kl_arguments_swapped",
    "temperature_on_one_side",
    "missing_t_squared",
    "mean_over_vocab",
    "counts_padding",
]


def _kept(x, labels):
    return x[labels != -100]  # [kept, vocab]


def kl_arguments_swapped(student_logits, teacher_logits, labels, beta, temperature):
    """BUG: ``F.kl_div(input, target)`` is KL(target || input), the *input* as log-probs;
    written as KL(p_s || p_t) reads, ``kl_div(teacher_log_probs, student_log_probs)``, it is the
    reverse KL."""
    s = F.log_softmax(student_logits / temperature, -1)
    t = F.log_softmax(teacher_logits / temperature, -1)
    return _kept(F.kl_div(t, s, reduction="none", log_target=True), labels).sum(-1).mean()


def temperature_on_one_side(student_logits, teacher_logits, labels, beta, temperature):
    """BUG: only the teacher is softened; the student is pushed towards a flatter distribution than its own
    softmax(z_s / T), so at T = 1 sampling it is too flat."""
    s = F.log_softmax(student_logits, -1)
    t = F.log_softmax(teacher_logits / temperature, -1)
    return _kept(F.kl_div(s, t, reduction="none", log_target=True), labels).sum(-1).mean()


def mean_over_vocab(student_logits, teacher_logits, labels, beta, temperature):
    """BUG: ``reduction="mean"`` averages over positions *and* the vocabulary: the loss (and its gradient) is
    divided by the vocabulary size, 128256 times too small for a Llama-3 vocabulary."""
    s = F.log_softmax(student_logits / temperature, -1)
    t = F.log_softmax(teacher_logits / temperature, -1)
    return _kept(F.kl_div(s, t, reduction="none", log_target=True), labels).mean()


def counts_padding(student_logits, teacher_logits, labels, beta, temperature):
    """BUG: every position is scored, padding and prompt included (``labels`` unused): the teacher's
    distribution after the end of a sequence is learnt, and the mean has the wrong denominator."""
    s = F.log_softmax(student_logits / temperature, -1)
    t = F.log_softmax(teacher_logits / temperature, -1)
    return F.kl_div(s, t, reduction="none", log_target=True).sum(-1).mean()


def missing_t_squared(student_logits, teacher_logits, labels, temperature, alpha):
    """BUG: alpha KL_T + (1 - alpha) CE without Hinton's T^2: the soft term's gradient scales as 1/T^2, so at
    T = 4 the teacher's signal is 16 times weaker than alpha says and the student learns from the labels."""
    s = F.log_softmax(student_logits / temperature, -1)
    t = F.log_softmax(
        teacher_logits.detach() / temperature, -1
    )  # the teacher is a constant, as it should be
    soft = _kept(F.kl_div(s, t, reduction="none", log_target=True), labels).sum(-1).mean()
    return alpha * soft + (1 - alpha) * causal_lm_loss(student_logits, None, shift_labels=labels)
