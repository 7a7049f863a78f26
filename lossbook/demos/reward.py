"""Chapter 07's demo material: preference pairs from a known latent reward, a reward model, calibration, and
a tiny TRL ``RewardTrainer`` built offline.

The synthetic task (nothing is downloaded): items are feature vectors x in R^8 with a hidden reward
``latent_reward(x)``.  A pair (a, b) is labelled by a simulated annotator who perceives noisy utilities
r*(x) + Gumbel noise and prefers the larger, so it prefers a with probability sigmoid(r*(a) - r*(b)) (the
Bradley–Terry model itself), and says how strongly from the same perceived gap (a margin of 0, 1.5 or 3), as
preference data sets with strength ratings do (Llama 2).  Since the labels are noisy, no model can beat the
Bayes-optimal accuracy of the latent reward itself, in expectation.
"""

from __future__ import annotations

import copy
import os
import warnings
from types import SimpleNamespace

import torch

from ..models import MLP
from ..reward import pairwise_accuracy
from ..train import train

__all__ = [
    "FEATURES",
    "MARGIN_LEVELS",
    "latent_reward",
    "make_preference_pairs",
    "make_reward_model",
    "fit_reward_model",
    "bayes_accuracy",
    "random_order",
    "reliability",
    "expected_calibration_error",
    "reward_cases",
    "padded_value_cases",
    "char_tokenizer",
    "tiny_trl_reward_model",
    "trl_reward_trainer",
    "trl_loss_on_rewards",
]

FEATURES = 8
MARGIN_LEVELS = (0.0, 1.5, 3.0)  # "slightly better", "better", "much better"
_MARGIN_EDGES = torch.tensor([1.0, 2.5])  # perceived utility gaps at which the annotator's rating steps up


