"""SPIN, self-play fine-tuning: the loss (Chen et al. 2024, Eq. 4.7) and a small trainer (their Algorithm 1).

Chapter: notebooks/10_spin.ipynb.  Upstream: lucidrains' self-rewarding-lm-pytorch ``spin.py`` (seed 002:
``SPIN.forward`` and ``SPINTrainer``); the loss is TRL's DPO sigmoid loss with the real completion as the
chosen one and the model's own sample as the rejected one.

SPIN (Chen, Deng, Yuan, Ji, Gu 2024, "Self-Play Fine-Tuning Converts Weak Language Models to Strong Language
Models", arXiv 2401.01335) fine-tunes a model on supervised data without new labels: at iteration t the
opponent p_t (the reference, a copy of the current model) generates a completion y' for each prompt x of the
SFT data, and the main player p_{t+1} learns to tell the real completion y from y':

    L = E[ -log sigmoid( lam * (log p(y|x)/p_t(y|x) - log p(y'|x)/p_t(y'|x)) ) ]          (Eq. 4.7)

(the paper writes the logistic loss ell(t) = log(1 + exp(-t)) = -log sigmoid(t)).  Its fixed point is
p = p_data: when the model's samples look like the data, real and generated are exchangeable and the expected
gradient is zero.  ``spin_loss`` is the loss; ``SPINTrainer`` runs Algorithm 1 on a causal LM
(``lossbook.models.TinyTransformer``): reference refresh (a copy, optionally an EMA of the policy during the
iteration, as seed 002), generation with temperature / top-k / top-p, gradient accumulation over one shared
denominator, validation on held-out prompts, and checkpoints that resume a run bit for bit.
"""

from __future__ import annotations

import copy
import math
import numbers
from pathlib import Path

import torch
import torch.nn.functional as F

from ._checks import check_float, check_integer, check_rank, shape_str
from .dpo import _check_logps, _check_positive, _check_scalar, sequence_logps

__all__ = ["spin_loss", "filter_logits", "sample_completions", "ema_update_", "SPINTrainer"]


