"""Demo material of chapter 13 (policy-gradient losses): the TRL conformance harness and the GRPO training demo.

* ``trl_conformance``: a real ``trl.GRPOTrainer`` per loss type (and beta), built offline on chapter 09's tiny Llama
  and character tokenizer (nothing downloaded, no vLLM, ``bf16=False``); its ``_compute_loss`` on a hand-made batch
  of unequal-length completions against ``policy_gradient_loss`` on log-probs of a plain forward of a copy of the
  same model, values and gradients; ``trl_accumulation`` the same with two accumulation steps.
* ``trl_advantages``: the advantages of a real ``GRPOTrainer`` and ``RLOOTrainer`` generation step (the model
  samples, a Python reward scores) against ``group_advantages`` / ``rloo_advantages`` of the same rewards.
* The training demo (``ArithmeticTask``, ``sft_start``, ``train_grpo``, ``evaluate``, ``best_of_n``): a tiny GPT
  learns single-digit sums, with a verifiable reward.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import shutil
import tempfile
import warnings

import torch

from ..checks import _error
from ..policy_gradient import TRL_LOSS_TYPES, completion_logps, group_advantages, policy_gradient_loss, rloo_advantages
from .dpo import _offline, _quiet, char_tokenizer, tiny_llama

__all__ = ["conformance_settings", "conformance_batch", "trl_conformance", "trl_accumulation", "trl_advantages",
           "char_reward"]

#: The settings each loss type is compared under (beyond beta): clip-higher, a two-sided cap, CISPO's cap, GSPO's
#: sequence-level ratio for luspo (the level TRL asks for it).
conformance_settings = {
    "grpo": {"epsilon_high": 0.28, "delta": 1.5},
    "bnpo": {"epsilon_high": 0.28},
    "dr_grpo": {"max_completion_length": 9},
    "dapo": {"epsilon_high": 0.28},
    "cispo": {"epsilon_high": 1.1},
    "sapo": {},
    "luspo": {"importance_sampling_level": "sequence"},
    "vespo": {},
}


def char_reward(completions, **kwargs):
    """The conformance runs' Python reward: how many vowels a completion holds (any function of the text would do)."""
    return [float(sum(c.count(v) for v in "aeiou")) for c in completions]


def _silence():
    """chapter 09's ``_quiet`` and no progress bars from saving and loading models (a checked cell prints verdicts)."""
    _quiet()
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


@contextlib.contextmanager
def _trl_offline():
    """Offline, quiet, warnings off; yields the path of the saved tiny policy every trainer here is built from."""
    _offline()
    _silence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield _saved_policy()


def _grad_diff(mine, model) -> float:
    """The largest |gradient difference| over the parameters of two copies of one model."""
    theirs = dict(model.named_parameters())
    return max(_error(p.grad, theirs[n].grad) for n, p in mine.named_parameters())


@functools.cache
def _saved_policy(seed: int = 1) -> str:
    """Chapter 09's tiny Llama and tokenizer saved to a temporary folder (GRPOTrainer builds its reference from it),
    once per process; the trainers' output folders go inside it, and it is removed at exit."""
    folder = tempfile.mkdtemp(prefix="lossbook-grpo-")
    atexit.register(shutil.rmtree, folder, True)
    tiny_llama(seed).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def conformance_batch(seed: int = 0, batch: int = 8, num_generations: int = 4):
    """A hand-made GRPO batch: left-padded prompts of 1-4 tokens, right-padded completions of 1-8 tokens (one of
    each extreme), rewards with ties, their group advantages; old and reference log-probs are set later."""
    g = torch.Generator().manual_seed(seed)
    p_len = torch.tensor([1, 4, 2, 3, 4, 1, 2, 3])[:batch]
    c_len = torch.tensor([8, 1, 5, 3, 2, 8, 6, 4])[:batch]
    P, C = int(p_len.max()), int(c_len.max()) + 1  # one column of padding after the longest completion
    prompt_ids = torch.zeros(batch, P, dtype=torch.long)
    prompt_mask = torch.zeros(batch, P, dtype=torch.long)
    completion_ids = torch.zeros(batch, C, dtype=torch.long)
    completion_mask = torch.zeros(batch, C, dtype=torch.long)
    for i in range(batch):
        prompt_ids[i, P - p_len[i]:] = torch.randint(3, 34, (int(p_len[i]),), generator=g)  # left padding
        prompt_mask[i, P - p_len[i]:] = 1
        completion_ids[i, : c_len[i]] = torch.randint(3, 34, (int(c_len[i]),), generator=g)
        completion_mask[i, : c_len[i]] = 1
    rewards = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 3.0, 0.0])[:batch]
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": group_advantages(rewards, num_generations)}


