"""Wrong answers to chapter 02's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

_NGRAM = """
def my_ngram_nll(train_ids, eval_ids, vocab_size, order, add):
    from collections import Counter

    train, data_ = train_ids.tolist(), eval_ids.tolist()
    grams, ctx = Counter(), Counter()
    for n in range(order):
        for t in range(n, {end}):
            grams[tuple(train[t - n : t + 1])] += 1
            ctx[tuple(train[t - n : t])] += 1
    nll, scored = 0.0, 0
    for t in range({first}, len(data_)):
        gram = tuple(data_[max(0, t - order + 1) : t + 1])
        nll -= math.log((grams[gram] + add) / (ctx[gram[:-1]] + {smooth}))
        scored += 1
    return nll / {denominator}
"""


def _ngram(end="len(train)", first="1", smooth="add * vocab_size", denominator="scored"):
    return _NGRAM.format(end=end, first=first, smooth=smooth, denominator=denominator)


MUTANTS = {
    "ex1": [
        ("a wrapper around the reference", "def my_causal_lm_loss(**kw):\n    return 1.0 * causal_lm_loss(**kw)"),
        ("no shift: position t scored against token t", """
import torch.nn.functional as F


def my_causal_lm_loss(logits, labels, ignore_index=-100):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=ignore_index)
"""),
        ("the shift the wrong way round: logits [1:], labels [:-1]", """
import torch.nn.functional as F


def my_causal_lm_loss(logits, labels, ignore_index=-100):
    shift_logits = logits[..., 1:, :].float()
    shift_labels = labels[..., :-1]
    return F.cross_entropy(shift_logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=ignore_index)
"""),
        ("the padding counted in the denominator", """
import torch.nn.functional as F


def my_causal_lm_loss(logits, labels, ignore_index=-100):
    shift_logits = logits[..., :-1, :].float()
    shift_labels = labels[..., 1:]
    total = F.cross_entropy(shift_logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1),
                            ignore_index=ignore_index, reduction="sum")
    return total / shift_labels.numel()
"""),
        ("the mean of each sequence's mean", """
import torch.nn.functional as F


def my_causal_lm_loss(logits, labels, ignore_index=-100):
    rows = []
    for z, y in zip(logits[..., :-1, :].float(), labels[..., 1:]):
        if (y != ignore_index).any():
            rows.append(F.cross_entropy(z, y, ignore_index=ignore_index))
    return torch.stack(rows).mean()
"""),
    ],
    "ex2": [
        ("contiguous shards (the layout of section 3(d)), not the zigzag", """
def my_zigzag_targets(labels, shards):
    return list(next_token_labels(labels).chunk(shards, dim=1))
"""),
        ("each device shifts its own two chunks after the cut", """
def my_zigzag_targets(labels, shards):
    chunks = labels.chunk(2 * shards, dim=1)
    return [next_token_labels(torch.cat([chunks[k], chunks[2 * shards - 1 - k]], dim=1))
            for k in range(shards)]
"""),
        ("every chunk shifted on its own", """
def my_zigzag_targets(labels, shards):
    chunks = [next_token_labels(c) for c in labels.chunk(2 * shards, dim=1)]
    return [torch.cat([chunks[k], chunks[2 * shards - 1 - k]], dim=1) for k in range(shards)]
"""),
        ("chunks k and k + shards (round robin), not k and 2 * shards - 1 - k", """
def my_zigzag_targets(labels, shards):
    chunks = next_token_labels(labels).chunk(2 * shards, dim=1)
    return [torch.cat([chunks[k], chunks[k + shards]], dim=1) for k in range(shards)]
"""),
        ("zigzag of the labels, never shifted", """
def my_zigzag_targets(labels, shards):
    chunks = labels.chunk(2 * shards, dim=1)
    return [torch.cat([chunks[k], chunks[2 * shards - 1 - k]], dim=1) for k in range(shards)]
"""),
    ],
    "ex3": [
        ("the chapter's own n-gram model", "my_ngram_nll = demo.ngram_nll"),
        ("the first order - 2 targets skipped instead of backing off", _ngram(first="order - 1")),
        ("the mean over len(eval_ids), one too many", _ngram(denominator="len(data_)")),
        ("a context counted at the end of the text too, where no token follows it", _ngram(end="len(train) + 1")),
        ("add-k smoothing without the add * vocab_size in the denominator", _ngram(smooth="add")),
    ],
    "ex4": [
        ("the constant ln 4 (the value at equal logits only)", """
avg_ce = sp.log(4)
"""),
        ("the log-sum-exp, without the mean of the logits", """
z4 = lossbook.derivations.logit_symbols(4)
avg_ce = lossbook.derivations.log_sum_exp(z4)
"""),
        ("summed over the targets, not averaged", """
z4 = lossbook.derivations.logit_symbols(4)
avg_ce = sum(lossbook.derivations.cross_entropy(z4, y) for y in range(4))
"""),
        ("the cross-entropy of target 0 only", """
z4 = lossbook.derivations.logit_symbols(4)
avg_ce = lossbook.derivations.cross_entropy(z4, 0)
"""),
    ],
}