def spin_loss(
    policy_real_logps: torch.Tensor,
    policy_generated_logps: torch.Tensor,
    ref_real_logps: torch.Tensor,
    ref_generated_logps: torch.Tensor,
    lam: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPIN's per-pair loss (Chen et al. 2024, Eq. 4.7) and the detached implicit rewards.

    Inputs: four Float[Tensor, "batch"], summed completion log-probs (``sequence_logps``) of the
    policy p_theta and the reference p_t on the real completion y and the generated one y'.
    With h_real = policy_real - ref_real and h_gen = policy_generated - ref_generated:

        losses = -log sigmoid(lam * (h_real - h_gen))                                  [batch]

    Returns ``(losses, real_rewards, generated_rewards)``, each [batch]; the rewards are
    ``lam * h``, detached.  ``lam`` (seed 002's ``λ``) must be finite and > 0.  It equals
    ``dpo_loss(..., beta=lam, loss_type="sigmoid")`` (TRL's DPO sigmoid loss) with real as chosen.
    """
    lam = _check_spin_inputs(lam, policy_real_logps=policy_real_logps,
                             ref_real_logps=ref_real_logps,
                             policy_generated_logps=policy_generated_logps,
                             ref_generated_logps=ref_generated_logps)
    real_logratios = policy_real_logps - ref_real_logps  # [batch] h_real
    generated_logratios = policy_generated_logps - ref_generated_logps  # [batch] h_gen
    losses = -F.logsigmoid(lam * (real_logratios - generated_logratios))  # [batch]
    return losses, (lam * real_logratios).detach(), (lam * generated_logratios).detach()


def _check_spin_inputs(lam, **logps: torch.Tensor) -> float:
    """spin_loss's checks: four [batch] log-prob vectors of one length, a finite lam > 0."""
    names = ("policy_real_logps", "policy_generated_logps", "ref_real_logps", "ref_generated_logps")
    _check_logps(**{name: logps[name] for name in names})  # in this order: the messages name the first
    return _check_positive("lam", lam)


def _check_sampling(temperature, top_k, top_p) -> None:
    """The sampling settings, checked once (``filter_logits``, ``sample_completions``, ``SPINTrainer``)."""
    if (not isinstance(temperature, numbers.Real) or isinstance(temperature, bool)
            or not 0 <= temperature < math.inf):
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, numbers.Real) or isinstance(top_p, bool)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")


# ---------------------------------------------------------------------------------------------- generation


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Next-token logits Float[Tensor, "batch vocab"] with the tokens outside top-k / the top-p nucleus at -inf.

    ``top_k``: keep the k largest logits per row (ties at the k-th value are kept).  ``top_p``: keep the
    smallest set of most likely tokens whose probability reaches ``top_p`` (the token that crosses it is
    kept, so at least one token always survives).  Both may be given (top-k first, as Hugging Face's
    ``TopKLogitsWarper`` then ``TopPLogitsWarper``).  ``None`` disables a filter.
    """
    check_float("logits", logits)
    check_rank("logits", logits, (2,), "[batch, vocab]")
    _check_sampling(1.0, top_k, top_p)
    vocab = logits.shape[-1]
    if top_k is not None:
        k = min(top_k, vocab)
        kth = logits.topk(k, dim=-1).values[:, -1:]  # [batch, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [batch, vocab]
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # [batch, vocab]: mass strictly before each token
        drop_sorted = before >= top_p  # the first token has before = 0 < top_p: always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample_completions(model, prompts: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``max_new_tokens`` after every row of ``prompts`` Long[Tensor, "batch prompt"], all rows at once.

    Chapter 02's ``lossbook.models.generate`` for a batch, with ``filter_logits`` (top-k / top-p) and
    ``temperature`` (0 is greedy).  Returns Long[Tensor, "batch prompt+max_new_tokens"] (the prompt kept,
    seed 002's ``output_keep_prompt=True``), on the CPU.  Draws on the CPU ``generator`` only, so the samples
    are reproducible on any device; the model's training mode is restored.
    """
    check_integer("prompts", prompts, "token ids")
    check_rank("prompts", prompts, (2,), "[batch, prompt]")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    _check_sampling(temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = prompts.to(device)
    for _ in range(max_new_tokens):
        logits = model(ids[:, -model.max_len:])[:, -1].float().cpu()  # [batch, vocab]
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)  # [batch, 1]
        else:
            logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # [batch, 1]
        ids = torch.cat([ids, nxt.to(device)], dim=1)
    model.train(was_training)
    return ids.cpu()


@torch.no_grad()
def ema_update_(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """In place: every parameter and floating buffer of ``ema_model`` <- decay * itself + (1 - decay) * model's.

    ``decay = 1`` leaves the EMA where it is (seed 002's default ``ref_model_ema_decay = 1.``: a frozen
    reference between copies); ``decay = 0`` copies the model.
    """
    decay = _check_scalar("decay", decay)
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    ema_state, state = ema_model.state_dict(), model.state_dict()
    if ema_state.keys() != state.keys():
        raise ValueError("ema_model and model must have the same parameters (state_dict keys differ)")
    for key, value in state.items():
        target = ema_state[key]
        if target.shape != value.shape:
            raise ValueError(f"{key}: ema_model has shape {shape_str(target)}, model {shape_str(value)}")
        if target.is_floating_point():
            target.lerp_(value, 1 - decay)  # target + (1 - decay) * (value - target)
        else:
            target.copy_(value)


# ---------------------------------------------------------------------------------------------- the trainer


def _vocab_size(policy: torch.nn.Module) -> int | None:
    """The policy's vocabulary: ``vocab_size``, else its (first) input embedding's rows; None if unknown."""
    vocab = getattr(policy, "vocab_size", None)
    if isinstance(vocab, int) and not isinstance(vocab, bool):
        return vocab
    embedding = next((m for m in policy.modules() if isinstance(m, torch.nn.Embedding)), None)
    return None if embedding is None else embedding.num_embeddings


def _completion_rows(name: str, seqs, prompt_name: str, prompt_len, pad_id: int | None, vocab: int | None,
                     max_len: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, mask)`` of SFT rows ``seqs`` Long[examples, seq], checked: the rows on the CPU with every pad
    set to token 0, and Long[examples, seq] 1 on each row's real completion (after its prompt, before its pads).
    """
    check_integer(name, seqs, "token ids")
    check_rank(name, seqs, (2,), "[examples, seq] (prompt then real completion)")
    seqs = seqs.cpu()
    n, seq = seqs.shape
    if isinstance(prompt_len, int) and not isinstance(prompt_len, bool):
        if not 1 <= prompt_len < seq:
            raise ValueError(f"{prompt_name} must be an int in [1, {seq - 1}] for {name} of shape "
                             f"{shape_str(seqs)} (at least one completion token), got {prompt_len!r}")
        start = torch.full((n,), prompt_len)
    elif torch.is_tensor(prompt_len) and not prompt_len.is_floating_point() and prompt_len.dtype != torch.bool:
        if tuple(prompt_len.shape) != (n,):
            raise ValueError(f"{prompt_name} per row must be [{n}] for {name} of shape {shape_str(seqs)}, got "
                             f"{shape_str(prompt_len)}")
        start = prompt_len.cpu().long()
        bad = ((start < 1) | (start >= seq)).nonzero()
        if bad.numel():
            row = int(bad[0, 0])
            raise ValueError(f"{prompt_name} must lie in [1, {seq - 1}] for {name} of shape {shape_str(seqs)} "
                             f"(at least one completion token), got {int(start[row])} at row {row}")
    else:
        raise ValueError(f"{prompt_name} must be an int in [1, {seq - 1}] or an integer tensor [{n}] (one per "
                         f"row of {name} {shape_str(seqs)}), got {prompt_len!r}")
    pos = torch.arange(seq)
    end = torch.full((n,), seq)
    if pad_id is not None:
        is_pad = seqs == pad_id
        end = seq - is_pad.sum(1)  # [examples]: right padding, the pads are the last positions
        wrong = (is_pad != (pos >= end[:, None])).any(1).nonzero()
        if wrong.numel():
            row = int(wrong[0, 0])
            raise ValueError(f"{name} must be right-padded with pad_id={pad_id} (pads after the tokens only): "
                             f"row {row} of {shape_str(seqs)} is {seqs[row].tolist()}")
        short = (end <= start).nonzero()
        if short.numel():
            row = int(short[0, 0])
            raise ValueError(f"{name} row {row} has {int(end[row])} tokens before its pads and a prompt of "
                             f"{int(start[row])} ({prompt_name}): no completion token to score")
    tokens = seqs.masked_fill(pos >= end[:, None], 0)  # [examples, seq]: a pad reads as token 0
    if vocab is not None:
        outside = ((tokens < 0) | (tokens >= vocab)).nonzero()
        if outside.numel():
            row, col = (int(i) for i in outside[0])
            hint = "" if pad_id is not None else " (if it pads the rows, pass it as pad_id)"
            raise ValueError(f"{name} holds token id {int(tokens[row, col])} at [{row}, {col}] of "
                             f"{shape_str(seqs)}, outside the policy's vocabulary [0, {vocab}){hint}")
    if isinstance(max_len, int) and seq > max_len:
        raise ValueError(f"{name} has rows of {seq} tokens ({shape_str(seqs)}), more than the policy's "
                         f"max_len {max_len}")
    mask = ((pos >= start[:, None]) & (pos < end[:, None])).long()  # [examples, seq]
    return tokens, mask


class SPINTrainer:
    """SPIN's Algorithm 1 on a causal LM, small enough to read: one object, one optimizer, one generator.

    ``policy``: a causal LM (``TinyTransformer(causal=True)``: Long[batch, seq] -> logits [batch, seq, vocab]).
    ``train_seqs``: Long[Tensor, "examples seq"], the SFT data, each row a prompt (its first ``prompt_len``
    tokens) followed by its real completion.  ``prompt_len``: an int shared by every row, or Long[examples],
    one per row.  ``pad_id``: the id that right-pads the rows (seed 002's ``pad_id``; any int, -1 included):
    pads are never scored, and the model reads token 0 in their place (a causal LM's scored positions never see
    them).  ``valid_seqs``: the same for held-out prompts (optional), with ``valid_prompt_len`` (default:
    ``prompt_len`` when it is an int).  Every id that is not a pad must lie in ``[0, policy.vocab_size)``.

    ``dropout`` (default 0.0): the ``p`` of every ``nn.Dropout`` of the policy (and so of its reference copy),
    set at construction, as seed 002's ``set_dropout_(model, dropout)`` and TRL's ``disable_dropout=True``
    (``disable_dropout_in_model``): with dropout on, the policy scored in training mode differs from the
    reference scored in eval mode even when their weights are equal, and the loss at policy = reference is not
    log 2.  ``None`` leaves the model's dropout as it is.

    Each **iteration** (``begin_iteration``): the reference becomes a copy of the policy (p_t), and it samples a
    completion for every training (and validation) prompt, of the real completion's length, with
    ``temperature`` / ``top_k`` / ``top_p``.  Then ``steps_per_iteration`` optimizer **steps**, each on
    ``batch_size`` pairs (real, generated) drawn at random, split into ``grad_accum_steps`` micro-batches whose
    summed per-pair losses are all divided by the same denominator, the batch's pair count (so the accumulated
    gradient is the full batch's, whatever the split).  ``ref_ema_decay``: ``None`` keeps the reference frozen
    during the iteration (the paper); a number d moves it after every step, ref <- d ref + (1 - d) policy
    (seed 002's EMA; d = 1 is frozen).  Generation always uses the reference at the start of the iteration.

    ``objective="sft"`` trains the same steps on plain next-token NLL of the real completions (the baseline:
    the same data and number of steps); its denominator is the batch's scored token count.

    Validation every ``valid_every`` steps (``global_step % valid_every == 0``) and at the end of each
    iteration: ``valid_nll``, the policy's mean NLL per real completion token of ``valid_seqs``, and (SPIN
    only) ``valid_spin_loss``, the SPIN loss on the validation pairs.  ``history`` (``lossbook.train.History``)
    holds ``train_loss`` per step and the validation metrics.

    ``save(path)`` / ``load(path)``: everything a resumed run needs (policy, reference, optimizer, the sampling
    generator, torch's global RNG, counters, the iteration's generated completions, history), saved with
    ``torch.save`` and read with ``torch.load(weights_only=True)``; ``checkpoint_every`` saves
    ``checkpoint_dir/spin.ckpt.<step>.pt`` every that many steps.  A run resumed from a checkpoint reaches the
    same weights bit for bit as the run that was not stopped.

    Every argument is checked here, at construction (a bad ``lam``, ``temperature`` or ``top_p`` does not wait
    for the first step to fail).
    """

    def __init__(self, policy: torch.nn.Module, train_seqs: torch.Tensor, prompt_len: int | torch.Tensor, *,
                 valid_seqs: torch.Tensor | None = None, valid_prompt_len: int | torch.Tensor | None = None,
                 pad_id: int | None = None, objective: str = "spin", lam: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 16, grad_accum_steps: int = 1,
                 steps_per_iteration: int = 20, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, ref_ema_decay: float | None = None, dropout: float | None = 0.0,
                 valid_every: int = 10, seed: int = 0, checkpoint_every: int | None = None,
                 checkpoint_dir: str | Path | None = None, progress: bool = True, desc: str = "SPIN"):
        from .train import History

        if not isinstance(policy, torch.nn.Module):
            raise TypeError(f"policy must be a torch.nn.Module (a causal LM), got {type(policy).__name__}")
        if pad_id is not None and (not isinstance(pad_id, numbers.Integral) or isinstance(pad_id, bool)):
            raise TypeError(f"pad_id must be an int or None, got {pad_id!r}")
        pad_id = None if pad_id is None else int(pad_id)
        vocab, max_len = _vocab_size(policy), getattr(policy, "max_len", None)
        self.train_seqs, self.train_mask = _completion_rows("train_seqs", train_seqs, "prompt_len", prompt_len,
                                                            pad_id, vocab, max_len)
        self.valid_seqs = self.valid_mask = None
        if valid_seqs is not None:
            if valid_prompt_len is None and not isinstance(prompt_len, int):
                raise ValueError("valid_seqs needs valid_prompt_len when prompt_len is given per row")
            self.valid_seqs, self.valid_mask = _completion_rows(
                "valid_seqs", valid_seqs, "valid_prompt_len" if valid_prompt_len is not None else "prompt_len",
                prompt_len if valid_prompt_len is None else valid_prompt_len, pad_id, vocab, max_len)
            if valid_seqs.shape[1] != train_seqs.shape[1]:
                raise ValueError(f"valid_seqs must have train_seqs' length {train_seqs.shape[1]}, "
                                 f"got {shape_str(valid_seqs)}")
        if objective not in ("spin", "sft"):
            raise ValueError(f"objective must be 'spin' or 'sft', got {objective!r}")
        for name, value in (("batch_size", batch_size), ("grad_accum_steps", grad_accum_steps),
                            ("steps_per_iteration", steps_per_iteration), ("valid_every", valid_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if grad_accum_steps > batch_size:
            raise ValueError(f"grad_accum_steps ({grad_accum_steps}) must not exceed batch_size ({batch_size})")
        if ref_ema_decay is not None and not 0 <= _check_scalar("ref_ema_decay", ref_ema_decay) <= 1:
            raise ValueError(f"ref_ema_decay must lie in [0, 1] or be None, got {ref_ema_decay}")
        if dropout is not None and not 0 <= _check_scalar("dropout", dropout) < 1:
            raise ValueError(f"dropout must lie in [0, 1) or be None (keep the model's), got {dropout}")
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        self.lam = _check_positive("lam", lam)
        _check_sampling(temperature, top_k, top_p)
        if dropout is not None:  # seed 002's set_dropout_, TRL's disable_dropout_in_model (p = 0)
            for module in policy.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = float(dropout)
        self.policy = policy
        self.device = next(policy.parameters()).device
        self.reference = copy.deepcopy(policy).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.prompt_len, self.pad_id = prompt_len, pad_id
        self.objective, self.batch_size, self.grad_accum_steps = objective, batch_size, grad_accum_steps
        self.steps_per_iteration, self.valid_every = steps_per_iteration, valid_every
        self.temperature, self.top_k, self.top_p, self.ref_ema_decay = temperature, top_k, top_p, ref_ema_decay
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress, self.desc = progress, desc
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.history = History()
        self.iteration = 0  # iterations completed
        self.step_in_iteration = 0
        self.global_step = 0
        self.generated: torch.Tensor | None = None  # Long[examples, seq]: the reference's samples, this iteration
        self.valid_generated: torch.Tensor | None = None

    # ------------------------------------------------------------------ pieces of one step

    def generate(self, seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reference's completion for each prompt of ``seqs`` (prompt kept), the real completion's length.

        ``mask``: Long[rows, seq], 1 on each row's real completion (``train_mask`` / ``valid_mask``).  Rows
        with the same prompt length are sampled together; past the completion the row holds token 0 (a pad).
        """
        start, end = mask.argmax(1), mask.argmax(1) + mask.sum(1)  # [rows]: the completion is [start, end)
        out = torch.zeros_like(seqs)
        for p in start.unique().tolist():
            rows = (start == p).nonzero()[:, 0]
            new = int(end[rows].max()) - p
            out[rows, : p + new] = sample_completions(
                self.reference, seqs[rows, :p], new, temperature=self.temperature, top_k=self.top_k,
                top_p=self.top_p, generator=self.generator)
        return out.masked_fill(torch.arange(seqs.shape[1]) >= end[:, None], 0)

    def pair_logps(self, model, real: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor):
        """Summed completion log-probs of ``model`` on the real and the generated rows: two Float[batch].

        ``mask``: Long[batch, seq], 1 on the completion tokens scored (the same for both: equal lengths)."""
        both = torch.cat([real, generated]).to(self.device)  # [2 batch, seq]: one forward
        logps = sequence_logps(model(both), both, torch.cat([mask, mask]).to(self.device))  # [2 batch]
        return logps[: real.shape[0]], logps[real.shape[0]:]

    def pair_losses(self, real: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-pair SPIN losses [batch] (the policy gets gradients, the reference none)."""
        with torch.no_grad():
            ref_real, ref_gen = self.pair_logps(self.reference, real, generated, mask)
        pol_real, pol_gen = self.pair_logps(self.policy, real, generated, mask)
        return spin_loss(pol_real, pol_gen, ref_real, ref_gen, lam=self.lam)[0]

    def nll_sum(self, model, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Summed NLL of the real completion tokens of ``real`` (``mask``: 1 on them), a scalar."""
        real = real.to(self.device)
        return -sequence_logps(model(real), real, mask.to(self.device)).sum()

    def batch_loss_sum(self, idx: torch.Tensor) -> torch.Tensor:
        """The numerator of the step's loss on examples ``idx``: summed per-pair losses (or token NLLs)."""
        real, mask = self.train_seqs[idx], self.train_mask[idx]
        if self.objective == "sft":
            return self.nll_sum(self.policy, real, mask)
        return self.pair_losses(real, self.generated[idx], mask).sum()

    def denominator(self, rows: int | torch.Tensor) -> int:
        """The one denominator shared by every micro-batch: pairs (SPIN) or scored tokens (SFT) of the batch.

        ``rows``: the indices of the batch's examples, or their number when every row has one completion
        length."""
        n = rows if isinstance(rows, int) else len(rows)
        if self.objective == "spin":
            return n
        if not isinstance(rows, int):
            return int(self.train_mask[rows].sum())
        lengths = self.train_mask.sum(1)  # [examples]
        if not bool((lengths == lengths[0]).all()):
            raise ValueError("denominator(n) needs one completion length for every row: pass the batch's indices")
        return n * int(lengths[0])

    # ------------------------------------------------------------------ Algorithm 1

    def begin_iteration(self) -> None:
        """p_t <- the policy (copied into the reference); p_t samples the iteration's pairs."""
        self.reference.load_state_dict(self.policy.state_dict())
        self.step_in_iteration = 0
        if self.objective == "spin":
            self.generated = self.generate(self.train_seqs, self.train_mask)
            if self.valid_seqs is not None:
                self.valid_generated = self.generate(self.valid_seqs, self.valid_mask)
        else:
            self.generated = self.train_seqs[:0]  # the baseline trains on real text: no samples

    def step(self) -> float:
        """One optimizer step on ``batch_size`` random pairs, ``grad_accum_steps`` micro-batches."""
        if self.generated is None:
            raise RuntimeError("call begin_iteration() before step(): the iteration has no "
                               "generated completions")
        self.policy.train()
        n = self.train_seqs.shape[0]
        idx = torch.randint(0, n, (self.batch_size,), generator=self.generator)
        denominator = self.denominator(idx)  # of the whole batch, shared by its micro-batches
        total = 0.0
        for micro in idx.tensor_split(self.grad_accum_steps):
            loss = self.batch_loss_sum(micro) / denominator  # not the micro-batch's own denominator
            loss.backward()
            total += loss.item()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ref_ema_decay is not None:
            ema_update_(self.reference, self.policy, self.ref_ema_decay)
        self.global_step += 1
        self.step_in_iteration += 1
        self.history.log(self.global_step, train_loss=total)
        if self.valid_seqs is not None and self.global_step % self.valid_every == 0:
            self.history.log(self.global_step, **self.validate())
        return total

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """``valid_nll`` (per real completion token) and, for SPIN, ``valid_spin_loss`` (mean per pair)."""
        if self.valid_seqs is None:
            raise RuntimeError("validate() needs valid_seqs")
        was_training = self.policy.training
        self.policy.eval()
        tokens = int(self.valid_mask.sum())  # the real completion tokens scored
        out = {"valid_nll": float(self.nll_sum(self.policy, self.valid_seqs, self.valid_mask)) / tokens}
        if self.objective == "spin" and self.valid_generated is not None:
            out["valid_spin_loss"] = float(self.pair_losses(self.valid_seqs, self.valid_generated,
                                                            self.valid_mask).mean())
        self.policy.train(was_training)
        return out

    def run(self, iterations: int, callback=None):
        """Run (or resume) until ``iterations`` iterations are complete; returns ``history``.

        ``callback(trainer)``, if given, runs at the end of each iteration, before the next refresh (the reference
        is still p_t and ``generated`` its samples).
        """
        from tqdm.auto import tqdm

        if not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
        total = iterations * self.steps_per_iteration
        bar = tqdm(total=total, initial=min(self.global_step, total), desc=self.desc, disable=not self.progress,
                   mininterval=0.5)
        while self.iteration < iterations:
            if self.generated is None:
                self.begin_iteration()
            while self.step_in_iteration < self.steps_per_iteration:
                loss = self.step()
                bar.update(1)
                bar.set_postfix(iteration=self.iteration + 1, loss=f"{loss:.3f}", refresh=False)
                if self.checkpoint_every is not None and self.global_step % self.checkpoint_every == 0:
                    self.save(self.checkpoint_dir / f"spin.ckpt.{self.global_step}.pt")
            if self.valid_seqs is not None and self.global_step % self.valid_every != 0:
                self.history.log(self.global_step, **self.validate())  # every iteration ends validated
            if callback is not None:
                callback(self)
            self.iteration += 1
            self.generated = self.valid_generated = None
        bar.close()
        self.policy.eval()
        return self.history

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Tensors, numbers, strings and containers only: loadable with ``torch.load(weights_only=True)``."""
        return {
            "policy": self.policy.state_dict(),
            "reference": self.reference.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "iteration": self.iteration,
            "step_in_iteration": self.step_in_iteration,
            "global_step": self.global_step,
            "generated": self.generated,
            "valid_generated": self.valid_generated,
            "history": {k: [list(r) for r in v] for k, v in self.history.records.items()},
            "objective": self.objective,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("objective") != self.objective:
            raise ValueError(f"the checkpoint is of objective {state.get('objective')!r}, this trainer's is "
                             f"{self.objective!r}")
        self.policy.load_state_dict(state["policy"])
        self.reference.load_state_dict(state["reference"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration, self.step_in_iteration = state["iteration"], state["step_in_iteration"]
        self.global_step = state["global_step"]
        self.generated, self.valid_generated = state["generated"], state["valid_generated"]
        self.history.records.clear()
        for key, rows in state["history"].items():
            self.history.records[key] = [(int(s), float(v)) for s, v in rows]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)
        return path

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
