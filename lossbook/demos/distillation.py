"""Demo material of chapter 15 (distillation): conformance with TRL, a teacher and its students, the checks.

* ``trl_conformance``: ``distillation_loss`` against ``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss``
  and ``chunked_distillation_loss`` against ``trl.trainer.distillation_trainer._chunked_divergence_loss``, on
  the same inputs, values and gradients.
* ``train_teacher`` / ``train_student``: chapter 02's tiny GPT on the rhymes (the teacher), and a smaller GPT
  trained on the data alone, or distilled by the forward KL, the reverse KL, or Hinton's mix of a soft and a
  hard loss (with or without the T^2 factor).  ``sample_diversity``: distinct character 4-grams in samples.
* ``distillation_cases``, ``forward_kl_cases``, ``hinton_cases``: the exercises' and the bug zoo's cases.
"""

from __future__ import annotations

import os

import torch

from ..causal_lm import causal_lm_loss, next_token_labels
from ..distillation import chunked_distillation_loss, distillation_loss
from ..models import TinyTransformer, generate
from ..text import random_windows
from ..train import train
from .causal_lm import mean_nll, stream_windows

__all__ = [
    "trl_conformance",
    "CONFORMANCE_SETTINGS",
    "train_teacher",
    "train_student",
    "student_loss",
    "hinton_mixed_loss",
    "sample_diversity",
    "distillation_cases",
    "forward_kl_cases",
    "hinton_cases",
    "hinton_limit_reference",
    "jsd_limit_reference",
    "calls_package_divergence",
]

#: (beta, temperature, num_items_in_batch) triples compared with TRL
CONFORMANCE_SETTINGS = [(0.0, 1.0, None), (1.0, 1.0, None), (0.5, 1.0, None), (0.1, 2.0, None), (0.9, 0.5, None),
                        (0.0, 2.0, 40), (0.5, 1.0, 40), (1.0, 3.0, 40)]


def _inputs(seed=0, batch=3, seq=7, vocab=50, hidden_s=8, hidden_t=12, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h_s = torch.randn(batch, seq, hidden_s, generator=g, dtype=torch.float64)
    h_t = torch.randn(batch, seq, hidden_t, generator=g, dtype=torch.float64)
    w_s = torch.randn(vocab, hidden_s, generator=g, dtype=torch.float64)
    w_t = torch.randn(vocab, hidden_t, generator=g, dtype=torch.float64) * 1.5
    mask = (torch.rand(batch, seq, generator=g) > 0.3).long()
    mask[0] = 0  # a sequence with nothing scored
    mask[1, 0] = 1
    labels = torch.randint(0, vocab, (batch, seq), generator=g).masked_fill(mask == 0, -100)
    return [t.to(dtype) for t in (h_s, h_t, w_s, w_t)] + [mask, labels]


def trl_conformance(settings=CONFORMANCE_SETTINGS, *, seed: int = 0, dtype=torch.float32) -> list[dict]:
    """Per setting: TRL's and lossbook's loss and the max |gradient| difference (student hidden and weight).

    ``distillation_loss`` and GKD's ``generalized_jsd_loss`` get the same projected logits and labels;
    ``chunked_distillation_loss`` and ``_chunked_divergence_loss`` get the same hidden states, weights and
    completion mask (chunk of 4 tokens, so several chunks).  Every row: beta, temperature,
    num_items_in_batch, gkd, ours, chunked_trl, chunked, and the four differences."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")
    from trl.experimental.gkd import GKDTrainer
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    h_s, h_t, w_s, w_t, mask, labels = _inputs(seed, dtype=dtype)
    z_t = h_t @ w_t.T  # [batch, seq, vocab]: the teacher's logits

    def run(fn):
        a, b = h_s.clone().requires_grad_(), w_s.clone().requires_grad_()
        loss = fn(a, b)
        return loss.detach(), torch.autograd.grad(loss, (a, b))

    def diff(x, y):
        return (float((x[0] - y[0]).abs()),
                max(float((g1 - g2).abs().max()) for g1, g2 in zip(x[1], y[1], strict=True)))

    rows = []
    for beta, t, n in settings:
        kw = dict(beta=beta, temperature=t, num_items_in_batch=n)
        out = {
            "gkd": run(lambda a, b, kw=kw: GKDTrainer.generalized_jsd_loss(a @ b.T, z_t, labels, **kw)),
            "ours": run(lambda a, b, kw=kw: distillation_loss(a @ b.T, z_t, labels, **kw)),
            "chunked_trl": run(lambda a, b, beta=beta, t=t, n=n: _chunked_divergence_loss(
                a, h_t, b, w_t, mask, beta, num_items_in_batch=n, temperature=t)[0]),
            "chunked": run(lambda a, b, kw=kw: chunked_distillation_loss(a, h_t, b, w_t, mask, chunk_size=4, **kw)),
        }
        (value_diff, grad_diff), (chunked_value_diff, chunked_grad_diff) = (
            diff(out["ours"], out["gkd"]), diff(out["chunked"], out["chunked_trl"]))
        rows.append({"beta": beta, "temperature": t, "num_items_in_batch": n,
                     **{name: float(v[0]) for name, v in out.items()}, "value_diff": value_diff,
                     "grad_diff": grad_diff, "chunked_value_diff": chunked_value_diff,
                     "chunked_grad_diff": chunked_grad_diff})
    return rows


# ---------------------------------------------------------------- the training demo


def _model(vocab, d_model, n_layers, dropout, seed, device):
    torch.manual_seed(seed)
    return TinyTransformer(vocab, d_model=d_model, n_heads=4, n_layers=n_layers, max_len=64,
                           dropout=dropout).to(device)


def train_teacher(splits, *, steps: int, seed: int, device, d_model: int = 64, n_layers: int = 2,
                  progress: bool = True):
    """Chapter 02's GPT (d_model 64, 2 layers) on the training rhymes, the best validation step kept."""
    vocab = splits.tokenizer.vocab_size
    model = _model(vocab, d_model, n_layers, 0.2, seed, device)
    val = stream_windows(splits.val_ids, 64)
    batches = torch.Generator().manual_seed(seed)
    history = train(model, lambda m, x: causal_lm_loss(m(x), x), lambda step: (random_windows(
        splits.train_ids, 32, 64, batches),), steps=steps, lr=3e-3, weight_decay=0.1, device=device,
        eval_fn=lambda m: {"val_nll": mean_nll(m, *val)}, eval_every=25, desc="teacher", keep_best="val_nll",
        maximize=False, progress=progress)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), history


