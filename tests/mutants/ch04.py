"""Wrong answers to chapter 04's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("right padding only: the number of real tokens minus one", """
def my_last_token_positions(input_ids, pad_token_id):
    return (input_ids != pad_token_id).sum(-1) - 1
"""),
        ("left padding only: always the last column", """
def my_last_token_positions(input_ids, pad_token_id):
    return torch.full((input_ids.shape[0],), input_ids.shape[-1] - 1)
"""),
        ("the first real token, not the last (argmax without the flip)", """
def my_last_token_positions(input_ids, pad_token_id):
    return (input_ids != pad_token_id).int().argmax(-1)
"""),
        ("the first pad minus one, without the wrap-around: -1 on rows without padding", """
def my_last_token_positions(input_ids, pad_token_id):
    return (input_ids == pad_token_id).int().argmax(-1) - 1
"""),
    ],
    "ex2": [
        ("the plain BCE gradient: pos_weight ignored", """
zw, yw, w = sp.symbols("z y w")
pos_weight_grad = dsc.sigmoid(zw) - yw
"""),
        ("the whole gradient times w", """
zw, yw, w = sp.symbols("z y w")
pos_weight_grad = w * (dsc.sigmoid(zw) - yw)
"""),
        ("the (1 - y) factor of the negative term dropped", """
zw, yw, w = sp.symbols("z y w")
pos_weight_grad = -w * yw * (1 - dsc.sigmoid(zw)) + dsc.sigmoid(zw)
"""),
        ("the sign flipped: d/dz of the log-likelihood, not of the loss", """
zw, yw, w = sp.symbols("z y w")
pos_weight_grad = w * yw - (1 + (w - 1) * yw) * dsc.sigmoid(zw)
"""),
    ],
    "ex3": [
        ("the reference itself", "my_multi_label_loss = sequence_classification_loss"),
        ("summed over the labels, averaged over the batch only", """
def my_multi_label_loss(labels, pooled_logits, num_labels, problem_type=None):
    per_entry = -(labels * F.logsigmoid(pooled_logits) + (1 - labels) * F.logsigmoid(-pooled_logits))
    return per_entry.sum(-1).mean()
"""),
        ("a softmax across the labels: they compete for one unit of probability", """
def my_multi_label_loss(labels, pooled_logits, num_labels, problem_type=None):
    return -(labels * torch.log_softmax(pooled_logits, dim=-1)).sum(-1).mean()
"""),
        ("the sigmoid applied twice: logsigmoid of probabilities", """
def my_multi_label_loss(labels, pooled_logits, num_labels, problem_type=None):
    p = torch.sigmoid(pooled_logits)
    return -(labels * F.logsigmoid(p) + (1 - labels) * F.logsigmoid(-p)).mean()
"""),
        ("the labels detached: soft targets get no gradient", """
def my_multi_label_loss(labels, pooled_logits, num_labels, problem_type=None):
    labels = labels.detach()
    per_entry = -(labels * F.logsigmoid(pooled_logits) + (1 - labels) * F.logsigmoid(-pooled_logits))
    return per_entry.mean()
"""),
    ],
    "ex4": [
        ("the labels reversed: section 1's [3, 2, 1] generalised, a permutation", """
def hidden_worst_predictions(labels):
    return labels.flip(0).unsqueeze(-1)
"""),
        ("the labels sorted in descending order: another permutation", """
def hidden_worst_predictions(labels):
    return labels.sort(descending=True).values.unsqueeze(-1)
"""),
        ("mirrored about zero, not about the mean label", """
def hidden_worst_predictions(labels):
    return (-labels).unsqueeze(-1)
"""),
        ("the right predictions shaped [batch]: no broadcasting, no trap", """
def hidden_worst_predictions(labels):
    return 2 * labels.mean() - labels
"""),
        ("the right predictions rounded to two decimals", """
def hidden_worst_predictions(labels):
    return torch.round((2 * labels.mean() - labels) * 100).unsqueeze(-1) / 100
"""),
    ],
}
