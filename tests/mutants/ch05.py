"""Wrong answers to chapter 05's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("the first piece's tag (aggregation 'first', the chapter's reading)", """
def average_word_tags(logits, word_ids):
    tags, previous = [], None
    for t, w in enumerate(word_ids):
        if w is not None and w != previous:
            tags.append(int(logits[t].argmax()))
        previous = w
    return tags
"""),
        ("the logits averaged, not the probabilities", """
def average_word_tags(logits, word_ids):
    words = sorted({w for w in word_ids if w is not None})
    return [int(logits[[t for t, w in enumerate(word_ids) if w == k]].mean(0).argmax()) for k in words]
"""),
        ("a majority vote of the pieces' tags", """
from collections import Counter


def average_word_tags(logits, word_ids):
    words = sorted({w for w in word_ids if w is not None})
    votes = [Counter(int(logits[t].argmax()) for t, w in enumerate(word_ids) if w == k) for k in words]
    return [v.most_common(1)[0][0] for v in votes]
"""),
        ("the special tokens and padding grouped as words too", """
from itertools import groupby


def average_word_tags(logits, word_ids):
    probs = torch.softmax(logits, dim=-1)
    tags, t = [], 0
    for _, group in groupby(word_ids):
        n = len(list(group))
        tags.append(int(probs[t : t + n].mean(0).argmax()))
        t += n
    return tags
"""),
    ],
    "ex2": [
        ("an exclusive last index", """
def entities(tags):
    found, kind, first = [], None, None
    for i, tag in enumerate(tags + ["O"]):
        this = None if tag == "O" else tag[2:]
        continues = tag.startswith("I-") and this == kind
        if kind is not None and not continues:
            found.append((kind, first, i))
            kind = None
        if this is not None and not continues:
            kind, first = this, i
    return found
"""),
        ("an entity open at the end of the sentence dropped", """
def entities(tags):
    found, kind, first = [], None, None
    for i, tag in enumerate(tags):
        this = None if tag == "O" else tag[2:]
        continues = tag.startswith("I-") and this == kind
        if kind is not None and not continues:
            found.append((kind, first, i - 1))
            kind = None
        if this is not None and not continues:
            kind, first = this, i
    return found
"""),
        ("an I- after O skipped instead of starting an entity", """
def entities(tags):
    found, kind, first = [], None, None
    for i, tag in enumerate(tags + ["O"]):
        this = None if tag == "O" else tag[2:]
        continues = tag.startswith("I-") and this == kind
        if kind is not None and not continues:
            found.append((kind, first, i - 1))
            kind = None
        if tag.startswith("B-"):
            kind, first = this, i
    return found
"""),
        ("the type ignored: I-LOC continues a person", """
def entities(tags):
    found, kind, first = [], None, None
    for i, tag in enumerate(tags + ["O"]):
        this = None if tag == "O" else tag[2:]
        continues = tag.startswith("I-") and kind is not None
        if kind is not None and not continues:
            found.append((kind, first, i - 1))
            kind = None
        if this is not None and not continues:
            kind, first = this, i
    return found
"""),
    ],
    "ex3": [
        ("the reference itself", "my_token_loss = token_classification_loss"),
        ("the -100 positions counted in the denominator", """
def my_token_loss(logits, labels, num_labels, **kwargs):
    flat_logits, flat_labels = logits.reshape(-1, num_labels).float(), labels.reshape(-1)
    keep = flat_labels != -100
    log_p = torch.log_softmax(flat_logits[keep], dim=-1)
    picked = log_p.gather(-1, flat_labels[keep].unsqueeze(-1)).squeeze(-1)
    return -picked.sum() / flat_labels.numel()
"""),
        ("-100 clamped to tag 0: padding and continuations scored as O", """
def my_token_loss(logits, labels, num_labels, **kwargs):
    flat_logits, flat_labels = logits.reshape(-1, num_labels).float(), labels.reshape(-1).clamp(min=0)
    log_p = torch.log_softmax(flat_logits, dim=-1)
    return -log_p.gather(-1, flat_labels.unsqueeze(-1)).mean()
"""),
        ("the mean of each sentence's mean", """
def my_token_loss(logits, labels, num_labels, **kwargs):
    means = []
    for z, y in zip(logits.float(), labels):
        keep = y != -100
        log_p = torch.log_softmax(z[keep], dim=-1)
        means.append(-log_p.gather(-1, y[keep].unsqueeze(-1)).mean())
    return torch.stack(means).mean()
"""),
        ("the log-sum-exp detached", """
def my_token_loss(logits, labels, num_labels, **kwargs):
    flat_logits, flat_labels = logits.reshape(-1, num_labels).float(), labels.reshape(-1)
    keep = flat_labels != -100
    z = flat_logits[keep]
    picked = z.gather(-1, flat_labels[keep].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1).detach()
    return -picked.sum() / keep.sum()
"""),
    ],
    "ex4": [
        ("the ignored tokens not zeroed (their label clamped to 0)", """
def my_logit_grad(logits, labels, num_items_in_batch=None):
    keep = labels != -100
    gold = torch.nn.functional.one_hot(labels.clamp(min=0), logits.shape[-1])
    count = keep.sum() if num_items_in_batch is None else num_items_in_batch
    return (torch.softmax(logits.float(), -1) - gold) / count
"""),
        ("divided by every position, ignored ones included", """
def my_logit_grad(logits, labels, num_items_in_batch=None):
    keep = labels != -100
    gold = torch.nn.functional.one_hot(labels.clamp(min=0), logits.shape[-1])
    count = labels.numel() if num_items_in_batch is None else num_items_in_batch
    return (torch.softmax(logits.float(), -1) - gold) * keep[..., None] / count
"""),
        ("num_items_in_batch ignored: always this batch's kept count", """
def my_logit_grad(logits, labels, num_items_in_batch=None):
    keep = labels != -100
    gold = torch.nn.functional.one_hot(labels.clamp(min=0), logits.shape[-1])
    return (torch.softmax(logits.float(), -1) - gold) * keep[..., None] / keep.sum()
"""),
        ("each sentence over its own kept count (the mean of means' gradient)", """
def my_logit_grad(logits, labels, num_items_in_batch=None):
    keep = labels != -100
    gold = torch.nn.functional.one_hot(labels.clamp(min=0), logits.shape[-1])
    per_sentence = keep.sum(-1, keepdim=True)[..., None] * len(labels)
    return (torch.softmax(logits.float(), -1) - gold) * keep[..., None] / per_sentence
"""),
        ("the sign flipped: one-hot minus softmax", """
def my_logit_grad(logits, labels, num_items_in_batch=None):
    keep = labels != -100
    gold = torch.nn.functional.one_hot(labels.clamp(min=0), logits.shape[-1])
    count = keep.sum() if num_items_in_batch is None else num_items_in_batch
    return (gold - torch.softmax(logits.float(), -1)) * keep[..., None] / count
"""),
    ],
}
