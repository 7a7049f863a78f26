"""Demo material of chapter 10 (SPIN): seed 002's code pattern, the rhyme data, and the sample distance.

The model is ``lossbook.models.TinyTransformer(causal=True)`` pre-trained briefly on the shipped rhymes; the
trainer is ``lossbook.spin.SPINTrainer``.  Seed 002 (lucidrains' self-rewarding-lm-pytorch ``spin.py``) is
re-typed here in plain torch (no einx / ema_pytorch / accelerate), line for line where it matters, with a
``fix`` switch, so the chapter can run it as written and fixed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from .._checks import check_integer, shape_str
from ..dpo import sequence_logps
from ..spin import SPINTrainer, sample_completions, spin_loss

__all__ = [
    "seed_log_prob_from_model_and_seq",
    "seed_spin_forward",
    "seed_valid_fires",
    "fixed_valid_fires",
    "tiny_spin_models",
    "SpinData",
    "make_spin_data",
    "pretrain",
    "bigram_counts",
    "bigram_tv",
    "sample_distance",
    "heldout_nll",
    "measure",
    "run_arm",
    "spin_cases",
    "lossbook_spin_forward",
    "check_spin_step",
    "check_schedule",
    "check_refresh",
    "snapshot",
]


# ---------------------------------------------------------------- seed 002, re-typed


def seed_log_prob_from_model_and_seq(model, seq, fix: bool = False):
    """Seed 002's ``log_prob_from_model_and_seq``: ``get_at('b n [c], b n -> b n', log_probs, seq)``.

    As written (``fix=False``) position t's log-probs are read at token t: the logits at t predict token t + 1,
    so this is the probability that the next token repeats the current one (seed 001's off-by-one).  ``fix=True``
    reads token t from the logits at t - 1 (position 0, never scored, gets 0).  Returns Float[batch, seq].
    """
    logits = model(seq)  # [batch, seq, vocab]
    log_probs = logits.log_softmax(dim=-1)
    if not fix:
        return log_probs.gather(-1, seq[..., None]).squeeze(-1)  # get_at('b n [c], b n -> b n', ...)
    picked = log_probs[:, :-1].gather(-1, seq[:, 1:, None]).squeeze(-1)  # [batch, seq - 1]
    return torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)  # [batch, seq]


def _masked_mean(t, mask):
    return (t * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def seed_spin_forward(policy, reference, generated_seq, real_seq, prompt_len, *, lam: float = 0.1,
                      pad_id: int | None = None, fix: bool = False, fix_gather: bool | None = None,
                      fix_inplace: bool | None = None):
    """Seed 002's ``SPIN.forward`` (Eq. 4.7 with masked-mean log-probs).  ``fix=False`` keeps its two bugs:

    the unshifted gather, and ``masked_fill_`` on the caller's ``generated_seq`` / ``real_seq`` (the batch is
    changed in place: its padding becomes token 0).  ``fix=True`` shifts the gather and fills copies;
    ``fix_gather`` / ``fix_inplace`` set one fix alone.  Returns the mean loss (a scalar).
    """
    fix_gather = fix if fix_gather is None else fix_gather
    fix_inplace = fix if fix_inplace is None else fix_inplace
    seq_len = real_seq.shape[-1]
    prompt_mask = torch.arange(seq_len) < prompt_len[:, None]  # prompt_mask_from_len
    generated_seq_mask = real_seq_mask = None
    if pad_id is not None:
        generated_seq_mask = generated_seq != pad_id
        real_seq_mask = real_seq != pad_id
        if fix_inplace:
            generated_seq = generated_seq.masked_fill(~generated_seq_mask, 0)
            real_seq = real_seq.masked_fill(~real_seq_mask, 0)
        else:
            generated_seq.masked_fill_(~generated_seq_mask, 0)  # as the seed: the caller's tensor changes
            real_seq.masked_fill_(~real_seq_mask, 0)
    with torch.no_grad():
        ref_generated = seed_log_prob_from_model_and_seq(reference, generated_seq, fix_gather)
        ref_real = seed_log_prob_from_model_and_seq(reference, real_seq, fix_gather)
    policy_generated = seed_log_prob_from_model_and_seq(policy, generated_seq, fix_gather)
    policy_real = seed_log_prob_from_model_and_seq(policy, real_seq, fix_gather)
    gen_mask = ~prompt_mask if generated_seq_mask is None else generated_seq_mask & ~prompt_mask
    real_mask = ~prompt_mask if real_seq_mask is None else real_seq_mask & ~prompt_mask
    policy_generated, ref_generated = (_masked_mean(t, gen_mask) for t in (policy_generated, ref_generated))
    policy_real, ref_real = (_masked_mean(t, real_mask) for t in (policy_real, ref_real))
    losses = -torch.nn.functional.logsigmoid(lam * ((policy_real - ref_real) - (policy_generated - ref_generated)))
    return losses.mean()


def seed_valid_fires(valid_every: int, steps: int) -> list[int]:
    """The steps at which seed 002 validates: ``not (valid_every % steps)``, i.e. the divisors of valid_every."""
    return [s for s in range(1, steps + 1) if not (valid_every % s)]


def fixed_valid_fires(valid_every: int, steps: int) -> list[int]:
    """The steps at which it should: ``steps % valid_every == 0`` (what ``SPINTrainer`` does)."""
    return [s for s in range(1, steps + 1) if s % valid_every == 0]


def tiny_spin_models(seed: int = 0, vocab: int = 9, batch: int = 4, seq: int = 10, pad: bool = True):
    """A policy, a *different* reference (``TinyTransformer``, d_model 16) and a batch of SPIN pairs.

    Returns ``(policy, reference, batch)``; the batch (a dict) holds ``real`` and ``generated`` Long[batch, seq]
    (sharing a prompt of 2 to 4 tokens; with ``pad`` the generated rows end in 0 to 2 pad tokens, id -1 as seed
    002's ``pad_id``), ``prompt_len`` Long[batch], and ``mask`` Long[batch, seq] for ``real`` / ``generated``
    (1 on the scored completion tokens).
    """
    from ..models import TinyTransformer

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = TinyTransformer(vocab, d_model=16, n_heads=2, n_layers=1, max_len=seq)
    reference = TinyTransformer(vocab, d_model=16, n_heads=2, n_layers=1, max_len=seq)
    prompt_len = torch.randint(2, 5, (batch,), generator=g)
    real = torch.randint(0, vocab, (batch, seq), generator=g)
    generated = torch.randint(0, vocab, (batch, seq), generator=g)
    generated[:, :] = torch.where(torch.arange(seq) < prompt_len[:, None], real, generated)  # the same prompt
    pos = torch.arange(seq)
    real_mask = (pos >= prompt_len[:, None]).long()
    gen_mask = real_mask.clone()
    if pad:
        n_pad = torch.randint(0, 3, (batch,), generator=g)
        padded = pos >= seq - n_pad[:, None]
        generated = generated.masked_fill(padded, -1)
        gen_mask = gen_mask.masked_fill(padded, 0)
    return policy.eval(), reference.eval(), {"real": real, "generated": generated, "prompt_len": prompt_len,
                                             "real_mask": real_mask, "generated_mask": gen_mask}


def lossbook_spin_forward(policy, reference, batch: dict, lam: float = 0.1, average: bool = True):
    """lossbook's pipeline on a ``tiny_spin_models`` batch: ``sequence_logps`` then ``spin_loss``, mean."""
    real, gen = batch["real"], batch["generated"].clamp(min=0)
    rm, gm = batch["real_mask"], batch["generated_mask"]
    with torch.no_grad():
        ref_r = sequence_logps(reference(real), real, rm, average=average)
        ref_g = sequence_logps(reference(gen), gen, gm, average=average)
    pol_r = sequence_logps(policy(real), real, rm, average=average)
    pol_g = sequence_logps(policy(gen), gen, gm, average=average)
    return spin_loss(pol_r, pol_g, ref_r, ref_g, lam=lam)[0].mean()


def check_spin_step(candidate, name: str | None = None, *, lam: float = 0.1, seeds=(0, 1, 2), atol: float = 1e-6):
    """``candidate(policy, reference, batch, lam)`` -> scalar loss, against ``lossbook_spin_forward`` (masked-mean
    log-probs, as seed 002): the loss value and the policy's and reference's gradients (the reference's must stay
    zero).  The candidate is called **twice** on the same batch, and the batch must come back unchanged: a
    function that edits its input in place fails (value error inf)."""
    from ..checks import CheckResult, _error

    value_err, grad_err = 0.0, 0.0
    for seed in seeds:
        policy, reference, batch = tiny_spin_models(seed)
        want = lossbook_spin_forward(policy, reference, batch, lam)
        want.backward()
        want_grad = torch.cat([q.grad.flatten() for q in policy.parameters()])
        pristine = {k: v.clone() for k, v in batch.items()}
        for _ in range(2):
            p, r = copy.deepcopy(policy), copy.deepcopy(reference)
            for q in p.parameters():
                q.grad = None
            loss = candidate(p, r, batch, lam)
            loss.backward()
            grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in (*p.parameters(), *r.parameters())]
            got = torch.cat([gr.flatten() for gr in grads])
            value_err = max(value_err, _error(loss.detach(), want.detach()))
            grad_err = max(grad_err, _error(got, torch.cat([want_grad, torch.zeros(got.numel() - want_grad.numel())])))
        if any(not torch.equal(batch[k], pristine[k]) for k in batch):
            value_err = math.inf
    return CheckResult(name or getattr(candidate, "__name__", "candidate"), value_err, grad_err, len(seeds), atol)