def _trainer(path, loss_type, beta, *, accumulation=1, batch=8, num_generations=4, **settings):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="out-", dir=path), report_to=[], bf16=False, fp16=False,
        use_cpu=True, per_device_train_batch_size=batch // accumulation, gradient_accumulation_steps=accumulation,
        num_generations=num_generations, max_completion_length=settings.pop("max_completion_length", 9),
        loss_type=loss_type, beta=beta, disable_dropout=True, save_strategy="no", logging_strategy="no", seed=0,
        model_init_kwargs={"dtype": torch.float32}, **settings,
    )
    dataset = Dataset.from_dict({"prompt": ["ab", "cd"]})
    trainer = GRPOTrainer(model=path, reward_funcs=char_reward, args=args, train_dataset=dataset,
                          processing_class=char_tokenizer())
    trainer.model.train()  # _compute_loss logs under "train"; dropout is off
    trainer.current_gradient_accumulation_steps = accumulation  # what Trainer's loop sets before each step
    return trainer


def _fresh_copy(model):
    """The policy again (chapter 09's tiny Llama, seed 1, what ``_saved_policy`` saved), unpatched, in train mode:
    a deep copy would keep TRL's patched forward, which still runs the trainer's own weights."""
    mine = tiny_llama(1).train()
    theirs = dict(model.named_parameters())
    assert all(torch.equal(p, theirs[n]) for n, p in mine.named_parameters())  # the same weights
    return mine


