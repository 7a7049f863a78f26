"""Demo material of chapter 09 (DPO): TRL conformance harness, the DPO pipeline on tiny models, preference data.

* ``trl_conformance``: a real ``trl.DPOTrainer`` per loss type, built offline on a tiny Llama and a character
  tokenizer made here (nothing downloaded), its ``compute_loss`` against ``dpo_loss`` on log-probs computed
  independently from plain forwards.
* ``pair_batch`` / ``dpo_batch_loss``: the DPO pipeline on ``TinyTransformer`` pairs (the right way; the bug zoo
  has the wrong ones), ``xtransformers_dpo``: seed 001's formula, optionally with its gather fixed.
* ``PreferenceData`` and the training demo helpers: synthetic preference pairs whose chosen completion has a
  property, sampling, KL to the reference, held-out metrics.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bugzoo.dpo import unshifted_gather
from ..checks import CheckResult, _error
from ..dpo import TRL_LOSS_TYPES, dpo_loss, pair_logps, sequence_logps  # pair_logps: re-exported

__all__ = [
    "CHARS",
    "conformance_settings",
    "tiny_llama",
    "char_tokenizer",
    "conformance_dataset",
    "trl_conformance",
    "dpo_batch_loss",
    "xtransformers_dpo",
    "check_dpo_step",
    "tiny_pair_models",
    "pair_logps",
    "sequence_logps_cases",
    "pretrain_lm",
    "sample",
    "PreferenceData",
    "has_property",
    "make_preferences",
    "preference_metrics",
    "train_dpo",
    "likelihood_baseline",
]

CHARS = "abcdefghijklmnopqrstuvwxyz .,!?"

#: The settings each loss type is compared under: label_smoothing / discopop_tau where the type reads them.
conformance_settings = {
    "exo_pair": {"label_smoothing": 0.1},
    "robust": {"label_smoothing": 0.1},
    "aot": {"label_smoothing": 0.1},
    "aot_unpaired": {"label_smoothing": 0.1},
    "discopop": {"discopop_tau": 0.5},
}


def _offline():
    """Hugging Face offline switches, set before any HF library is imported (they are read at import)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")


def _quiet():
    """No progress bars from ``datasets.map`` and no info logs from transformers/TRL (a chapter prints a table)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` built here: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then CHARS."""
    _offline()
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_llama(seed: int, vocab_size: int = len(CHARS) + 3):
    """A 1-layer Llama-style causal LM (hidden 16), randomly initialised from ``seed``; float32, eval mode."""
    _offline()
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so the log-ratios are far from 0
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(20.0)
    return model.eval()


def conformance_dataset():
    """Pairs that tell the variants' conventions apart: an empty prompt (IPO's length count), a one-character
    completion, unequal lengths, and equal-length pairs: the sorts of ``aot`` change the loss only when the
    policy and the reference order the pairs differently, and length differences alone would make them agree."""
    _offline()
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": ["the cat ", "", "hey ", "a b", "sing a ", "so "],
        "chosen": ["sat on the mat.", "yes!", "you", "c", "song", "big"],
        "rejected": ["ran", "no, never.", "all", "d", "tune", "wet"],
    })


def trl_conformance(loss_types=TRL_LOSS_TYPES, *, beta: float = 0.5, grads: bool = True):
    """For each loss type: a real ``DPOTrainer`` (offline, tiny Llama policy and a *different* reference) computes
    its loss on one batch; lossbook computes ``dpo_loss(...).mean()`` from log-probs of plain forwards of copies
    of the same two models.  Returns a list of dicts: loss_type, trl, lossbook, diff, grad_diff (max |grad|
    difference over the policy's parameters; None when ``grads=False``), and the trainer's
    ``rewards/chosen``, ``rewards/rejected`` metrics next to lossbook's means; ``inputs`` holds lossbook's four
    log-prob vectors and the batch's ``completion_mask``.

    TRL gets deep copies of the models: it patches their ``forward`` (``add_fused_lm_head``).
    """
    _offline()
    from trl import DPOConfig, DPOTrainer

    _quiet()
    with warnings.catch_warnings():  # transformers' FutureWarnings about renamed TrainingArguments fields
        warnings.simplefilter("ignore", FutureWarning)
        return _conformance_rows(DPOConfig, DPOTrainer, loss_types, beta, grads)


