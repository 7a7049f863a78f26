"""Demo material of chapter 14 (KTO, ORPO, SimPO/CPO): TRL conformance harnesses and the training demos.

* ``kto_conformance``, ``cpo_conformance``, ``orpo_conformance``: a real TRL 1.16 trainer (``KTOTrainer``;
  ``trl.experimental`` ``CPOTrainer``, ``ORPOTrainer``), built offline on chapter 09's tiny Llama and character
  tokenizer, computes its loss on one batch; lossbook computes the same loss from plain forwards of a copy of
  the model.  Losses and the policy's gradients are compared.
* A synthetic preference task on ``TinyTransformer``: a prompt of two tokens, a completion of 1 to 8 content
  tokens (three "good", three "bad") and EOS.  A reference is trained on uniformly random completions; pairs of
  its samples are ranked by their fraction of good tokens, so quality and length are independent.
  ``train_preference`` trains DPO, CPO/SimPO, ORPO or KTO on them; ``evaluate`` samples and scores.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from dataclasses import dataclass

import torch

from ..checks import _error
from ..dpo import dpo_loss, sequence_logps
from ..kto import kto_branch_loss, kto_kl, kto_loss
from ..reference_free import AVERAGED, cpo_loss, orpo_loss
from .dpo import _offline, _quiet, char_tokenizer, conformance_dataset, tiny_llama

__all__ = ["kto_dataset", "kto_conformance", "cpo_conformance", "orpo_conformance", "CPO_SETTINGS",
           "PAD", "EOS", "GOOD", "BAD", "pretrain_reference", "make_pairs", "Pairs", "train_preference",
           "unpaired", "sample_completions", "quality", "simpo_from_logits", "simpo_from_logps",
           "kto_from_logps", "orpo_from_logps", "apo_zero_unpaired_losses", "balancing_weight", "zoo_cases",
           "length_baseline"]

# ---------------------------------------------------------------- TRL conformance


def _silent(fn):
    """Run a conformance harness without TRL's and transformers' warnings and log lines (the trainers warn about
    the tiny set-up: imbalanced weights, collator options, deprecated names): the chapter prints a table."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        trl_logger = logging.getLogger("trl")
        level = trl_logger.level
        trl_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn(*args, **kwargs)
        finally:
            trl_logger.setLevel(level)
    return wrapper


def kto_dataset():
    """Unpaired examples for ``KTOTrainer``: 7 completions, 3 desirable and 4 undesirable (an imbalance),
    an empty prompt among them; chapter 09's characters."""
    _offline()
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": ["the cat ", "", "hey ", "a b", "sing a ", "so ", "oh "],
        "completion": ["sat on the mat.", "yes!", "you", "c", "song", "big", "no, never."],
        "label": [True, False, True, False, False, True, False],
    })


def _grads_close(mine, theirs) -> float:
    other = dict(theirs.named_parameters())
    return max(_error(p.grad, other[n].grad) for n, p in mine.named_parameters() if p.grad is not None)