def hinton_mixed_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float,
                      t_squared: bool = True):
    """alpha T^2 KL_T(teacher || student) + (1 - alpha) CE(student, labels) (Hinton et al. 2015, Section 2):
    the soft loss's gradient scales as 1/T^2, so T^2 keeps the two terms' balance as T changes.  The teacher
    is a constant (detached), as in a trainer that runs it under ``torch.no_grad``."""
    soft = distillation_loss(student_logits, teacher_logits.detach(), labels, beta=0.0, temperature=temperature)
    hard = causal_lm_loss(student_logits, None, shift_labels=labels)
    return alpha * (temperature**2 if t_squared else 1.0) * soft + (1 - alpha) * hard


def student_loss(objective: str, student_logits, teacher_logits, labels, *, temperature: float = 1.0,
                 alpha: float = 0.5):
    """The student's training loss: "data" (next-token CE on the text), "forward_kl" (beta 0), "reverse_kl"
    (beta 1), "mixed" (Hinton's, with T^2) or "mixed, no T^2" (the mistake)."""
    if objective == "data":
        return causal_lm_loss(student_logits, None, shift_labels=labels)
    if objective in ("forward_kl", "reverse_kl"):
        return distillation_loss(student_logits, teacher_logits, labels, beta=0.0 if objective == "forward_kl"
                                 else 1.0, temperature=temperature)
    if objective in ("mixed", "mixed, no T^2"):
        return hinton_mixed_loss(student_logits, teacher_logits, labels, temperature=temperature, alpha=alpha,
                                 t_squared=objective == "mixed")
    raise ValueError(f"unknown objective {objective!r}")


def train_student(teacher, splits, objective: str, *, steps: int, seed: int, device, d_model: int = 32,
                  n_layers: int = 1, temperature: float = 1.0, alpha: float = 0.5, lr: float = 3e-3,
                  progress: bool = True, desc: str | None = None):
    """A smaller GPT trained on random training windows with ``student_loss(objective, ...)``; the teacher
    scores the same windows.  The best validation NLL (against the data) is kept."""
    vocab = splits.tokenizer.vocab_size
    model = _model(vocab, d_model, n_layers, 0.1, seed + 1000, device)
    val = stream_windows(splits.val_ids, 64)
    batches = torch.Generator().manual_seed(seed)

    def loss_fn(m, x):
        labels = next_token_labels(x, -100)  # [batch, 64]: the last position scores nothing
        with torch.no_grad():
            teacher_logits = teacher(x)  # [batch, 64, vocab]
        return student_loss(objective, m(x), teacher_logits, labels, temperature=temperature, alpha=alpha)

    history = train(model, loss_fn, lambda step: (random_windows(splits.train_ids, 32, 64, batches),),
                    steps=steps, lr=lr, weight_decay=0.1, device=device,
                    eval_fn=lambda m: {"val_nll": mean_nll(m, *val)}, eval_every=25, desc=desc or objective,
                    keep_best="val_nll", maximize=False, progress=progress)
    return model.eval(), history