def _conformance_rows(DPOConfig, DPOTrainer, loss_types, beta, grads):
    tokenizer = char_tokenizer()
    policy, reference = tiny_llama(1), tiny_llama(2)
    dataset = conformance_dataset()
    rows = []
    for loss_type in loss_types:
        settings = conformance_settings.get(loss_type, {})
        args = DPOConfig(
            output_dir="/tmp/lossbook-dpo-conformance", report_to=[], bf16=False, fp16=False, use_cpu=True,
            loss_type=[loss_type], beta=beta, label_smoothing=settings.get("label_smoothing", 0.0),
            discopop_tau=settings.get("discopop_tau", 0.05), per_device_train_batch_size=len(dataset),
            disable_dropout=True, save_strategy="no", logging_strategy="no", seed=0,
        )
        trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=args,
                             train_dataset=dataset, processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(dataset))])
        trainer.model.train()  # compute_loss logs under "train"; dropout is off
        trl_loss = trainer.compute_loss(trainer.model, batch)
        metrics = trainer._metrics["train"]

        mine = copy.deepcopy(policy).train()
        ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        logps = sequence_logps(mine(input_ids=ids, attention_mask=attn).logits, ids, mask=comp)  # [2 * pairs]
        with torch.no_grad():
            ref_logps = sequence_logps(reference(input_ids=ids, attention_mask=attn).logits, ids, mask=comp)
        chosen, rejected = logps.chunk(2)  # the batch is [chosen; rejected]
        ref_chosen, ref_rejected = ref_logps.chunk(2)
        kwargs = {}
        if loss_type in ("ipo", "sigmoid_norm"):
            kwargs = {"chosen_lengths": comp.chunk(2)[0].sum(-1), "rejected_lengths": comp.chunk(2)[1].sum(-1)}
        elif loss_type == "sft":
            kwargs = {"chosen_scored_tokens": comp[:, 1:].chunk(2)[0].sum(-1)}
        if "discopop_tau" in settings:
            kwargs["discopop_tau"] = settings["discopop_tau"]
        losses, r_w, r_l = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta, loss_type=loss_type,
                                    label_smoothing=settings.get("label_smoothing", 0.0), **kwargs)
        ours = losses.mean()
        grad_diff = None
        if grads:
            trl_loss.backward()
            ours.backward()
            theirs = dict(trainer.model.named_parameters())
            grad_diff = max(_error(p.grad, theirs[n].grad) for n, p in mine.named_parameters())
        rows.append({
            "loss_type": loss_type, "trl": trl_loss.item(), "lossbook": ours.item(),
            "diff": abs(trl_loss.item() - ours.item()), "grad_diff": grad_diff,
            "trl_rewards_chosen": metrics["rewards/chosen"][-1], "lossbook_rewards_chosen": float(r_w.mean()),
            "trl_rewards_rejected": metrics["rewards/rejected"][-1], "lossbook_rewards_rejected": float(r_l.mean()),
            "settings": settings,
            "inputs": {"logps": [t.detach() for t in (chosen, rejected, ref_chosen, ref_rejected)],
                       "completion_mask": comp},
        })
    return rows


# ---------------------------------------------------------------- the DPO pipeline on TinyTransformer pairs


def tiny_pair_models(seed: int = 0, vocab: int = 9, batch: int = 4, seq: int = 10):
    """A policy, a *different* reference (both ``TinyTransformer(causal=True)``, d_model 16) and a batch of pairs.

    The batch (a dict) holds ``chosen_ids`` and ``rejected_ids`` Long[batch, seq] (right-padded with 0, the
    pad id; the two share a prompt of 1 to 3 tokens), ``prompt_mask`` Bool[batch, seq] (True on the prompt,
    x-transformers' convention) and ``chosen_mask``, ``rejected_mask`` (1 on completion tokens: TRL's
    ``completion_mask`` convention, the ``mask`` of ``sequence_logps``).
    """
    from ..models import TinyTransformer

    torch.manual_seed(seed)
    policy = TinyTransformer(vocab, d_model=16, n_heads=2, n_layers=1, max_len=seq).eval()
    reference = TinyTransformer(vocab, d_model=16, n_heads=2, n_layers=1, max_len=seq).eval()
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(1, 4, (batch,), generator=g)
    pos = torch.arange(seq)[None]
    prompt_mask = pos < prompt_len[:, None]  # [batch, seq]
    out = {"prompt_mask": prompt_mask}
    prompt = torch.randint(1, vocab, (batch, seq), generator=g)
    for name in ("chosen", "rejected"):
        ids = torch.randint(1, vocab, (batch, seq), generator=g)
        ids = torch.where(prompt_mask, prompt, ids)  # the same prompt for both completions
        length = prompt_len + torch.randint(1, seq - 3, (batch,), generator=g)  # [batch] prompt + completion
        ids = ids.masked_fill(pos >= length[:, None], 0)  # right padding
        out[f"{name}_ids"] = ids
        out[f"{name}_mask"] = ((pos >= prompt_len[:, None]) & (pos < length[:, None])).long()
    return policy, reference, out


