"""Chapter 10 (SPIN): seed 002's mistakes and two more, each failing the check lossbook passes.

The step-level bugs take ``(policy, reference, batch, lam)`` (a ``lossbook.demos.spin.tiny_spin_models`` batch)
and fail ``lossbook.demos.spin.check_spin_step``; ``seed_should_validate`` fails ``check_schedule``;
``NeverRefreshedTrainer`` fails ``check_refresh``.  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..demos.spin import seed_spin_forward
from ..dpo import sequence_logps
from ..spin import SPINTrainer

__all__ = ["unshifted_gather", "mutates_the_batch", "lam_on_one_term", "seed_should_validate",
           "NeverRefreshedTrainer"]


def unshifted_gather(policy, reference, batch, lam):
    """BUG (seed 002, as seed 001): ``get_at('b n [c], b n -> b n', log_probs, seq)`` reads token t from the
    logits at t, which predict token t + 1: the probability that the next token repeats this one."""
    real, gen = batch["real"].clone(), batch["generated"].clone()  # copies: this bug is the gather alone
    return seed_spin_forward(policy, reference, gen, real, batch["prompt_len"], lam=lam, pad_id=-1,
                             fix_gather=False, fix_inplace=True)


def mutates_the_batch(policy, reference, batch, lam):
    """BUG (seed 002): ``generated_seq.masked_fill_(~mask, 0)`` rewrites the caller's batch: the
    pads become token 0, so the next call on the same batch (validation again, a second epoch) finds
    no padding and scores it."""
    return seed_spin_forward(policy, reference, batch["generated"], batch["real"],
                             batch["prompt_len"], lam=lam, pad_id=-1, fix_gather=True,
                             fix_inplace=False)


def lam_on_one_term(policy, reference, batch, lam):
    """BUG: lambda scales only the real log-ratio, lam * h_real - h_gen: the loss is no longer a function of the
    difference of log-ratios (the Z of the opponent's update does not cancel) and the generated term is 1/lam
    times too strong."""
    real, gen = batch["real"], batch["generated"].clamp(min=0)
    rm, gm = batch["real_mask"], batch["generated_mask"]
    with torch.no_grad():
        ref_r = sequence_logps(reference(real), real, rm, average=True)
        ref_g = sequence_logps(reference(gen), gen, gm, average=True)
    pol_r = sequence_logps(policy(real), real, rm, average=True)
    pol_g = sequence_logps(policy(gen), gen, gm, average=True)
    return -F.logsigmoid(lam * (pol_r - ref_r) - (pol_g - ref_g)).mean()


def seed_should_validate(step, valid_every):
    """BUG (seed 002): ``not (valid_every % steps)`` is true when the *step divides valid_every*: with
    valid_every = 100 it validates at steps 1, 2, 4, 5, 10, 20, 25, 50, 100 and never again."""
    return not (valid_every % step)


class NeverRefreshedTrainer(SPINTrainer):
    """BUG: the reference is never made a copy of the policy again: every iteration samples from and anchors to
    the *initial* model (what seed 002 gets between copies with ``ref_model_ema_decay = 1``, for ever)."""

    def begin_iteration(self) -> None:
        self.step_in_iteration = 0
        self.generated = self.generate(self.train_seqs, self.train_mask)  # from the stale reference
        if self.valid_seqs is not None:
            self.valid_generated = self.generate(self.valid_seqs, self.valid_mask)