@_silent
def kto_conformance(loss_types=("kto", "apo_zero_unpaired"), *, beta: float = 0.5, desirable_weight: float = 1.5,
                    undesirable_weight: float = 0.8):
    """For each loss type: a real ``trl.KTOTrainer`` (tiny Llama policy, a *different* reference) runs
    ``compute_loss`` on one collated batch of ``kto_dataset`` (TRL builds the mismatched KL completions);
    lossbook computes ``kto_loss(...)[0].mean()`` from plain forwards of copies of the models, with
    ``sequence_logps`` on TRL's collated ids and masks.  Returns rows: loss_type, trl, lossbook, diff,
    grad_diff, and TRL's logged ``kl`` beside ``kto_kl``'s."""
    _offline()
    from trl import KTOConfig, KTOTrainer

    _quiet()
    tokenizer, dataset = char_tokenizer(), kto_dataset()
    policy, reference = tiny_llama(1), tiny_llama(4)  # seed 4: a positive KL estimate on this batch (kto != apo)
    rows = []
    for loss_type in loss_types:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = KTOConfig(output_dir="/tmp/lossbook-kto-conformance", report_to=[], bf16=False, fp16=False,
                             use_cpu=True, loss_type=loss_type, beta=beta, desirable_weight=desirable_weight,
                             undesirable_weight=undesirable_weight, per_device_train_batch_size=len(dataset),
                             disable_dropout=True, save_strategy="no", logging_strategy="no", seed=0)
            trainer = KTOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=args,
                                 train_dataset=dataset, processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(dataset))])
        trainer.model.train()
        trl_loss = trainer.compute_loss(trainer.model, batch)
        trl_loss.backward()

        mine = copy.deepcopy(policy).train()

        def logps(model, prefix="", batch=batch):
            ids, attn = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"]
            return sequence_logps(model(input_ids=ids, attention_mask=attn).logits, ids,
                                  mask=batch[f"{prefix}completion_mask"])

        label = batch["label"].bool()
        pol = logps(mine)
        with torch.no_grad():
            ref = logps(reference)
        if loss_type == "kto":
            with torch.no_grad():
                kl = kto_kl(logps(mine, "KL_"), logps(reference, "KL_"))
        else:
            kl = torch.zeros(())
        losses, _, _ = kto_loss(pol[label], pol[~label], ref[label], ref[~label], kl, beta=beta,
                                desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                                loss_type=loss_type)
        ours = losses.mean()
        ours.backward()
        rows.append({"trainer": "KTOTrainer", "loss_type": loss_type, "trl": trl_loss.item(), "lossbook": ours.item(),
                     "diff": abs(trl_loss.item() - ours.item()), "grad_diff": _grads_close(mine, trainer.model),
                     "trl_kl": trainer._metrics["train"]["kl"][-1], "lossbook_kl": float(kl),
                     "counts": (int(label.sum()), int((~label).sum()))})
    return rows


#: The CPOTrainer settings compared: every loss type, label smoothing where it is read, AlphaPO on two types.
CPO_SETTINGS = (
    {"loss_type": "sigmoid"}, {"loss_type": "sigmoid", "label_smoothing": 0.1}, {"loss_type": "hinge"},
    {"loss_type": "ipo"}, {"loss_type": "simpo", "simpo_gamma": 0.5}, {"loss_type": "simpo", "simpo_gamma": 1.2,
                                                                       "label_smoothing": 0.1},
    {"loss_type": "simpo", "simpo_gamma": 0.5, "alpha": 0.25}, {"loss_type": "sigmoid", "alpha": -0.5},
)


def _pad(trainer):
    return trainer.pad_token_id if hasattr(trainer, "pad_token_id") else trainer.padding_value


def _pairs_logps(trainer, model, batch, average):
    """Plain forward of ``model`` on TRL's collated ``[chosen; rejected]`` batch; log-probs by lossbook."""
    cat = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=_pad(trainer),
                                      device="cpu")
    labels = cat["concatenated_labels"]
    ids, attn = cat["concatenated_input_ids"], cat["concatenated_attention_mask"]
    logits = model(ids, attention_mask=attn, use_cache=False).logits
    mask = labels != -100
    logps = sequence_logps(logits, ids, mask=mask, average=average)  # [2 * pairs]
    return logps.chunk(2), logits, labels, torch.where(attn == 1, ids, -100)