def dpo_batch_loss(policy, reference, batch: dict, beta: float = 0.1, loss_type: str = "sigmoid", *,
                   concatenated: bool = True, average: bool = False, ref_logps=None, **kwargs):
    """The DPO loss of a batch of pairs: policy log-probs with gradients, reference log-probs without.

    ``ref_logps``: precomputed ``(ref_chosen, ref_rejected)`` (then ``reference`` may be None), as TRL's
    ``precompute_ref_log_probs``.  ``ipo``/``sigmoid_norm`` lengths are filled in from the masks (TRL's
    convention, the unshifted completion counts).  Returns ``(loss, chosen_rewards, rejected_rewards)``.
    """
    pw, pl = pair_logps(policy, batch, concatenated=concatenated, average=average)
    if ref_logps is None:
        with torch.no_grad():  # the reference is frozen: no graph, no gradient
            ref_logps = pair_logps(reference, batch, concatenated=concatenated, average=average)
    rw, rl = ref_logps
    if loss_type in ("ipo", "sigmoid_norm"):
        kwargs.setdefault("chosen_lengths", batch["chosen_mask"].sum(-1))
        kwargs.setdefault("rejected_lengths", batch["rejected_mask"].sum(-1))
    losses, r_w, r_l = dpo_loss(pw, pl, rw, rl, beta=beta, loss_type=loss_type, **kwargs)
    return losses.mean(), r_w, r_l


def xtransformers_dpo(policy, reference, preferred_seq, unpreferred_seq, prompt_mask, *, beta=0.1, pad_id=None,
                      fix=False):
    """Seed 001 (x-transformers ``DPO.forward``), transcribed; ``fix=True`` shifts the gather and the mask.

    As written, ``log_softmax(logits).gather(-1, seq)`` scores token t with the logits of position t, which
    predict token t + 1: the "log-prob" of each token is the model's probability that the *next* token
    repeats it.  The fix scores ``seq[:, 1:]`` with ``logits[:, :-1]`` and drops the first mask column.
    """
    def log_prob(model, seq):
        logits = model(seq)  # [batch, seq, vocab]
        log_prob = logits.log_softmax(dim=-1)
        if fix:
            return log_prob[:, :-1].gather(-1, seq[:, 1:, None]).squeeze(-1)  # [batch, seq - 1]
        return log_prob.gather(-1, seq[..., None]).squeeze(-1)  # [batch, seq]: the unshifted gather

    def masked_mean(log_probs, mask):
        if fix:
            mask = mask[:, 1:]
        log_probs = log_probs.masked_fill(~mask, 0.0)
        return log_probs.sum(-1) / mask.sum(-1).clamp(min=1e-5)

    mask_w = ~prompt_mask if pad_id is None else ~prompt_mask & (preferred_seq != pad_id)
    mask_l = ~prompt_mask if pad_id is None else ~prompt_mask & (unpreferred_seq != pad_id)
    with torch.no_grad():
        ref_w, ref_l = masked_mean(log_prob(reference, preferred_seq), mask_w), masked_mean(
            log_prob(reference, unpreferred_seq), mask_l)
    pol_w, pol_l = masked_mean(log_prob(policy, preferred_seq), mask_w), masked_mean(
        log_prob(policy, unpreferred_seq), mask_l)
    return (-F.logsigmoid(beta * ((pol_w - pol_l) - (ref_w - ref_l)))).mean()