def _with_old_and_ref(batch, model, noise: float = 0.15, seed: int = 0):
    """The batch with ``old_per_token_logps`` (the model's own, shifted by noise: ratios around 1, some clipped),
    ``ref_per_token_logps`` (likewise) and ``num_items_in_batch``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logps = completion_logps(model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                 batch["completion_mask"])
    out = dict(batch)
    out["old_per_token_logps"] = logps + noise * torch.randn(logps.shape, generator=g)
    out["ref_per_token_logps"] = logps + 2 * noise * torch.randn(logps.shape, generator=g)
    out["num_items_in_batch"] = batch["completion_mask"].sum()
    return out


def _lossbook_kwargs(loss_type, beta, batch, settings):
    kw = {k: v for k, v in settings.items()}
    kw.update(loss_type=loss_type, beta=beta)
    if beta:
        kw["ref_per_token_logps"] = batch["ref_per_token_logps"]
    if loss_type in ("dapo", "cispo", "vespo"):
        kw["num_items_in_batch"] = batch["num_items_in_batch"]
    return kw


def trl_conformance(loss_types=TRL_LOSS_TYPES, betas=(0.0, 0.04)):
    """For each loss type and beta: a real ``GRPOTrainer``'s ``_compute_loss`` on one hand-made batch against
    ``policy_gradient_loss`` on a plain forward of a copy of the same model.  Returns a list of dicts: loss_type,
    beta, trl, lossbook, diff, grad_diff (max |grad| difference over the parameters), grad_norm, settings."""
    with _trl_offline() as path:
        rows = []
        for loss_type in loss_types:
            for beta in betas:
                settings = dict(conformance_settings[loss_type])
                trainer = _trainer(path, loss_type, beta, **settings)
                model = trainer.model
                mine = _fresh_copy(model)
                batch = _with_old_and_ref(conformance_batch(), mine)
                trl_loss = trainer._compute_loss(model, batch)
                trl_loss.backward()
                logps = completion_logps(mine, batch["prompt_ids"], batch["prompt_mask"],
                                         batch["completion_ids"], batch["completion_mask"])
                ours = policy_gradient_loss(logps, batch["old_per_token_logps"], batch["advantages"],
                                            batch["completion_mask"], **_lossbook_kwargs(loss_type, beta, batch,
                                                                                          settings))
                ours.backward()
                grad_diff = _grad_diff(mine, model)
                grad_norm = max(float(p.grad.abs().max()) for p in mine.parameters())
                rows.append({"loss_type": loss_type, "beta": beta, "trl": trl_loss.item(), "lossbook": ours.item(),
                             "diff": abs(trl_loss.item() - ours.item()), "grad_diff": grad_diff,
                             "grad_norm": grad_norm, "settings": settings})
    return rows


def trl_accumulation(loss_types=("dapo", "bnpo", "grpo")):
    """Two accumulation steps: a ``GRPOTrainer`` with ``gradient_accumulation_steps=2`` computes each half of the
    batch (dapo with the global ``num_items_in_batch``, as its generation step hands it over); the two losses are
    summed as backward accumulates them.  Returns per loss type: trl (the summed micro-batch losses), full
    (``policy_gradient_loss`` on the whole batch), micro (lossbook on the halves, summed; divided by 2 for the
    types TRL divides by the step count), diff, grad_diff (TRL's accumulated gradients against lossbook's
    full-batch ones)."""
    with _trl_offline() as path:
        rows = []
        for loss_type in loss_types:
            settings = dict(conformance_settings[loss_type])
            trainer = _trainer(path, loss_type, 0.0, accumulation=2, **settings)
            model = trainer.model
            mine = _fresh_copy(model)
            batch = _with_old_and_ref(conformance_batch(), mine)
            halves = [{k: (v[i * 4:(i + 1) * 4] if torch.is_tensor(v) and v.dim() else v) for k, v in batch.items()}
                      for i in range(2)]
            trl_loss = 0.0
            for half in halves:
                step = trainer._compute_loss(model, half)
                step.backward()
                trl_loss += step.item()
            kw = _lossbook_kwargs(loss_type, 0.0, batch, settings)

            def lb(b, mine=mine, kw=kw):
                logps = completion_logps(mine, b["prompt_ids"], b["prompt_mask"], b["completion_ids"],
                                         b["completion_mask"])
                return policy_gradient_loss(logps, b["old_per_token_logps"], b["advantages"], b["completion_mask"],
                                            **kw)
            full = lb(batch)
            full.backward()
            with torch.no_grad():
                micro = sum(lb(h).item() for h in halves)
            micro = micro if loss_type == "dapo" else micro / 2
            grad_diff = _grad_diff(mine, model)
            rows.append({"loss_type": loss_type, "trl": trl_loss, "full": full.item(), "micro": micro,
                         "diff": abs(trl_loss - full.item()), "grad_diff": grad_diff})
    return rows


def trl_advantages(scale_rewards=("group", "batch", "none"), normalize=(False, True), num_generations: int = 4):
    """One generation step of a real ``GRPOTrainer`` (per ``scale_rewards``) and ``RLOOTrainer`` (per
    ``normalize_advantages``): the tiny model samples 4 completions of each of 2 prompts, ``char_reward`` scores
    the decoded text here again; returns rows: trainer, setting, max |advantage difference|, the rewards."""
    _offline()
    _silence()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _saved_policy()
        tok = char_tokenizer()
        dataset = Dataset.from_dict({"prompt": ["ab", "cd"]})
        prompts = [dataset[0]] * num_generations + [dataset[1]] * num_generations
        common = dict(report_to=[], bf16=False, fp16=False, use_cpu=True, per_device_train_batch_size=8,
                      num_generations=num_generations, max_completion_length=12, save_strategy="no",
                      logging_strategy="no", seed=0, beta=0.0, model_init_kwargs={"dtype": torch.float32})
        settings = [("GRPOTrainer", s, GRPOConfig, GRPOTrainer, {"scale_rewards": s}) for s in scale_rewards]
        settings += [("RLOOTrainer", n, RLOOConfig, RLOOTrainer, {"normalize_advantages": n}) for n in normalize]
        for name, setting, Config, Trainer, extra in settings:
            args = Config(output_dir=tempfile.mkdtemp(prefix="out-", dir=path), **common, **extra)
            trainer = Trainer(model=path, reward_funcs=char_reward, args=args, train_dataset=dataset,
                              processing_class=tok)
            trainer.model.train()
            torch.manual_seed(0)
            out = trainer._generate_and_score_completions(prompts)
            texts = tok.batch_decode(out["completion_ids"] * out["completion_mask"], skip_special_tokens=True)
            rewards = torch.tensor(char_reward(texts))
            if name == "GRPOTrainer":
                ours = group_advantages(rewards, num_generations, scale_rewards=setting)
            else:
                ours = rloo_advantages(rewards, num_generations, normalize_advantages=setting)
            rows.append({"trainer": name, "setting": setting, "diff": float((ours - out["advantages"]).abs().max()),
                         "rewards": rewards.tolist(), "spread": float(rewards.view(-1, num_generations).std(1).min())})
    return rows


# ---------------------------------------------------------------- the training demo: keep the a's


class KeepTheAs:
    """The demo's verifiable task: a prompt of ``n`` letters from {a, b} then "=", the answer its a's, then <eos>.

    Token ids: <pad> 0, <eos> 1, "a" 2, "b" 3, "=" 4.  ``reward(completion)`` is 1.0 when the completion up to
    its first <eos> is exactly the prompt's a's (and it has an <eos>), else 0.0: a Python function checks it.
    The 2**n prompts are split at random (``split_seed``) into train / validation / test.
    """

    VOCAB = ("<pad>", "<eos>", "a", "b", "=")
    PAD, EOS, A, B, EQ = range(5)

    def __init__(self, n: int = 8, max_completion_length: int = 24, split_seed: int = 0):
        self.n, self.max_completion_length = n, max_completion_length
        g = torch.Generator().manual_seed(split_seed)
        every = torch.tensor([[(k >> i) & 1 for i in range(n)] for k in range(2 ** n)]) + self.A  # [2**n, n]
        every = every[torch.randperm(2 ** n, generator=g)]
        prompts = torch.cat([every, torch.full((2 ** n, 1), self.EQ)], dim=1)  # [2**n, n + 1]
        k = 2 ** n // 4
        self.splits = {"train": prompts[2 * k:], "val": prompts[:k], "test": prompts[k:2 * k]}

    def answer(self, prompt: torch.Tensor) -> list[int]:
        return [self.A] * int((prompt == self.A).sum()) + [self.EOS]

    def reward(self, prompt: torch.Tensor, completion: torch.Tensor) -> float:
        tokens = completion.tolist()
        if self.EOS not in tokens:
            return 0.0
        return float(tokens[: tokens.index(self.EOS) + 1] == self.answer(prompt))

    def sft_batch(self, size: int, generator: torch.Generator, ramble: float = 0.3):
        """Teacher-forcing rows [size, n + 1 + max_completion_length] and their mask (the scored answer tokens).

        A fraction ``ramble`` of the rows is a weak model's habit, kept in the SFT data on purpose: random letters
        up to the length limit, no <eos> (a truncated, wrong completion)."""
        rows = self.splits["train"][torch.randint(len(self.splits["train"]), (size,), generator=generator)]
        rambles = torch.rand(size, generator=generator) < ramble
        width = self.n + 1 + self.max_completion_length
        ids = torch.zeros(size, width, dtype=torch.long)
        mask = torch.zeros(size, width, dtype=torch.long)
        for i, p in enumerate(rows):
            if rambles[i]:
                tail = torch.randint(self.A, self.B + 1, (self.max_completion_length,), generator=generator).tolist()
            else:
                tail = self.answer(p)
            full = p.tolist() + tail
            ids[i, : len(full)] = torch.tensor(full)
            mask[i, self.n + 1: len(full)] = 1  # the completion (and its <eos>) is scored
        return ids, mask


@torch.no_grad()
def sample_completions(model, prompts: torch.Tensor, task: KeepTheAs, generator: torch.Generator,
                       temperature: float = 1.0):
    """Completions Long[batch, max_completion_length] and their mask (1 up to and including the first <eos>, as
    TRL's completion_mask), sampled on the CPU generator (reproducible on any device)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = prompts.to(device)
    for _ in range(task.max_completion_length):
        logits = model(ids)[:, -1].float().cpu()  # [batch, vocab]
        probs = torch.softmax(logits / temperature, -1) if temperature > 0 else None
        nxt = logits.argmax(-1) if probs is None else torch.multinomial(probs, 1, generator=generator)[:, 0]
        ids = torch.cat([ids, nxt.to(device)[:, None]], dim=1)
    model.train(was)
    completions = ids[:, prompts.shape[1]:].cpu()
    is_eos = completions == task.EOS
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first <eos>
    return completions, (~after).long()


def evaluate(model, task: KeepTheAs, split: str, *, samples: int = 8, seed: int = 0) -> dict:
    """``samples`` completions per prompt of ``split`` at temperature 1: reward (mean), pass@samples (best-of-n:
    any sample correct), greedy accuracy, and the mean length (tokens, <eos> included) of the wrong samples."""
    prompts = task.splits[split]
    g = torch.Generator().manual_seed(1000 + seed)
    rep = prompts.repeat_interleave(samples, dim=0)
    comp, mask = sample_completions(model, rep, task, g)
    rewards = torch.tensor([task.reward(p, c) for p, c in zip(rep, comp)]).view(-1, samples)
    lengths = mask.sum(-1).float().view(-1, samples)
    wrong = rewards == 0
    greedy, _ = sample_completions(model, prompts, task, g, temperature=0)
    greedy_acc = sum(task.reward(p, c) for p, c in zip(prompts, greedy)) / len(prompts)
    return {"reward": float(rewards.mean()), "best_of_n": float((rewards.max(1).values > 0).float().mean()),
            "greedy": float(greedy_acc),
            "wrong_length": float(lengths[wrong].mean()) if wrong.any() else float("nan"),
            "length": float(lengths.mean())}


def sft_start(task: KeepTheAs, *, steps: int = 60, ramble: float = 0.3, seed: int = 0, device=None,
              progress: bool = True):
    """The weak SFT start: chapter 02's tiny GPT (d_model 32, 2 layers), ``steps`` steps of
    ``task.sft_batch`` (a fraction ``ramble`` of its targets are rambles)."""
    from ..device import seed_everything
    from ..dpo import sequence_logps
    from ..models import TinyTransformer
    from ..train import train

    gen = seed_everything(seed)
    model = TinyTransformer(len(task.VOCAB), d_model=32, n_heads=2, n_layers=2,
                            max_len=task.n + 1 + task.max_completion_length)

    def loss_fn(m, ids, mask):
        return -sequence_logps(m(ids), ids, mask).sum() / mask[:, 1:].sum()  # mean NLL per answer token

    train(model, loss_fn, lambda step: task.sft_batch(32, gen, ramble), steps=steps, lr=3e-3, device=device,
          progress=progress, desc="SFT start")
    return model.eval()


def train_grpo(start, task: KeepTheAs, *, loss_type: str, steps: int = 40, prompts_per_step: int = 16,
               num_generations: int = 8, lr: float = 1e-3, seed: int = 0, eval_every: int = 20, progress: bool = True):
    """GRPO from ``start`` (a copy is trained): each step samples ``num_generations`` completions of
    ``prompts_per_step`` training prompts, scores them, ``group_advantages``, one on-policy update with
    ``policy_gradient_loss(loss_type=...)``.  The validation reward selects the kept step (earliest on ties).
    Returns ``(model, history)``; history maps metric -> list of (step, value)."""
    from tqdm.auto import tqdm

    model = copy.deepcopy(start).train()
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    train_prompts = task.splits["train"]
    history = {"val_reward": [], "train_reward": [], "train_wrong_length": []}
    best = (evaluate(model, task, "val", samples=4, seed=seed)["reward"], 0, copy.deepcopy(model.state_dict()))
    history["val_reward"].append((0, best[0]))
    for step in tqdm(range(1, steps + 1), desc=loss_type, disable=not progress, mininterval=0.5):
        idx = torch.randint(len(train_prompts), (prompts_per_step,), generator=g)
        prompts = train_prompts[idx].repeat_interleave(num_generations, dim=0)  # [batch, n + 1]
        completions, mask = sample_completions(model, prompts, task, g)
        rewards = torch.tensor([task.reward(p, c) for p, c in zip(prompts, completions)])
        advantages = group_advantages(rewards, num_generations)  # [batch]
        logps = completion_logps(model, prompts.to(device), torch.ones_like(prompts).to(device),
                                 completions.to(device), mask.to(device))  # [batch, completion]
        loss = policy_gradient_loss(logps, None, advantages.to(device), mask.to(device), loss_type=loss_type)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        wrong = rewards == 0
        history["train_reward"].append((step, float(rewards.mean())))
        if wrong.any():
            history["train_wrong_length"].append((step, float(mask.sum(-1)[wrong].float().mean())))
        if step % eval_every == 0 or step == steps:
            val = evaluate(model, task, "val", samples=4, seed=seed)["reward"]
            history["val_reward"].append((step, val))
            if val > best[0]:
                best = (val, step, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    history["best_step"] = best[1]
    return model.eval(), history


# ---------------------------------------------------------------- the checks of the exercises and the bug zoo


def reference_loss(per_token_logps, old_per_token_logps, advantages, completion_mask, ref_per_token_logps=None,
                   beta=0.0, num_items_in_batch=None):
    """dapo by ``policy_gradient_loss`` with the constants detached (the bug zoo's and exercise 2's reference: the
    checks make every float argument a leaf that requires grad)."""
    ref = None if not beta else ref_per_token_logps.detach()
    return policy_gradient_loss(per_token_logps, old_per_token_logps.detach(), advantages.detach(),
                                completion_mask, loss_type="dapo", beta=beta, ref_per_token_logps=ref,
                                num_items_in_batch=num_items_in_batch)


def shaped_reference_loss(per_token_logps, old_per_token_logps, advantages, completion_mask,
                          ref_per_token_logps=None, beta=0.0, num_items_in_batch=None):
    """``reference_loss`` on KL-shaped advantages, A - 0.1 sum(logp - ref) per completion, computed detached."""
    kl = ((per_token_logps - ref_per_token_logps) * completion_mask).sum(-1).detach()  # [batch]
    return reference_loss(per_token_logps, old_per_token_logps, advantages.detach() - 0.1 * kl, completion_mask,
                          num_items_in_batch=num_items_in_batch)


def pg_cases(seed: int = 0, beta: float = 0.0) -> list[dict]:
    """Cases of ``reference_loss``'s arguments: unequal completion lengths, ratios around 1 (some clipped), mixed
    advantages, a global count larger than the local one (a micro-batch of an accumulated batch); a batch of one."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq in ((4, 6), (1, 3), (6, 9)):
        lengths = torch.randint(1, seq + 1, (batch,), generator=g)
        lengths[0] = seq
        mask = (torch.arange(seq)[None] < lengths[:, None]).float()
        logps = -torch.rand(batch, seq, generator=g, dtype=torch.float64) * 3
        cases.append({"per_token_logps": logps,
                      "old_per_token_logps": logps + 0.3 * torch.randn(batch, seq, generator=g, dtype=torch.float64),
                      "advantages": torch.randn(batch, generator=g, dtype=torch.float64) * 1.5,
                      "completion_mask": mask,
                      "ref_per_token_logps": logps + 0.5 * torch.randn(batch, seq, generator=g, dtype=torch.float64),
                      "beta": beta, "num_items_in_batch": int(mask.sum()) + 7})
    return cases


def accumulated_dapo(per_token_logps, old_per_token_logps, advantages, completion_mask, micro_batches: int = 2):
    """Exercise 2's reference: the sum of dapo losses over ``micro_batches`` consecutive slices of the batch, as
    gradient accumulation adds them, each divided by the accumulated batch's token count."""
    n = completion_mask.sum()
    size = per_token_logps.shape[0] // micro_batches
    total = 0.0
    for k in range(micro_batches):
        s = slice(k * size, (k + 1) * size)
        total = total + policy_gradient_loss(per_token_logps[s], old_per_token_logps[s].detach(),
                                             advantages[s].detach(), completion_mask[s], loss_type="dapo",
                                             num_items_in_batch=n)
    return total


def accumulation_cases(seed: int = 0) -> list[dict]:
    """Exercise 2's cases: batches of 4 and 6 with completion lengths that differ between the micro-batches."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for batch, seq, lengths in ((4, 8, [8, 7, 1, 2]), (6, 5, [1, 1, 5, 5, 4, 2]), (4, 3, [3, 3, 3, 1])):
        mask = (torch.arange(seq)[None] < torch.tensor(lengths)[:, None]).float()
        logps = -torch.rand(batch, seq, generator=g, dtype=torch.float64) * 3
        out.append({"per_token_logps": logps,
                    "old_per_token_logps": logps + 0.3 * torch.randn(batch, seq, generator=g, dtype=torch.float64),
                    "advantages": torch.randn(batch, generator=g, dtype=torch.float64),
                    "completion_mask": mask, "micro_batches": 2})
    return out


def surrogate_cases(seed: int = 0) -> list[dict]:
    """Exercise 1's cases for ``clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high)``: ratios on
    both sides of both clip edges, advantages of both signs, clip-higher."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, lo, hi in (((5, 7), 0.2, 0.2), ((3, 4), 0.2, 0.28), ((1, 1), 0.1, 0.3), ((8, 2), 0.3, 0.5)):
        coef = torch.exp(0.5 * torch.randn(shape, generator=g, dtype=torch.float64))
        adv = torch.randn(shape[0], 1, generator=g, dtype=torch.float64)
        out.append({"coef_1": coef, "advantages": adv, "epsilon_low": lo, "epsilon_high": hi})
    return out


def k3_cases(seed: int = 0) -> list[dict]:
    """Exercise 3's cases for ``k3_kl(per_token_logps, ref_per_token_logps)``: log-probs close and far apart."""
    g = torch.Generator().manual_seed(seed)
    return [{"per_token_logps": -3 * torch.rand(shape, generator=g, dtype=torch.float64),
             "ref_per_token_logps": -3 * torch.rand(shape, generator=g, dtype=torch.float64)}
            for shape in ((4, 6), (1, 1), (3, 9))]