def _nll(logits, labels):
    """TRL's ``cross_entropy_loss`` in ``concatenated_forward``: mean CE over the chosen's shifted labels."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


@_silent
def cpo_conformance(settings=CPO_SETTINGS, *, beta: float = 0.5, cpo_alpha: float = 1.0):
    """For each setting: a real ``trl.experimental.cpo.CPOTrainer`` (tiny Llama, chapter 09's pairs) runs
    ``compute_loss`` on one batch (``cpo_loss(...).mean() + cpo_alpha * nll``), and its ``cpo_loss`` method
    on lossbook's log-probs; lossbook computes ``cpo_loss(...)[0].mean()`` plus the same NLL from a plain
    forward.  Rows: trainer, loss_type, settings, trl, lossbook, diff, grad_diff, method_diff (TRL's
    ``cpo_loss`` against lossbook's on the same log-probs)."""
    _offline()
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    _quiet()
    tokenizer, dataset = char_tokenizer(), conformance_dataset()
    policy = tiny_llama(1)
    rows = []
    for setting in settings:
        kw = {k: v for k, v in setting.items() if k != "loss_type"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = CPOConfig(output_dir="/tmp/lossbook-cpo-conformance", report_to=[], bf16=False, fp16=False,
                             use_cpu=True, beta=beta, cpo_alpha=cpo_alpha, per_device_train_batch_size=len(dataset),
                             disable_dropout=True, save_strategy="no", logging_strategy="no", seed=0,
                             max_length=64, **setting)
            trainer = CPOTrainer(model=copy.deepcopy(policy), args=args, train_dataset=dataset,
                                 processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(dataset))])
        trainer.model.train()
        trl_loss = trainer.compute_loss(trainer.model, batch)
        trl_loss.backward()
        mine = copy.deepcopy(policy).train()
        (cw, cl), logits, labels, _ = _pairs_logps(trainer, mine, batch, setting["loss_type"] in AVERAGED)
        losses, r_w, r_l = cpo_loss(cw, cl, beta=beta, **setting)
        ours = losses.mean() + cpo_alpha * _nll(logits[: len(cw)], labels[: len(cw)])
        ours.backward()
        x = [t.detach().double().requires_grad_() for t in (cw, cl)]
        theirs = trainer.cpo_loss(*x)
        t_losses = theirs[0]
        mine_losses = cpo_loss(*x, beta=beta, **setting)
        t_grads = torch.autograd.grad(t_losses.sum(), x)
        m_grads = torch.autograd.grad(mine_losses[0].sum(), x)
        method_diff = max(_error(t_losses, mine_losses[0]), _error(theirs[1], mine_losses[1]),
                          _error(theirs[2], mine_losses[2]), *(_error(a, b) for a, b in zip(t_grads, m_grads)))
        rows.append({"trainer": "CPOTrainer", "loss_type": setting["loss_type"], "settings": kw,
                     "trl": trl_loss.item(), "lossbook": ours.item(), "diff": abs(trl_loss.item() - ours.item()),
                     "grad_diff": _grads_close(mine, trainer.model), "method_diff": method_diff})
    return rows


@_silent
def orpo_conformance(*, beta: float = 0.5):
    """A real ``trl.experimental.orpo.ORPOTrainer`` (tiny Llama, chapter 09's pairs): its ``compute_loss``
    (``nll - mean(beta log sigmoid(log odds))``) against lossbook's ``nll + orpo_loss(...)[0].mean()`` from a
    plain forward, and its ``odds_ratio_loss`` against ``orpo_loss`` on the same float64 log-probs."""
    _offline()
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    _quiet()
    tokenizer, dataset = char_tokenizer(), conformance_dataset()
    policy = tiny_llama(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = ORPOConfig(output_dir="/tmp/lossbook-orpo-conformance", report_to=[], bf16=False, fp16=False,
                          use_cpu=True, beta=beta, per_device_train_batch_size=len(dataset), disable_dropout=True,
                          save_strategy="no", logging_strategy="no", seed=0, max_length=64)
        trainer = ORPOTrainer(model=copy.deepcopy(policy), args=args, train_dataset=dataset,
                              processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(dataset))])
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    mine = copy.deepcopy(policy).train()
    (cw, cl), logits, _, full = _pairs_logps(trainer, mine, batch, True)
    # TRL's ORPO NLL covers the prompt too: its labels are the ids wherever the attention mask is 1
    ours = _nll(logits[: len(cw)], full[: len(cw)]) + orpo_loss(cw, cl, beta=beta)[0].mean()
    ours.backward()
    x = [t.detach().double().requires_grad_() for t in (cw, cl)]
    theirs = trainer.odds_ratio_loss(*x)
    m = orpo_loss(*x, beta=beta)
    t_grads = torch.autograd.grad(-theirs[0].sum(), x)
    m_grads = torch.autograd.grad(m[0].sum(), x)
    method_diff = max(_error(-theirs[0], m[0].float()), _error(theirs[1], m[1].float()),
                      *(_error(a, b.float()) for a, b in zip(t_grads, m_grads)))
    return [{"trainer": "ORPOTrainer", "loss_type": "odds ratio", "settings": {}, "trl": trl_loss.item(),
             "lossbook": ours.item(), "diff": abs(trl_loss.item() - ours.item()),
             "grad_diff": _grads_close(mine, trainer.model), "method_diff": method_diff}]


# ---------------------------------------------------------------- the synthetic preference task

PAD, EOS = 0, 1
PROMPT = (2, 3)  # prompt tokens
GOOD, BAD = (4, 5, 6), (7, 8, 9)
VOCAB, PROMPT_LEN, MAX_COMPLETION = 10, 2, 8
WIDTH = PROMPT_LEN + MAX_COMPLETION + 1  # prompt, completion, EOS