def check_dpo_step(candidate, name: str | None = None, *, beta: float = 0.1, seeds=(0, 1, 2),
                   atol: float = 1e-6) -> CheckResult:
    """``candidate(policy, reference, batch, beta)`` -> scalar loss, against ``dpo_batch_loss`` (sigmoid):
    the loss value, the policy's gradients, and the reference's gradients (which must stay zero)."""
    value_err, grad_err = 0.0, 0.0
    for seed in seeds:
        policy, reference, batch = tiny_pair_models(seed)
        results = []
        for fn in (candidate, lambda p, r, b, beta: dpo_batch_loss(p, r, b, beta)[0]):
            p, r = copy.deepcopy(policy), copy.deepcopy(reference)
            loss = fn(p, r, batch, beta)
            loss.backward()
            grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in (*p.parameters(), *r.parameters())]
            results.append((loss.detach(), torch.cat([gr.flatten() for gr in grads])))
        value_err = max(value_err, _error(results[0][0], results[1][0]))
        grad_err = max(grad_err, _error(results[0][1], results[1][1]))
    return CheckResult(name or getattr(candidate, "__name__", "candidate"), value_err, grad_err, len(seeds), atol)


def sequence_logps_cases(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[dict]:
    """Inputs for ``sequence_logps``-shaped functions: ``(logits, labels, mask)`` with a prompt, right padding
    (labels -100), batch 1, a one-token completion, and logits near +-30."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab, scale in [(3, 8, 7, 3.0), (1, 5, 11, 3.0), (2, 3, 5, 3.0), (4, 12, 13, 30.0)]:
        logits = (scale * torch.randn(batch, seq, vocab, generator=g)).to(dtype)  # [batch, seq, vocab]
        labels = torch.randint(1, vocab, (batch, seq), generator=g)  # [batch, seq]
        prompt = torch.randint(1, max(2, seq // 2), (batch,), generator=g)
        length = torch.clamp(prompt + 1 + torch.randint(0, seq, (batch,), generator=g), max=seq)
        pos = torch.arange(seq)[None]
        labels = labels.masked_fill(pos >= length[:, None], -100)  # padding
        mask = ((pos >= prompt[:, None]) & (pos < length[:, None])).long()  # the completion
        cases.append({"logits": logits, "labels": labels, "mask": mask})
    return cases


# ---------------------------------------------------------------- the training demo


def pretrain_lm(steps: int = 300, seed: int = 0, device=None, progress: bool = True, window: int = 32):
    """Chapter 02's tiny GPT (``TinyTransformer``, d_model 64, 2 layers) trained on the shipped rhymes.

    ``steps`` AdamW steps on batches of 32 random windows of ``window`` characters (32 covers the demo's
    prompt + completion, 22 characters, at half the cost of 64).

    Returns ``(model, data)`` with ``data`` a ``lossbook.demos.causal_lm.RhymeData``.
    """
    from ..causal_lm import causal_lm_loss
    from ..device import seed_everything
    from ..models import TinyTransformer
    from ..text import random_windows
    from ..train import train
    from .causal_lm import load_rhymes

    data = load_rhymes()
    gen = seed_everything(seed)
    model = TinyTransformer(data.tokenizer.vocab_size, d_model=64, n_heads=4, n_layers=2, max_len=64, dropout=0.1)
    train(model, lambda m, x: causal_lm_loss(m(x), x), lambda step: (random_windows(data.train_ids, 32, window, gen),),
          steps=steps, lr=3e-3, weight_decay=0.1, device=device, progress=progress, desc="pre-training")
    return model.eval(), data


def sample(model, prompts: torch.Tensor, new_tokens: int, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``new_tokens`` sampled after each row of ``prompts`` Long[batch, prompt], all rows at once.

    Returns Long[batch, prompt + new_tokens]; sampling draws on the CPU ``generator``, so it is reproducible
    on any device.
    """
    from ..spin import sample_completions  # one batched sampler for the book (chapter 10 adds top-k / top-p)

    return sample_completions(model, prompts, new_tokens, temperature=temperature, generator=generator)


@dataclass
class PreferenceData:
    """Synthetic preference pairs on the rhymes: a prompt (the start of a line), two sampled completions, the
    chosen one has ``has_property`` and the rejected one does not.  Splits by prompt: train / val / test."""

    prompt_len: int
    completion_len: int
    train: dict  # each split: chosen_ids, rejected_ids, chosen_mask, rejected_mask, prompts
    val: dict
    test: dict


def has_property(text: str, word: str = "the") -> bool:
    """The property the preference rewards: the completion contains ``word``."""
    return word in text


def _line_starts(text: str, prompt_len: int) -> list[str]:
    return sorted({ln[:prompt_len] for ln in text.splitlines() if len(ln) >= prompt_len})


def make_preferences(model, data, *, prompt_len: int = 6, completion_len: int = 16, samples: int = 16,
                     word: str = "the", seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2):
    """Sample ``samples`` completions per line-start prompt from ``model`` (the reference) and pair one with the
    property against one without, for every prompt where both occur.  Prompts from the training rhymes are
    split into train / val; prompts from the held-out rhymes form the test split (never seen in pre-training;
    a held-out line start that also starts a training line is dropped, so no prompt is in two splits).
    Returns ``(PreferenceData, stats)``, stats holding the reference's rate of the property per split.
    """
    gen = torch.Generator().manual_seed(seed)
    tok = data.tokenizer
    train_starts = _line_starts(data.train_text, prompt_len)
    # a held-out line that starts like a training line ("When t") would put a training prompt in the test split
    test_starts = [s for s in _line_starts(data.heldout_text, prompt_len) if s not in set(train_starts)]
    train_prompts = [tok.encode(s) for s in train_starts]
    test_prompts = [tok.encode(s) for s in test_starts]
    order = torch.randperm(len(train_prompts), generator=gen).tolist()
    n_val = int(len(order) * val_fraction / (1 - test_fraction))
    splits = {"val": [train_prompts[i] for i in order[:n_val]], "train": [train_prompts[i] for i in order[n_val:]],
              "test": test_prompts}
    out, stats = {}, {}
    for name, prompts in splits.items():
        p = torch.stack(prompts)  # [prompts, prompt_len]
        full = sample(model, p.repeat_interleave(samples, 0), completion_len, generator=gen)  # [prompts*samples, T]
        texts = [tok.decode(row[prompt_len:], specials=False) for row in full]
        flags = torch.tensor([has_property(t, word) for t in texts]).view(len(prompts), samples)
        stats[name] = float(flags.float().mean())
        chosen, rejected, kept = [], [], []
        full = full.view(len(prompts), samples, -1)
        for i in range(len(prompts)):
            yes, no = flags[i].nonzero().flatten(), (~flags[i]).nonzero().flatten()
            if len(yes) and len(no):
                chosen.append(full[i, int(yes[0])])
                rejected.append(full[i, int(no[0])])
                kept.append(i)
        mask = torch.zeros(len(kept), prompt_len + completion_len, dtype=torch.long)
        mask[:, prompt_len:] = 1
        out[name] = {"chosen_ids": torch.stack(chosen), "rejected_ids": torch.stack(rejected),
                     "chosen_mask": mask, "rejected_mask": mask.clone(), "prompts": p}
    return PreferenceData(prompt_len, completion_len, out["train"], out["val"], out["test"]), stats


def _pair_logps_with(model, batch, gather: str):
    """The pair's log-probs with the right gather, or with seed 001's unshifted one (trained on purpose)."""
    if gather == "shifted":
        return pair_logps(model, batch)
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    return unshifted_gather(model(ids), ids, mask).chunk(2)


@torch.no_grad()
def preference_metrics(policy, reference, split: dict, *, beta: float, word: str, tokenizer, prompt_len: int,
                       completion_len: int, samples: int = 4, seed: int = 0) -> dict:
    """Held-out metrics of a policy: preference accuracy (implicit reward chosen > rejected, from correct
    log-probs), the mean implicit rewards of chosen and rejected, the rate of the property in fresh samples,
    and the KL(policy || reference) of those samples (mean of log pi - log pi_ref over the completion)."""
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in split.items() if k != "prompts"}
    pw, pl = pair_logps(policy, batch)
    rw, rl = pair_logps(reference, batch)
    r_w, r_l = beta * (pw - rw), beta * (pl - rl)
    gen = torch.Generator().manual_seed(seed)
    full = sample(policy, split["prompts"].repeat_interleave(samples, 0), completion_len, generator=gen)
    texts = [tokenizer.decode(row[prompt_len:], specials=False) for row in full]
    mask = torch.zeros_like(full)
    mask[:, prompt_len:] = 1
    full, mask = full.to(device), mask.to(device)
    kl = sequence_logps(policy(full), full, mask) - sequence_logps(reference(full), full, mask)
    return {"accuracy": float((r_w > r_l).float().mean()), "chosen_reward": float(r_w.mean()),
            "rejected_reward": float(r_l.mean()),
            "property_rate": sum(has_property(t, word) for t in texts) / len(texts),
            "kl": float(kl.mean())}


