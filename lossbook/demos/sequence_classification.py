"""Chapter 04's demo: token sequences with three tasks, one shared trunk with three heads, and metrics.

The three tasks read the same random token sequences (nothing is downloaded):

* regression: ``y = (#tokens in [5, 10) - #tokens in [15, 20)) / 2``, one float per sequence;
* single-label: which quarter the mean token id falls in (4 classes, thresholds 8.5, 9.5, 10.5);
* multi-label: for each of the tokens 0..4, does it occur in the sequence (5 independent labels).

Also the parity cases the chapter, its tests and its bug zoo share (``sequence_classification_cases``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import print_verdict

__all__ = [
    "VOCAB",
    "NUM_CLASSES",
    "NUM_TAGS",
    "make_sequence_tasks",
    "MultiTaskClassifier",
    "r2_score",
    "accuracy",
    "per_label_accuracy",
    "exact_match",
    "sequence_classification_cases",
    "tiny_llama_classifier",
    "padded_batch",
    "majority_baselines",
    "count_regression_baseline",
    "check_last_token_positions",
    "check_pos_weight_grad",
    "check_same_broadcast_loss",
    "check_hidden_worst_predictions",
]

VOCAB = 20
NUM_CLASSES = 4  # single-label head
NUM_TAGS = 5  # multi-label head
_THRESHOLDS = torch.tensor([8.5, 9.5, 10.5])


def make_sequence_tasks(n: int, seq: int = 16, *, generator: torch.Generator | None = None):
    """``n`` random sequences and the targets of the three tasks.

    Returns ``tokens`` Long[batch, seq], ``y_regression`` Float[batch], ``y_single`` Long[batch] and
    ``y_multi`` Float[batch, 5] (multi-hot).
    """
    tokens = torch.randint(0, VOCAB, (n, seq), generator=generator)  # [batch, seq]
    counts = torch.nn.functional.one_hot(tokens, VOCAB).sum(1)  # [batch, vocab]
    y_regression = (counts[:, 5:10].sum(-1) - counts[:, 15:20].sum(-1)).float() / 2  # [batch]
    mean_id = tokens.float().mean(-1)  # [batch]
    y_single = torch.bucketize(mean_id, _THRESHOLDS)  # [batch], classes 0..3
    y_multi = (counts[:, :NUM_TAGS] > 0).float()  # [batch, tags]
    return tokens, y_regression, y_single, y_multi


class MultiTaskClassifier(nn.Module):
    """Embedding -> mean pool -> MLP trunk (shared) -> three heads, each giving pooled logits.

    ``forward(tokens)`` returns ``(regression [batch, 1], single [batch, 4], multi [batch, 5])``.
    """

    def __init__(self, vocab: int = VOCAB, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.trunk = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.regression_head = nn.Linear(hidden, 1)
        self.single_head = nn.Linear(hidden, NUM_CLASSES)
        self.multi_head = nn.Linear(hidden, NUM_TAGS)

    def forward(self, tokens):
        pooled = self.trunk(self.embed(tokens).mean(1))  # [batch, seq, hidden] -> [batch, hidden]
        return self.regression_head(pooled), self.single_head(pooled), self.multi_head(pooled)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - sum (y - yhat)^2 / sum (y - mean y)^2; ``pred`` is squeezed, so [batch, 1] meets [batch]."""
    pred, target = pred.squeeze(-1).float(), target.float()  # [batch] each
    if pred.shape != target.shape:
        raise ValueError(f"r2_score: pred {list(pred.shape)} and target {list(target.shape)} differ")
    return float(1 - ((target - pred) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Single-label accuracy: argmax over classes."""
    return float((logits.argmax(-1) == labels).float().mean())


def per_label_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-label: the fraction of (row, label) entries where sigmoid(z) > 1/2 agrees with the label."""
    return float(((logits > 0).float() == labels).float().mean())


def exact_match(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-label: the fraction of rows whose every label is right."""
    return float(((logits > 0).float() == labels).all(-1).float().mean())


def sequence_classification_cases(seed: int = 0, *, dtype=torch.float32) -> list[dict]:
    """Inputs for ``sequence_classification_loss``-shaped functions, ``pooled_logits`` first.

    All three problem types, inferred and explicit: regression with ``[batch, 1]`` logits against
    ``[batch]`` and ``[batch, 1]`` labels (batch 1 too) and with 3 outputs; single-label; multi-label
    with multi-hot and soft targets.  Labels stay float32 (or long), logits take ``dtype``.
    """
    g = torch.Generator().manual_seed(seed)

    def logits(*shape):
        return (2 * torch.randn(*shape, generator=g)).to(dtype)

    cases = []
    for batch in (6, 1):
        cases += [
            {"pooled_logits": logits(batch, 1), "labels": torch.randn(batch, generator=g), "num_labels": 1},
            {"pooled_logits": logits(batch, 1), "labels": torch.randn(batch, 1, generator=g), "num_labels": 1},
            {"pooled_logits": logits(batch, 3), "labels": torch.randn(batch, 3, generator=g), "num_labels": 3,
             "problem_type": "regression"},
            {"pooled_logits": logits(batch, 4), "labels": torch.randint(0, 4, (batch,), generator=g), "num_labels": 4},
            {"pooled_logits": logits(batch, 4), "labels": torch.randint(0, 4, (batch,), generator=g), "num_labels": 4,
             "problem_type": "single_label_classification"},
            {"pooled_logits": logits(batch, 5), "labels": torch.randint(0, 2, (batch, 5), generator=g).float(),
             "num_labels": 5},
            {"pooled_logits": logits(batch, 5), "labels": torch.rand(batch, 5, generator=g), "num_labels": 5,
             "problem_type": "multi_label_classification"},
        ]
    return cases


def tiny_llama_classifier(vocab_size: int = 32, num_labels: int = 3, pad_token_id: int = 0, seed: int = 0):
    """A randomly initialised, tiny ``transformers.LlamaForSequenceClassification`` (built in memory, no download).

    Hidden size 16, one layer: the upstream reference for last-token pooling
    (:func:`lossbook.sequence_classification.last_token_pool`).  Needs transformers (the ``upstream`` extra).
    """
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         num_labels=num_labels, pad_token_id=pad_token_id)
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config).eval()


def padded_batch(lengths, seq: int, *, pad_token_id: int = 0, side: str = "right", vocab_size: int = 32,
                 generator: torch.Generator | None = None):
    """``(input_ids, attention_mask)``, each Long[Tensor, "batch seq"]: random real tokens (never the pad id),
    row ``i`` holding ``lengths[i]`` of them, padded on the ``side`` given."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    ids = torch.full((len(lengths), seq), pad_token_id)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        real = torch.randint(0, vocab_size - 1, (n,), generator=generator)
        real = real + (real >= pad_token_id).long()  # skip the pad id
        cols = slice(0, n) if side == "right" else slice(seq - n, seq)
        ids[row, cols], mask[row, cols] = real, 1
    return ids, mask


def majority_baselines(train_set, test_set) -> dict[str, float]:
    """What the three heads score on ``test_set`` when they ignore the input: the training mean (regression,
    R^2), the majority class (accuracy), and each label's majority value (exact match and per-label accuracy)."""
    _, y_reg, y_single, y_multi = train_set
    _, t_reg, t_single, t_multi = test_set
    mean = torch.full_like(t_reg, float(y_reg.mean()))
    majority = int(torch.bincount(y_single).argmax())
    per_label = (y_multi.mean(0) > 0.5).float().expand_as(t_multi)  # [n, tags]
    return {"r2": r2_score(mean, t_reg), "accuracy": float((t_single == majority).float().mean()),
            "exact_match": float((per_label == t_multi).all(-1).float().mean()),
            "label_accuracy": float((per_label == t_multi).float().mean())}


def count_regression_baseline(train_set, test_set) -> float:
    """Test R^2 of ordinary least squares on the token counts (a bag of tokens, plus a bias), no network.

    The regression target is a linear function of the counts, so this baseline is exact: the demo's
    point is the loss, not the model's capacity.
    """
    def features(tokens):
        counts = torch.nn.functional.one_hot(tokens, VOCAB).sum(1).double()  # [n, vocab]
        return torch.cat([counts, torch.ones(len(tokens), 1, dtype=torch.float64)], dim=1)  # [n, vocab + 1]

    weights = torch.linalg.lstsq(features(train_set[0]), train_set[1].double()[:, None]).solution  # [vocab + 1, 1]
    return r2_score(features(test_set[0]) @ weights, test_set[1])


# --- the exercises' checks: each prints a verdict only, computed without the answer's formula -------------------


def _verdict(name: str, ok: bool, detail: str = "") -> None:
    print_verdict(f"{name}: {'correct' if ok else 'not yet'}{detail}", ok)


def check_last_token_positions(fn, name: str = "exercise 1") -> None:
    """Exercise: ``fn(input_ids, pad_token_id)`` -> Long[batch], each row's last non-pad position.

    Compared with :func:`lossbook.sequence_classification.last_token_positions` on right-, left- and
    mixed-padded batches, and pad ids 0 and 3."""
    from ..sequence_classification import last_token_positions

    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    g = torch.Generator().manual_seed(11)
    batches = []
    for side, pad in (("right", 0), ("left", 0), ("right", 3), ("left", 3)):
        lengths = torch.randint(1, 9, (6,), generator=g).tolist() + [8]
        batches.append((padded_batch(lengths, 8, pad_token_id=pad, side=side, generator=g)[0], pad))
    right, _ = padded_batch([2, 5, 8], 8, side="right", generator=g)
    left, _ = padded_batch([4, 1, 6], 8, side="left", generator=g)
    batches.append((torch.cat([right, left]), 0))  # both sides in one batch
    for ids, pad in batches:
        try:
            got = torch.as_tensor(fn(ids.clone(), pad))
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
            return
        if got.shape != (ids.shape[0],) or not torch.equal(got.long(), last_token_positions(ids, pad)):
            _verdict(name, False, " (some rows point at the wrong position)")
            return
    _verdict(name, True, f" ({len(batches)} batches: right, left and mixed padding)")


def check_pos_weight_grad(expr, name: str = "exercise 2") -> None:
    """Exercise: a sympy expression in the symbols ``z``, ``y``, ``w``: d/dz of BCE with logits and
    ``pos_weight = w``.  Compared with autograd through ``F.binary_cross_entropy_with_logits(...,
    pos_weight=w)`` in float64 at 50 random points."""
    import sympy as sp

    if expr is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your expression)", False)
        return
    expr = sp.sympify(expr)
    names = {s.name for s in expr.free_symbols}
    if not names <= {"z", "y", "w"}:
        _verdict(name, False, f": use only the symbols z, y and w (found {sorted(names)})")
        return
    f = sp.lambdify(sp.symbols("z y w"), expr, "math")
    g = torch.Generator().manual_seed(3)
    z = (4 * torch.randn(50, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.rand(50, generator=g, dtype=torch.float64)
    w = 0.2 + 5 * torch.rand(50, generator=g, dtype=torch.float64)
    for i in range(50):
        zi = z[i : i + 1].detach().clone().requires_grad_(True)
        torch.nn.functional.binary_cross_entropy_with_logits(zi, y[i : i + 1], pos_weight=w[i : i + 1]).backward()
        try:
            value = float(f(z[i].item(), y[i].item(), w[i].item()))
        except Exception as err:
            _verdict(name, False, f": evaluating your expression raised {type(err).__name__}: {err}")
            return
        if not abs(value - zi.grad.item()) <= 1e-9 * (1 + abs(zi.grad.item())):
            _verdict(name, False, " (differs from autograd at some points)")
            return
    _verdict(name, True, " (equals autograd at 50 random points)")


def check_same_broadcast_loss(answer, name: str = "exercise 4") -> None:
    """Exercise: three predictions for the labels (1, 2, 3) whose true MSE is at least 1 while the
    broadcasting mistake reports exactly what it reports for perfect predictions."""
    import warnings

    import torch.nn.functional as F

    if answer is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your answer)", False)
        return
    z = torch.as_tensor(answer, dtype=torch.float64).reshape(-1, 1)  # [3, 1], as a regression head gives
    y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)  # [3]
    if z.shape != (3, 1):
        _verdict(name, False, f": give three predictions, got {z.numel()}")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        broadcast, perfect = F.mse_loss(z, y), F.mse_loss(y[:, None], y)  # both [3, 3] after broadcasting
    mse = float(((z.squeeze(-1) - y) ** 2).mean())
    ok = mse >= 1 and abs(float(broadcast - perfect)) < 1e-9
    _verdict(name, ok, " (true MSE >= 1 and the broadcast loss of perfect predictions)")


def check_hidden_worst_predictions(fn, name: str = "exercise 4") -> None:
    """Exercise: ``fn(labels)``, labels Float[batch] -> predictions Float[batch, 1] (a regression head's shape)
    whose broadcasting-mistake loss ``F.mse_loss(predictions, labels)`` equals that of the perfect predictions
    ``labels[:, None]``, with the largest true MSE among all such predictions.

    Judged by the two properties, never by the answer's formula: the broadcast loss must equal the perfect
    predictions' (to 1e-9, relative) and the true MSE must reach the largest value the constraint allows,
    ``4 Var(y)`` (population variance: the broadcast loss is ``Var(z) + Var(y) + (mean z - mean y)^2``),
    on label vectors of several lengths (1 included), means and spreads."""
    import warnings

    import torch.nn.functional as F

    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    g = torch.Generator().manual_seed(4)
    batches = [torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)]
    for n, shift, scale in ((5, 1.5, 2.0), (8, -3.0, 0.5), (2, 0.7, 1.0), (13, 10.0, 3.0)):
        batches.append(shift + scale * torch.randn(n, generator=g, dtype=torch.float64))
    for y in batches:
        try:
            z = torch.as_tensor(fn(y.clone())).to(torch.float64)
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
            return
        if z.shape != (len(y), 1):
            _verdict(name, False, f": return predictions of shape [batch, 1], as a regression head gives "
                                  f"(got {list(z.shape)} for batch {len(y)})")
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            broadcast, perfect = float(F.mse_loss(z, y)), float(F.mse_loss(y[:, None], y))  # [batch, batch]
        mse, most = float(((z.squeeze(-1) - y) ** 2).mean()), 4 * float(y.var(unbiased=False))
        if not abs(broadcast - perfect) <= 1e-9 * (1 + perfect):
            _verdict(name, False, " (the broadcast loss differs from the perfect predictions' on some labels)")
            return
        if not abs(mse - most) <= 1e-9 * (1 + most):
            _verdict(name, False, " (the broadcast loss is right, but some label vectors allow a larger true MSE)")
            return
    _verdict(name, True, f" ({len(batches)} label vectors: the perfect predictions' broadcast loss, the largest "
                         "true MSE)")