def check_schedule(should_validate, name: str | None = None, *, valid_every=(7, 10, 100), steps: int = 300):
    """``should_validate(step, valid_every)`` -> bool, against ``step % valid_every == 0`` on steps 1..``steps``.

    Returns ``(passed, wrong)``: ``wrong`` lists ``(valid_every, step)`` where the candidate disagrees (first 8)."""
    wrong = [(e, s) for e in valid_every for s in range(1, steps + 1) if bool(should_validate(s, e)) != (s % e == 0)]
    label = name or getattr(should_validate, "__name__", "candidate")
    print(f"{'PASS' if not wrong else 'FAIL'}  {label:<28} {len(wrong)} wrong decisions on steps 1..{steps}"
          + (f", e.g. (valid_every, step) {wrong[:4]}" if wrong else ""))
    return not wrong, wrong[:8]


def check_refresh(trainer_cls=SPINTrainer, name: str | None = None, seed: int = 0):
    """Algorithm 1's refresh: after some steps, ``begin_iteration`` must make the reference equal the policy.

    Runs ``trainer_cls`` (a ``SPINTrainer`` or a subclass) on a tiny model for one iteration of 2 steps, starts the
    next, and returns the max |reference - policy| over the parameters (0 when the reference was refreshed)."""
    policy, _, batch = tiny_spin_models(seed, pad=False)
    trainer = trainer_cls(policy, batch["real"], 3, batch_size=2, steps_per_iteration=2, lr=1e-2, seed=seed,
                          progress=False)
    trainer.begin_iteration()
    trainer.step()
    trainer.step()
    trainer.begin_iteration()
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(trainer.reference.parameters(),
                                                                trainer.policy.parameters()))
    label = name or trainer_cls.__name__
    print(f"{'PASS' if gap == 0 else 'FAIL'}  {label:<28} max |reference - policy| after the refresh {gap:.1e}")
    return gap