def train_dpo(reference, prefs: PreferenceData, *, loss_type: str = "sigmoid", gather: str = "shifted",
              beta: float = 0.1, steps: int = 120, lr: float = 1e-3, batch_size: int = 32, eval_every: int = 20,
              seed: int = 0, word: str = "the", tokenizer=None, progress: bool = True, **loss_kwargs):
    """DPO from ``reference`` (a frozen copy is the anchor, a trainable copy the policy) on ``prefs.train``.

    ``gather="unshifted"`` trains with seed 001's log-probs (the mistake); the metrics always use the correct
    ones.  Every ``eval_every`` steps the validation metrics are logged and the policy with the best
    validation accuracy is kept (model selection on val; test is reported once, for the kept policy).
    Returns ``(policy, history, best)``: ``history`` a ``lossbook.train.History`` with ``train_loss``,
    ``train_chosen_reward``, ``train_rejected_reward`` and the ``val_*`` metrics; ``best`` the selected step.
    """
    from tqdm.auto import tqdm

    from ..train import History

    device = next(reference.parameters()).device
    reference = copy.deepcopy(reference).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = copy.deepcopy(reference)
    for p in policy.parameters():
        p.requires_grad_(True)
    policy.eval()  # no dropout: the policy's log-probs must match the reference's at step 0
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    train = {k: v for k, v in prefs.train.items() if k != "prompts"}
    n = train["chosen_ids"].shape[0]
    history, best, best_state = History(), (-1.0, 0), None
    kw = dict(beta=beta, word=word, tokenizer=tokenizer, prompt_len=prefs.prompt_len,
              completion_len=prefs.completion_len)
    for step in tqdm(range(1, steps + 1), desc=f"DPO {loss_type}/{gather}", disable=not progress, mininterval=0.5):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        batch = {k: v[idx].to(device) for k, v in train.items()}
        pw, pl = _pair_logps_with(policy, batch, gather)
        with torch.no_grad():
            rw, rl = _pair_logps_with(reference, batch, gather)
        kwargs = dict(loss_kwargs)
        if loss_type in ("ipo", "sigmoid_norm"):
            kwargs.update(chosen_lengths=batch["chosen_mask"].sum(-1), rejected_lengths=batch["rejected_mask"].sum(-1))
        losses, r_w, r_l = dpo_loss(pw, pl, rw, rl, beta=beta, loss_type=loss_type, **kwargs)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.log(step, train_loss=loss.item(), train_chosen_reward=float(r_w.mean()),
                    train_rejected_reward=float(r_l.mean()))
        if step % eval_every == 0 or step == steps:
            metrics = preference_metrics(policy, reference, prefs.val, seed=step, **kw)
            history.log(step, **{f"val_{k}": v for k, v in metrics.items()})
            if metrics["accuracy"] > best[0]:
                best, best_state = (metrics["accuracy"], step), copy.deepcopy(policy.state_dict())
    policy.load_state_dict(best_state)
    return policy.eval(), history, best[1]


@torch.no_grad()
def likelihood_baseline(reference, split: dict) -> float:
    """An honest baseline for preference accuracy: rank each pair by the reference's own log-likelihood
    (the policy at step 0 ties every pair, implicit rewards all 0, so its strict accuracy is 0)."""
    device = next(reference.parameters()).device
    batch = {k: v.to(device) for k, v in split.items() if k != "prompts"}
    rw, rl = pair_logps(reference, batch)
    return float((rw > rl).float().mean())