def _model(seed):
    from ..models import TinyTransformer

    torch.manual_seed(seed)
    return TinyTransformer(VOCAB, d_model=32, n_heads=2, n_layers=2, max_len=WIDTH)


def _batch_from(prompts, completions):
    """Right-padded ``ids`` [n, WIDTH] and the completion ``mask`` (content tokens and EOS)."""
    n = len(completions)
    ids = torch.full((n, WIDTH), PAD, dtype=torch.long)
    mask = torch.zeros(n, WIDTH, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = list(p) + list(c) + [EOS]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, PROMPT_LEN: len(row)] = 1
    return ids, mask


def _random_completions(n, g):
    lengths = torch.randint(1, MAX_COMPLETION + 1, (n,), generator=g)
    content = torch.tensor(GOOD + BAD)
    prompts = [[PROMPT[int(j)] for j in torch.randint(0, 2, (PROMPT_LEN,), generator=g)] for _ in range(n)]
    comps = [content[torch.randint(0, 6, (int(L),), generator=g)].tolist() for L in lengths]
    return prompts, comps


def pretrain_reference(seed: int = 0, steps: int = 150, progress: bool = True):
    """The reference: ``TinyTransformer`` (d_model 32, 2 layers) trained to imitate uniformly random
    completions (length 1 to 8, content tokens uniform), ``steps`` Adam steps of 64 sequences."""
    from tqdm.auto import tqdm

    model = _model(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in tqdm(range(steps), desc="reference", disable=not progress):
        ids, mask = _batch_from(*_random_completions(64, g))
        loss = -sequence_logps(model(ids), ids, mask).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def sample_completions(model, n: int, g: torch.Generator, temperature: float = 1.0):
    """``n`` prompts, the completions ``model`` samples after them (content tokens, EOS cut) and whether each
    finished: EOS within 9 tokens (8 content tokens and EOS at most).  An unfinished one is cut at 8."""
    prompts = torch.tensor([[PROMPT[int(j)] for j in torch.randint(0, 2, (PROMPT_LEN,), generator=g)]
                            for _ in range(n)])
    ids = prompts
    for _ in range(MAX_COMPLETION + 1):
        logits = model(ids)[:, -1].float() / temperature
        logits[:, [PAD, *PROMPT]] = -torch.inf  # only content tokens and EOS are sampled
        nxt = torch.multinomial(logits.softmax(-1), 1, generator=g)
        ids = torch.cat([ids, nxt], 1)
    comps, finished = [], []
    for row in ids[:, PROMPT_LEN:].tolist():
        end = row.index(EOS) if EOS in row else None
        comps.append(row[:MAX_COMPLETION] if end is None else row[:end])
        finished.append(end is not None)
    return prompts.tolist(), comps, finished


def quality(completion, finished: bool = True) -> float:
    """A sample's score: the fraction of good tokens; 0 for an empty or an unfinished completion."""
    if not finished or not completion:
        return 0.0
    return sum(t in GOOD for t in completion) / len(completion)


@dataclass
class Pairs:
    """One split of preference pairs: ``chosen_ids`` etc. in ``pair_logps``'s batch format, the lengths."""
    batch: dict
    chosen_len: torch.Tensor
    rejected_len: torch.Tensor

    def __len__(self):
        return len(self.chosen_len)

    def take(self, index):
        return Pairs({k: v[index] for k, v in self.batch.items()}, self.chosen_len[index], self.rejected_len[index])


def make_pairs(reference, n: int, seed: int):
    """``n`` pairs of the reference's samples for the same prompt, the one with the larger fraction of good
    tokens chosen (ties re-drawn); quality is independent of length, so the chosen is not longer on average."""
    g = torch.Generator().manual_seed(seed)
    prompts, chosen, rejected = [], [], []
    while len(chosen) < n:
        p, a, fa = sample_completions(reference, 2 * n, g)
        _, b, fb = sample_completions(reference, 2 * n, g)
        for pi, x, y, ok in zip(p, a, b, (u and v for u, v in zip(fa, fb))):
            qx, qy = quality(x), quality(y)
            if not ok or len(x) == 0 or len(y) == 0 or qx == qy or len(chosen) == n:
                continue
            w, l_ = (x, y) if qx > qy else (y, x)
            prompts.append(pi)
            chosen.append(w)
            rejected.append(l_)
    cw, mw = _batch_from(prompts, chosen)
    cl, ml = _batch_from(prompts, rejected)
    batch = {"chosen_ids": cw, "chosen_mask": mw, "rejected_ids": cl, "rejected_mask": ml}
    return Pairs(batch, torch.tensor([len(c) for c in chosen]), torch.tensor([len(r) for r in rejected]))


def unpaired(pairs: Pairs, desirable_every: int = 1):
    """Thumbs-up / thumbs-down examples from pairs: every chosen completion is desirable, every rejected one
    undesirable; ``desirable_every=5`` keeps one desirable example in five (a 1:5 imbalance)."""
    keep = torch.arange(len(pairs)) % desirable_every == 0
    b = pairs.batch
    return {"desirable_ids": b["chosen_ids"][keep], "desirable_mask": b["chosen_mask"][keep],
            "undesirable_ids": b["rejected_ids"], "undesirable_mask": b["rejected_mask"]}


def _logps(model, ids, mask, average=False):
    return sequence_logps(model(ids), ids, mask, average=average)


def _step_loss(method, policy, reference, batch, cfg):
    """One batch's loss for ``method`` in dpo, cpo (any ``cpo_loss`` settings), orpo, kto."""
    if method == "kto":
        d_ids, d_mask, u_ids, u_mask = batch
        ids, mask = torch.cat([d_ids, u_ids]), torch.cat([d_mask, u_mask])
        pol = _logps(policy, ids, mask)
        with torch.no_grad():
            ref = _logps(reference, ids, mask)
            # mismatched pairs: each prompt with the next example's completion (TRL shifts by one)
            kl_ids = torch.cat([ids[:, :PROMPT_LEN], ids.roll(1, 0)[:, PROMPT_LEN:]], 1)
            kl_mask = mask.roll(1, 0)
            kl = kto_kl(_logps(policy, kl_ids, kl_mask), _logps(reference, kl_ids, kl_mask))
        n = len(d_ids)
        losses = kto_loss(pol[:n], pol[n:], ref[:n], ref[n:], kl, **cfg)[0]
        return losses.mean()
    b = batch
    average = method == "orpo" or (method == "cpo" and cfg.get("loss_type", "sigmoid") in AVERAGED)
    ids = torch.cat([b["chosen_ids"], b["rejected_ids"]])
    mask = torch.cat([b["chosen_mask"], b["rejected_mask"]])
    pw, pl = _logps(policy, ids, mask, average=average).chunk(2)
    if method == "dpo":
        with torch.no_grad():
            rw, rl = _logps(reference, ids, mask).chunk(2)
        return dpo_loss(pw, pl, rw, rl, **cfg)[0].mean()
    if method == "cpo":
        return cpo_loss(pw, pl, **cfg)[0].mean()
    if method == "orpo":
        nll = -_logps(policy, b["chosen_ids"], b["chosen_mask"]).sum() / b["chosen_mask"][:, 1:].sum()
        return nll + orpo_loss(pw, pl, **cfg)[0].mean()
    raise ValueError(f"unknown method {method!r}")


def train_preference(reference, data, method: str, *, steps: int = 60, batch_size: int = 32, lr: float = 1e-3,
                     seed: int = 0, val: Pairs | None = None, eval_every: int = 20, progress: bool = True,
                     desc: str | None = None, **cfg):
    """Train a copy of ``reference`` with ``method`` (dpo, cpo, orpo on ``Pairs``; kto on ``unpaired``'s dict)
    for ``steps`` Adam steps; every ``eval_every`` steps the validation pairs' quality of samples is measured
    and the best step's weights kept (the validation split selects).  Returns ``(policy, history)``."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    policy = copy.deepcopy(reference).train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    history = {"step": [], "val_quality": [], "val_length": [], "val_degenerate": []}
    best, best_score = copy.deepcopy(policy.state_dict()), -1.0
    for step in tqdm(range(1, steps + 1), desc=desc or method, disable=not progress):
        if method == "kto":
            nd, nu = len(data["desirable_ids"]), len(data["undesirable_ids"])
            share = nd / (nd + nu)  # the batch mixes both in the data's proportion
            k = max(1, round(batch_size * share))
            di = torch.randint(0, nd, (k,), generator=g)
            ui = torch.randint(0, nu, (batch_size - k,), generator=g)
            batch = (data["desirable_ids"][di], data["desirable_mask"][di], data["undesirable_ids"][ui],
                     data["undesirable_mask"][ui])
        else:
            idx = torch.randint(0, len(data), (batch_size,), generator=g)
            batch = data.take(idx).batch
        loss = _step_loss(method, policy, reference, batch, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if val is not None and (step % eval_every == 0 or step == steps):
            m = evaluate(policy, reference, val, method, seed=seed + 1000, samples=256, **cfg)
            history["step"].append(step)
            history["val_quality"].append(m["quality"])
            history["val_length"].append(m["length"])
            history["val_degenerate"].append(m["empty"] + m["unfinished"])
            if m["quality"] > best_score:
                best_score, best = m["quality"], copy.deepcopy(policy.state_dict())
    policy.load_state_dict(best)
    return policy.eval(), history


def length_baseline(pairs: Pairs) -> float:
    """Test accuracy of "the shorter completion wins" (a tie counts one half): what a length bias alone scores."""
    shorter = (pairs.chosen_len < pairs.rejected_len).float() + 0.5 * (pairs.chosen_len == pairs.rejected_len).float()
    return float(shorter.mean())


@torch.no_grad()
def evaluate(policy, reference, pairs: Pairs, method: str = "dpo", *, seed: int = 0, samples: int = 512, **cfg):
    """Metrics of ``policy``: ``quality`` and ``length`` of its samples (mean fraction of good tokens, mean
    completion length), and ``accuracy`` on ``pairs``: the share ranked correctly by the method's own
    implicit reward (summed log-ratio for dpo and kto; the log-prob cpo/orpo train on)."""
    policy.eval()
    g = torch.Generator().manual_seed(seed)
    _, comps, finished = sample_completions(policy, samples, g)
    b = pairs.batch
    if method in ("dpo", "kto"):
        rw = _logps(policy, b["chosen_ids"], b["chosen_mask"]) - _logps(reference, b["chosen_ids"], b["chosen_mask"])
        rl = (_logps(policy, b["rejected_ids"], b["rejected_mask"])
              - _logps(reference, b["rejected_ids"], b["rejected_mask"]))
    else:
        average = method == "orpo" or cfg.get("loss_type", "sigmoid") in AVERAGED
        rw = _logps(policy, b["chosen_ids"], b["chosen_mask"], average)
        rl = _logps(policy, b["rejected_ids"], b["rejected_mask"], average)
    return {"quality": sum(map(quality, comps, finished)) / samples, "length": sum(map(len, comps)) / samples,
            "unfinished": 1 - sum(finished) / samples, "empty": sum(not c for c in comps) / samples,
            "accuracy": float((rw > rl).float().mean())}


# ---------------------------------------------------------------- the correct pipelines the bug zoo is checked against


def simpo_from_logits(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                      beta, simpo_gamma):
    """SimPO's per-pair losses from the logits: average log-probs (``sequence_logps(average=True)``)."""
    u_w = sequence_logps(chosen_logits, chosen_ids, chosen_mask, average=True)  # [batch]
    u_l = sequence_logps(rejected_logits, rejected_ids, rejected_mask, average=True)  # [batch]
    return cpo_loss(u_w, u_l, beta=beta, loss_type="simpo", simpo_gamma=simpo_gamma)[0]


def simpo_from_logps(policy_chosen_logps, policy_rejected_logps, beta, simpo_gamma):
    return cpo_loss(policy_chosen_logps, policy_rejected_logps, beta=beta, loss_type="simpo",
                    simpo_gamma=simpo_gamma)[0]


def kto_from_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                   policy_kl_logps, ref_kl_logps, beta):
    """KTO's losses with the reference point from the mismatched pairs' log-probs (``kto_kl``)."""
    kl = kto_kl(policy_kl_logps, ref_kl_logps)
    return kto_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, kl,
                    beta=beta)[0]