def latent_reward(x: torch.Tensor) -> torch.Tensor:
    """The hidden reward r*(x) of items Float[Tensor, "n 8"] -> Float[Tensor, "n"] (features 5-7 are noise)."""
    return 2 * torch.sin(1.5 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.8 * x[:, 3] - 0.5 * x[:, 4] ** 2


def make_preference_pairs(n: int, *, generator: torch.Generator) -> dict:
    """``n`` labelled pairs: ``chosen``, ``rejected`` [n, 8], ``margin`` [n] and ``true_gap`` [n] = r*(c) - r*(r).

    The simulated annotator of chapter 07, section 1: it perceives each item's utility as r*(x) plus standard
    Gumbel noise, prefers the larger perceived utility (so the label is Bradley–Terry on r*, and ``true_gap`` is
    negative for the pairs it got "wrong"), and rates how much better the chosen item seemed from the same
    perceived gap: a margin of 0 below a perceived gap of 1, 1.5 below 2.5, 3 above.
    """
    a = torch.randn(n, FEATURES, generator=generator)  # [n, 8]
    b = torch.randn(n, FEATURES, generator=generator)  # [n, 8]
    utility_a = latent_reward(a) + _gumbel(n, generator)  # [n]: what the annotator perceives
    utility_b = latent_reward(b) + _gumbel(n, generator)  # [n]
    picks_a = utility_a > utility_b  # [n]
    chosen = torch.where(picks_a[:, None], a, b)  # [n, 8]
    rejected = torch.where(picks_a[:, None], b, a)  # [n, 8]
    perceived = (utility_a - utility_b).abs()  # [n]: the gap behind the choice, >= 0
    margin = torch.tensor(MARGIN_LEVELS)[torch.bucketize(perceived, _MARGIN_EDGES)]  # [n]
    true_gap = latent_reward(chosen) - latent_reward(rejected)  # [n]
    return {"chosen": chosen, "rejected": rejected, "margin": margin, "true_gap": true_gap}


def _gumbel(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` standard Gumbel draws, -log(-log U)."""
    u = torch.rand(n, generator=generator).clamp(1e-12, 1 - 1e-7)  # [n], away from 0 and 1
    return -torch.log(-torch.log(u))


def make_reward_model(hidden: int = 64) -> torch.nn.Module:
    """An MLP reward model: Float[Tensor, "n 8"] -> Float[Tensor, "n 1"] (one reward per item, as
    ``AutoModelForSequenceClassification`` with ``num_labels=1``); ``hidden=0`` gives a linear reward model."""
    return torch.nn.Linear(FEATURES, 1) if hidden == 0 else MLP(FEATURES, hidden, 1, depth=2)


def fit_reward_model(loss_fn, train_pairs: dict, val_pairs: dict, *, seed: int, steps: int = 1500,
                     batch: int = 128, lr: float = 2e-3, eval_every: int = 100, hidden: int = 64, device=None,
                     desc: str = "reward"):
    """Train a fresh :func:`make_reward_model` with ``loss_fn(r_c, r_r, margin)`` on ``train_pairs``.

    ``hidden`` as :func:`make_reward_model`.  Every ``eval_every`` steps it logs the validation accuracy and the mean
    validation reward, and keeps the weights of the best validation accuracy (model selection on the validation
    split; the test split is never looked at).  Returns ``(model, history)`` with the best weights loaded.
    """
    torch.manual_seed(seed)
    model = make_reward_model(hidden)
    sampler = torch.Generator().manual_seed(seed + 1)
    n = len(train_pairs["margin"])
    best = {"accuracy": -1.0, "state": None}

    def get_batch(step):
        idx = torch.randint(0, n, (batch,), generator=sampler)
        return train_pairs["chosen"][idx], train_pairs["rejected"][idx], train_pairs["margin"][idx]

    def step_loss(m, chosen, rejected, margin):
        return loss_fn(m(chosen), m(rejected), margin)  # rewards [batch, 1] each, margin [batch]

    def evaluate(m):
        dev = next(m.parameters()).device
        r_c, r_r = m(val_pairs["chosen"].to(dev)), m(val_pairs["rejected"].to(dev))  # [n_val, 1] each
        accuracy = float(pairwise_accuracy(r_c, r_r))
        if accuracy > best["accuracy"]:
            best.update(accuracy=accuracy, state=copy.deepcopy(m.state_dict()))
        return {"val_accuracy": accuracy, "mean_reward": float(torch.cat([r_c, r_r]).mean())}

    history = train(model, step_loss, get_batch, steps=steps, lr=lr, device=device, eval_fn=evaluate,
                    eval_every=eval_every, desc=desc)
    model.load_state_dict(best["state"])
    return model, history


def bayes_accuracy(pairs: dict) -> tuple[float, float]:
    """(realised, expected) accuracy of the latent reward itself on ``pairs``: the fraction of labels it agrees
    with, and its expectation mean sigmoid(|gap|) under the Bradley–Terry labels.  No model can do better."""
    realised = float((pairs["true_gap"] > 0).float().mean())
    expected = float(torch.sigmoid(pairs["true_gap"].abs()).mean())
    return realised, expected


def random_order(pairs: dict, *, generator: torch.Generator):
    """The pairs as (first, second, label) in random order: label 1 when ``first`` is the chosen item.

    Calibration needs both outcomes: in (chosen, rejected) order every label would be 1.
    """
    n = len(pairs["margin"])
    flip = torch.rand(n, generator=generator) < 0.5  # [n]
    first = torch.where(flip[:, None], pairs["rejected"], pairs["chosen"])  # [n, 8]
    second = torch.where(flip[:, None], pairs["chosen"], pairs["rejected"])  # [n, 8]
    return first, second, (~flip).float()


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10):
    """Reliability diagram data: per equal-width bin of predicted P(first preferred), the mean prediction, the
    observed frequency and the count (empty bins dropped).  Returns three lists."""
    probs, labels = probs.detach().double().cpu(), labels.double().cpu()
    index = (probs * bins).long().clamp(max=bins - 1)  # [n]
    mean_p, freq, count = [], [], []
    for b in range(bins):
        sel = index == b
        if sel.any():
            mean_p.append(float(probs[sel].mean()))
            freq.append(float(labels[sel].mean()))
            count.append(int(sel.sum()))
    return mean_p, freq, count


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> float:
    """sum over bins of (count / n) * |observed frequency - mean prediction| (Naeini et al. 2015)."""
    mean_p, freq, count = reliability(probs, labels, bins)
    n = sum(count)
    return sum(c / n * abs(f - p) for p, f, c in zip(mean_p, freq, count))


def reward_cases(seed: int = 0, *, dtype=torch.float32) -> list[dict]:
    """Inputs for ``pairwise_reward_loss``-shaped functions, ``rewards_chosen`` first.

    ``[batch]`` and ``[batch, 1]`` rewards, batch 1, a ``[batch]`` margin column (as TRL's collator makes),
    a number as margin, the centering term, and rewards far apart (|r_c - r_r| about 120) in both orders.
    """
    g = torch.Generator().manual_seed(seed)

    def rewards(*shape, scale=2.0):
        return (scale * torch.randn(*shape, generator=g)).to(dtype)

    cases = []
    for batch in (6, 1):
        margin = torch.tensor(MARGIN_LEVELS)[torch.randint(0, 3, (batch,), generator=g)]  # [batch]
        cases += [
            {"rewards_chosen": rewards(batch), "rewards_rejected": rewards(batch)},
            {"rewards_chosen": rewards(batch, 1), "rewards_rejected": rewards(batch, 1)},
            {"rewards_chosen": rewards(batch), "rewards_rejected": rewards(batch), "margin": margin},
            {"rewards_chosen": rewards(batch, 1), "rewards_rejected": rewards(batch, 1), "margin": margin},
            {"rewards_chosen": rewards(batch), "rewards_rejected": rewards(batch), "margin": 1.0,
             "center_rewards_coefficient": 0.01},
            {"rewards_chosen": rewards(batch, 1), "rewards_rejected": rewards(batch, 1), "margin": margin,
             "center_rewards_coefficient": 0.05},
        ]
    cases.append({"rewards_chosen": torch.tensor([-60.0, 60.0, 0.5], dtype=dtype),
                  "rewards_rejected": torch.tensor([60.0, -60.0, 0.0], dtype=dtype)})
    return cases


def padded_value_cases(seed: int = 0) -> list[dict]:
    """Per-position scores ``values`` [batch, seq] with right-padded ``attention_mask``s (lengths 1..seq), for
    ``last_token_rewards``-shaped functions."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq in ((4, 7), (1, 5), (3, 1)):
        lengths = torch.randint(1, seq + 1, (batch,), generator=g)  # [batch]
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # [batch, seq], right padding
        cases.append({"values": torch.randn(batch, seq, generator=g), "attention_mask": mask})
    return cases


# --- TRL, built offline: a character tokenizer and a tiny Llama reward model (no hub access) ----------------

CHARS = "abcdefghijklmnopqrstuvwxyz .,!?"


def _offline():
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")


def char_tokenizer():
    """A transformers fast tokenizer over single characters, built locally: ``<pad>`` = 0, ``<eos>`` = 1 (a pad
    token distinct from eos, so the reward is never pooled at the wrong token), then :data:`CHARS`."""
    _offline()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def tiny_trl_reward_model(tokenizer, *, seed: int = 0, dtype=torch.float32):
    """A randomly initialised 1-layer ``LlamaForSequenceClassification`` with ``num_labels=1`` (hidden 16)."""
    _offline()
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config).to(dtype)


def trl_reward_trainer(model, tokenizer, pairs: dict, output_dir: str, *, center_rewards_coefficient=None):
    """TRL's ``RewardTrainer`` on ``pairs`` (a dict of lists ``chosen``, ``rejected`` and optionally ``margin``),
    CPU, float32 (``bf16=False``), dropout off, no logging; its datasets are tokenized by TRL itself."""
    _offline()
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig, RewardTrainer

    with warnings.catch_warnings():  # transformers 5 warns that a field TRL sets by default is deprecated
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        args = RewardConfig(output_dir=output_dir, report_to="none", bf16=False, use_cpu=True,
                            per_device_train_batch_size=len(pairs["chosen"]), disable_dropout=True,
                            center_rewards_coefficient=center_rewards_coefficient)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        import datasets

        datasets.disable_progress_bars()
        return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_dict(pairs),
                             processing_class=tokenizer)
    finally:
        hf_logging.set_verbosity(verbosity)


class _RewardsAsLogits(torch.nn.Module):
    """A stand-in model whose output ``logits`` are given rewards, chosen rows first (``[2 * batch, 1]``)."""

    def __init__(self, rewards_chosen, rewards_rejected):
        super().__init__()
        self.logits = torch.cat([rewards_chosen.reshape(-1, 1), rewards_rejected.reshape(-1, 1)])

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.logits)


def trl_loss_on_rewards(trainer):
    """TRL's own ``RewardTrainer.compute_loss`` as a function of given rewards, with lossbook's signature.

    ``compute_loss`` reads its rewards from a model's output, so a stand-in model returns the given rewards as
    its logits; everything after that (the split into halves, the margin, the centering term) is TRL's code.
    A number as margin becomes a ``[batch]`` column in the rewards' dtype.  ``center_rewards_coefficient`` is set
    on ``trainer.args`` for the call and restored afterwards.
    """

    def loss(rewards_chosen, rewards_rejected, margin=None, center_rewards_coefficient=None):
        batch = rewards_chosen.shape[0]
        inputs = {"attention_mask": torch.ones(2 * batch, 1, dtype=torch.long)}  # TRL counts tokens from it
        if margin is not None:
            inputs["margin"] = (margin if torch.is_tensor(margin)
                                else torch.full((batch,), float(margin), dtype=rewards_chosen.dtype))
        saved = trainer.args.center_rewards_coefficient
        trainer.args.center_rewards_coefficient = center_rewards_coefficient
        try:
            return trainer.compute_loss(_RewardsAsLogits(rewards_chosen, rewards_rejected), inputs)
        finally:
            trainer.args.center_rewards_coefficient = saved

    return loss