@torch.no_grad()
def snapshot(trainer: SPINTrainer, examples: int = 4, tokenizer=None) -> dict:
    """The end of an iteration, for the explorer: the first ``examples`` training prompts, their real and generated
    completions (texts when a ``tokenizer`` is given) and the four summed completion log-probs (Float[examples])."""
    real, gen = trainer.train_seqs[:examples], trainer.generated[:examples]
    mask = trainer.train_mask[:examples]  # [examples, seq]: 1 on the completion
    pol_r, pol_g = trainer.pair_logps(trainer.policy, real, gen, mask)
    ref_r, ref_g = trainer.pair_logps(trainer.reference, real, gen, mask)

    def text(row):
        return tokenizer.decode(row, specials=False) if tokenizer is not None else " ".join(map(str, row.tolist()))

    starts = mask.argmax(1).tolist()
    return {"iteration": trainer.iteration + 1, "prompts": [text(r[:p]) for r, p in zip(real, starts)],
            "real": [text(r[m.bool()]) for r, m in zip(real, mask)],
            "generated": [text(r[m.bool()]) for r, m in zip(gen, mask)],
            "policy_real": pol_r.cpu().double(), "policy_generated": pol_g.cpu().double(),
            "ref_real": ref_r.cpu().double(), "ref_generated": ref_g.cpu().double()}