def orpo_from_logps(policy_chosen_logps, policy_rejected_logps, beta):
    return orpo_loss(policy_chosen_logps, policy_rejected_logps, beta=beta)[0]


def apo_zero_unpaired_losses(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                             beta):
    """Exercise 2's reference: ``kto_loss``'s unweighted ``apo_zero_unpaired`` losses, desirable then
    undesirable (its ``kl`` is not read)."""
    kl = torch.zeros((), dtype=policy_chosen_logps.dtype)
    return kto_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, kl, beta=beta,
                    loss_type="apo_zero_unpaired")[0]


def balancing_weight(values: torch.Tensor) -> torch.Tensor:
    """Exercise 3's reference, by autograd (float64) through ``kto_loss``'s ``kto`` branch, not sympy:
    ``values`` = (n_D, n_U, w_U, beta, d).  Every log-ratio moves by c; the desirable examples sit at z0 and
    the undesirable ones at z0 - d.  The mean loss's slope in c at c = 0 is linear in the desirable weight
    w_D: returns the w_D at which it is 0."""
    n_d, n_u, w_u, beta, d = values.double().unbind()
    z0, zero = torch.tensor(0.3, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)

    def slope(w_d):
        c = torch.zeros((), dtype=torch.float64, requires_grad=True)
        chosen, rejected = kto_branch_loss(z0 + c + zero, z0 - d + c + zero, zero, zero, z0, beta)
        mean = (n_d * w_d * chosen.sum() + n_u * w_u * rejected.sum()) / (n_d + n_u)
        return torch.autograd.grad(mean, c)[0]

    s0, s1 = slope(0.0), slope(1.0)
    return -s0 / (s1 - s0)