@torch.no_grad()
def sample_diversity(model, tokenizer, *, prompts=("Little ", "The ", "Hey ", "Old "), samples: int = 6,
                     length: int = 60, n: int = 4, seed: int = 0) -> float:
    """Distinct character n-grams over all n-grams of ``samples`` samples per prompt (temperature 1)."""
    g = torch.Generator().manual_seed(seed)
    grams, total = set(), 0
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        for _ in range(samples):
            new = generate(model, ids, length, temperature=1.0, generator=g)[len(ids):].tolist()
            seq = tuple(new)
            for i in range(len(seq) - n + 1):
                grams.add(seq[i:i + n])
                total += 1
    return len(grams) / max(total, 1)


# ---------------------------------------------------------------- exercise and bug-zoo checks


def distillation_cases(seed: int = 0) -> list[dict]:
    """Cases for a candidate ``fn(student_logits, teacher_logits, labels, beta, temperature)``: padding, a batch
    of one, one position, extreme logits, every beta regime and a temperature."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for (b, s, v), beta, t in (((2, 5, 7), 0.0, 1.0), ((1, 1, 4), 1.0, 2.0), ((3, 4, 6), 0.5, 1.0),
                               ((2, 6, 9), 0.2, 3.0), ((2, 3, 5), 0.0, 0.5), ((2, 4, 6), 0.0, 2.0)):
        student = 3 * torch.randn(b, s, v, generator=g)
        teacher = 3 * torch.randn(b, s, v, generator=g)
        labels = torch.randint(0, v, (b, s), generator=g)
        labels[0, -1] = -100
        if s > 2:
            labels[-1, :2] = -100
        cases.append({"student_logits": student, "teacher_logits": teacher, "labels": labels, "beta": beta,
                      "temperature": t})
    big = 40 * torch.randn(2, 3, 5, generator=g)
    cases.append({"student_logits": big, "teacher_logits": big.flip(-1), "labels": torch.zeros(2, 3, dtype=torch.long),
                  "beta": 0.5, "temperature": 1.0})
    return cases


def forward_kl_cases(seed: int = 0) -> list[dict]:
    """``distillation_cases`` at beta = 0 (Hinton's soft-target loss): the bug zoo's cases."""
    return [c for c in distillation_cases(seed) if c["beta"] == 0.0]


def hinton_cases(seed: int = 0) -> list[dict]:
    """Cases for a candidate ``fn(student_logits, teacher_logits, labels, temperature, alpha)``: padding, a
    batch of one, temperatures from 1 to 8 and several mixing weights."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for (b, s, v), t, alpha in (((3, 6, 11), 4.0, 0.5), ((1, 2, 5), 2.0, 0.9), ((2, 5, 8), 8.0, 0.3),
                                ((2, 4, 6), 1.0, 0.5)):
        labels = torch.randint(0, v, (b, s), generator=g)
        labels[:, -1] = -100
        labels[0, :1] = -100
        cases.append({"student_logits": 2 * torch.randn(b, s, v, generator=g),
                      "teacher_logits": 2 * torch.randn(b, s, v, generator=g), "labels": labels,
                      "temperature": t, "alpha": alpha})
    return cases


def hinton_limit_reference(values: torch.Tensor, temperature: float = 1e4) -> torch.Tensor:
    """T^2 d KL_T(p_t || p_s) / d z_s0 by autograd at a large T, for ``values`` = (s0, s1, s2, t0, t1, t2)."""
    zs = values[:3].clone().double().requires_grad_()
    loss = distillation_loss(zs[None], values[3:].double()[None], beta=0.0, temperature=temperature)
    (grad,) = torch.autograd.grad(loss, zs)
    return temperature**2 * grad[0]


def jsd_limit_reference(values: torch.Tensor, temperature: float = 1e4, beta: float = 0.5) -> torch.Tensor:
    """T^2 d JSD_beta(p_s, p_t) / d z_s0 by autograd at a large T, for ``values`` = (s0, s1, s2, t0, t1, t2)."""
    zs = values[:3].clone().double().requires_grad_()
    loss = distillation_loss(zs[None], values[3:].double()[None], beta=beta, temperature=temperature)
    (grad,) = torch.autograd.grad(loss, zs)
    return temperature**2 * grad[0]


def calls_package_divergence(candidate, cases) -> bool:
    """Does ``candidate``, run on ``cases``, call one of lossbook.distillation's per-entry divergences
    (``LOSS_FUNCTIONS``)?  Exercise 1 asks for the computation, not a wrapper around the package's."""
    from lossbook.checks import calls_reference
    from lossbook.distillation import LOSS_FUNCTIONS

    return any(calls_reference(candidate, fn, lambda c=c: candidate(**c)) for fn in LOSS_FUNCTIONS.values()
               for c in cases)