# ---------------------------------------------------------------- the training demo


@dataclass
class SpinData:
    """The SFT data of the demo: fixed windows of the rhymes, each a prompt then its real completion."""

    tokenizer: object
    train_ids: torch.Tensor  # Long[tokens]: the training rhymes
    heldout_ids: torch.Tensor  # Long[tokens]: the held-out rhymes (never trained on)
    train_seqs: torch.Tensor  # Long[examples, prompt + completion], from train_ids
    valid_seqs: torch.Tensor  # Long[examples, prompt + completion], from heldout_ids: model selection, NLL
    prompt_len: int
    completion_len: int


def make_spin_data(n_train: int = 256, n_valid: int = 128, prompt_len: int = 8, completion_len: int = 24,
                   seed: int = 0) -> SpinData:
    """``n_train`` random windows of the training rhymes and ``n_valid`` of the held-out ones (chapter 02's split)."""
    from ..text import random_windows
    from .causal_lm import load_rhymes

    rhymes = load_rhymes()
    g = torch.Generator().manual_seed(seed)
    length = prompt_len + completion_len
    return SpinData(rhymes.tokenizer, rhymes.train_ids, rhymes.heldout_ids,
                    random_windows(rhymes.train_ids, n_train, length, g),
                    random_windows(rhymes.heldout_ids, n_valid, length, g), prompt_len, completion_len)


def pretrain(data: SpinData, steps: int = 80, seed: int = 0, lr: float = 3e-3, d_model: int = 64,
             n_layers: int = 2, progress: bool = True, device=None):
    """Chapter 02's tiny GPT briefly trained (under-fitted on purpose) on random windows of the training rhymes."""
    from ..causal_lm import causal_lm_loss
    from ..models import TinyTransformer
    from ..text import random_windows
    from ..train import train

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1000)
    length = data.prompt_len + data.completion_len
    model = TinyTransformer(data.tokenizer.vocab_size, d_model=d_model, n_heads=4, n_layers=n_layers, max_len=64)
    train(model, lambda m, x: causal_lm_loss(m(x), x), lambda step: (random_windows(data.train_ids, 32, length, g),),
          steps=steps, lr=lr, device=device, progress=progress, desc="pre-training")
    return model.eval()


def bigram_counts(rows, vocab: int) -> torch.Tensor:
    """Float[vocab, vocab]: character bigram counts over each 1-D row of ``rows`` (a list or a 2-D tensor)."""
    counts = torch.zeros(vocab * vocab, dtype=torch.float64)
    for r in rows:
        check_integer("rows", r, "token ids")
        flat = r[:-1] * vocab + r[1:]
        counts += torch.bincount(flat, minlength=vocab * vocab).double()
    return counts.view(vocab, vocab)