def zoo_cases(kind: str, seed: int = 0) -> list[dict]:
    """Cases for the bug zoo and the exercises: ``kind`` in simpo_logits, simpo, kto, orpo.  Each list
    holds a batch of one and edge cases: unequal lengths (simpo_logits), a negative KL estimate and
    unpaired counts (kto), average log-probs near 0 in float32 (orpo)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "simpo_logits":
        cases = []
        for batch, seq, vocab in ((1, 6, 5), (4, 9, 7), (3, 12, 6)):
            case = {}
            for side in ("chosen", "rejected"):
                case[f"{side}_logits"] = 2 * torch.randn(batch, seq, vocab, generator=g)
                case[f"{side}_ids"] = torch.randint(0, vocab, (batch, seq), generator=g)
                length = torch.randint(2, seq, (batch, 1), generator=g)  # unequal completion lengths
                pos = torch.arange(seq)[None]
                case[f"{side}_mask"] = ((pos >= 1) & (pos <= length)).long()
            cases.append({**case, "beta": 2.0, "simpo_gamma": 0.8})
        return cases
    if kind == "simpo":
        return [{"policy_chosen_logps": -3 * torch.rand(n, generator=g), "policy_rejected_logps":
                 -3 * torch.rand(n, generator=g), "beta": b, "simpo_gamma": gm}
                for n, b, gm in ((1, 2.0, 0.5), (6, 2.5, 1.4), (5, 10.0, 3.0))]
    if kind == "kto":
        cases = []
        for nd, nu, shift in ((1, 1, 0.5), (2, 5, 2.0), (4, 3, -1.5)):  # shift < 0: a negative KL estimate
            n = nd + nu
            cases.append({"policy_chosen_logps": -10 + 3 * torch.randn(nd, generator=g),
                          "policy_rejected_logps": -10 + 3 * torch.randn(nu, generator=g),
                          "ref_chosen_logps": -10 + 3 * torch.randn(nd, generator=g),
                          "ref_rejected_logps": -10 + 3 * torch.randn(nu, generator=g),
                          "policy_kl_logps": -12 + shift + 0.1 * torch.randn(n, generator=g),
                          "ref_kl_logps": -12 + 0.1 * torch.randn(n, generator=g), "beta": 0.5})
        return cases
    if kind == "orpo":
        near_zero = torch.tensor([-1e-7, -3e-6, -0.5, -2.0])  # float32: exp(-1e-7) rounds to 1
        return [{"policy_chosen_logps": -2 * torch.rand(1, generator=g) - 0.1,
                 "policy_rejected_logps": -2 * torch.rand(1, generator=g) - 0.1, "beta": 0.1},
                {"policy_chosen_logps": -3 * torch.rand(6, generator=g) - 1e-3,
                 "policy_rejected_logps": -3 * torch.rand(6, generator=g) - 1e-3, "beta": 0.5},
                {"policy_chosen_logps": near_zero, "policy_rejected_logps": near_zero.flip(0), "beta": 0.2}]
    raise ValueError(f"kind must be simpo_logits, simpo, kto or orpo, got {kind!r}")