def bigram_tv(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation between two bigram distributions (counts, normalised here): 0.5 sum |p - q|, in [0, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape, got {shape_str(a)} and {shape_str(b)}")
    return 0.5 * float((a / a.sum() - b / b.sum()).abs().sum())


@torch.no_grad()
def sample_distance(model, data: SpinData, *, samples: int = 512, seed: int = 0, temperature: float = 1.0):
    """Total variation between the character bigrams of the model's samples and of the held-out rhymes.

    ``samples`` prompts (``prompt_len`` characters) are drawn from the held-out rhymes with the CPU generator of
    ``seed``; the model completes each with ``completion_len`` characters at ``temperature``; the bigrams of the
    completions (from the last prompt character on) are compared with the bigrams of the whole held-out text.
    Returns ``(tv, samples)``: the distance and the sampled rows (Long[samples, prompt + completion]).
    """
    from ..text import random_windows

    g = torch.Generator().manual_seed(seed)
    prompts = random_windows(data.heldout_ids, samples, data.prompt_len, g)
    rows = sample_completions(model, prompts, data.completion_len, temperature=temperature, generator=g)
    vocab = data.tokenizer.vocab_size
    mine = bigram_counts(rows[:, data.prompt_len - 1:], vocab)
    return bigram_tv(mine, bigram_counts([data.heldout_ids], vocab)), rows


@torch.no_grad()
def heldout_nll(model, data: SpinData) -> float:
    """Mean NLL per completion character of the held-out windows (``valid_seqs``): minus the log-likelihood."""
    seqs = data.valid_seqs
    mask = torch.zeros_like(seqs)
    mask[:, data.prompt_len:] = 1
    was = model.training
    model.eval()
    out = -float(sequence_logps(model(seqs), seqs, mask).sum()) / (seqs.shape[0] * data.completion_len)
    model.train(was)
    return out


def measure(model, data: SpinData, iteration: int = 0, *, distance_seeds=(101, 102), samples: int = 256) -> dict:
    """One row of the demo's table: ``iteration``, ``tv`` (``sample_distance`` per seed), ``nll`` (``heldout_nll``)."""
    tvs = [sample_distance(model, data, samples=samples, seed=s)[0] for s in distance_seeds]
    return {"iteration": iteration, "tv": tvs, "nll": heldout_nll(model, data)}


def run_arm(start_model, data: SpinData, *, iterations: int, steps_per_iteration: int, objective: str = "spin",
            ref_ema_decay: float | None = None, lam: float = 0.1, lr: float = 3e-4, batch_size: int = 32,
            seed: int = 0, distance_seeds=(101, 102), samples: int = 256, progress: bool = True,
            snapshots: list | None = None, start: dict | None = None, trainer_cls=SPINTrainer):
    """One arm of the demo: a copy of ``start_model`` trained ``iterations`` x ``steps_per_iteration`` steps by
    ``trainer_cls`` (``SPINTrainer``, or a bug zoo subclass such as ``NeverRefreshedTrainer``).

    Returns ``(model, rows)``; rows[i] (i = 0 is the start) holds ``iteration``, ``tv`` (one per distance seed),
    ``nll`` (held-out NLL per character) and ``valid_spin_loss`` where measured.  A ``snapshots`` list receives a
    ``snapshot`` at the end of each iteration.  ``start``: ``measure(start_model, ...)`` computed once and shared
    by the arms (every arm starts from the same model, so its row 0 is the same).
    """
    model = copy.deepcopy(start_model)
    trainer = trainer_cls(model, data.train_seqs, data.prompt_len, valid_seqs=data.valid_seqs, objective=objective,
                          lam=lam, lr=lr, batch_size=batch_size, steps_per_iteration=steps_per_iteration,
                          ref_ema_decay=ref_ema_decay, valid_every=10 ** 9, seed=seed, progress=progress,
                          desc=f"{objective}" + ("" if ref_ema_decay is None else f" ema {ref_ema_decay}")
                          + ("" if trainer_cls is SPINTrainer else f" ({trainer_cls.__name__})"))

    rows = [dict(start) if start is not None else measure(model, data, 0, distance_seeds=distance_seeds,
                                                          samples=samples)]
    for i in range(1, iterations + 1):
        trainer.run(i, callback=None if snapshots is None else
                    lambda t: snapshots.append(snapshot(t, tokenizer=data.tokenizer)))
        rows.append(measure(model, data, i, distance_seeds=distance_seeds, samples=samples))
        if "valid_spin_loss" in trainer.history.keys():
            rows[-1]["valid_spin_loss"] = trainer.history.last("valid_spin_loss")
    return model, rows


def spin_cases(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[dict]:
    """Inputs for checking a candidate ``spin_loss``-like function: batch of one, several, extreme log-ratios."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, scale, lam in ((1, 1.0, 0.1), (5, 3.0, 0.5), (8, 300.0, 2.0)):
        logps = [(scale * torch.randn(batch, generator=g, dtype=torch.float64) - 20).to(dtype) for _ in range(4)]
        cases.append({"policy_real_logps": logps[0], "policy_generated_logps": logps[1], "ref_real_logps": logps[2],
                      "ref_generated_logps": logps[3], "lam": lam})
    return cases



