"""Wrong answers to chapter 06's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("clamped to the last token instead of (0, 0)", """
def recipe_positions(start, end, seq):
    return (min(max(start, 0), seq - 1), min(max(end, 0), seq - 1))
"""),
        ("-1 for no answer instead of the [CLS] position 0", """
def recipe_positions(start, end, seq):
    return (start, end) if 0 <= start < seq and 0 <= end < seq else (-1, -1)
"""),
        ("off by one: an end one past the last token counted as inside", """
def recipe_positions(start, end, seq):
    return (start, end) if 0 <= start <= seq and 0 <= end <= seq else (0, 0)
"""),
        ("only the start checked: a cut-off end kept", """
def recipe_positions(start, end, seq):
    return (start, end) if 0 <= start < seq else (0, 0)
"""),
    ],
    "ex2": [
        ("divided by the whole batch: the cut-off rows counted in the mean", """
def my_start_grad(start_logits, start_positions):
    seq = start_logits.size(1)
    s = start_positions.clamp(0, seq)
    kept = s < seq
    gold = F.one_hot(s.clamp(max=seq - 1), seq).to(start_logits.dtype)
    return (torch.softmax(start_logits, -1) - gold) * kept[:, None] / (2 * len(s))
"""),
        ("the 1/2 of the two heads' mean forgotten", """
def my_start_grad(start_logits, start_positions):
    seq = start_logits.size(1)
    s = start_positions.clamp(0, seq)
    kept = s < seq
    gold = F.one_hot(s.clamp(max=seq - 1), seq).to(start_logits.dtype)
    return (torch.softmax(start_logits, -1) - gold) * kept[:, None] / kept.sum()
"""),
        ("cut-off answers clamped to the last token instead of ignored", """
def my_start_grad(start_logits, start_positions):
    seq = start_logits.size(1)
    gold = F.one_hot(start_positions.clamp(0, seq - 1), seq).to(start_logits.dtype)
    return (torch.softmax(start_logits, -1) - gold) / (2 * len(start_positions))
"""),
        ("negative positions ignored instead of scored at [CLS]", """
def my_start_grad(start_logits, start_positions):
    seq = start_logits.size(1)
    kept = (start_positions >= 0) & (start_positions < seq)
    gold = F.one_hot(start_positions.clamp(0, seq - 1), seq).to(start_logits.dtype)
    return (torch.softmax(start_logits, -1) - gold) * kept[:, None] / (2 * kept.sum())
"""),
        ("section 1's per-example gradient, not averaged over the batch", """
def my_start_grad(start_logits, start_positions):
    seq = start_logits.size(1)
    s = start_positions.clamp(0, seq)
    kept = s < seq
    gold = F.one_hot(s.clamp(max=seq - 1), seq).to(start_logits.dtype)
    return (torch.softmax(start_logits, -1) - gold) * kept[:, None] / 2
"""),
    ],
    "ex3": [
        ("clamped to the last token: cut-off answers scored at seq - 1", """
def my_qa_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    seq = start_logits.size(1)
    s = start_positions.view(-1).clamp(0, seq - 1)
    e = end_positions.view(-1).clamp(0, seq - 1)
    return (F.cross_entropy(start_logits, s) + F.cross_entropy(end_logits, e)) / 2
"""),
        ("the two losses summed, not averaged", """
def my_qa_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    seq = start_logits.size(1)
    s = start_positions.view(-1).clamp(0, seq)
    e = end_positions.view(-1).clamp(0, seq)
    return F.cross_entropy(start_logits, s, ignore_index=seq) + F.cross_entropy(end_logits, e, ignore_index=seq)
"""),
        ("the end head detached", """
def my_qa_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    seq = start_logits.size(1)
    s = start_positions.view(-1).clamp(0, seq)
    e = end_positions.view(-1).clamp(0, seq)
    start_loss = F.cross_entropy(start_logits, s, ignore_index=seq)
    end_loss = F.cross_entropy(end_logits.detach(), e, ignore_index=seq)
    return (start_loss + end_loss) / 2
"""),
        ("both heads pooled into one cross-entropy over 2 * batch rows", """
def my_qa_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    seq = start_logits.size(1)
    positions = torch.cat([start_positions.view(-1), end_positions.view(-1)]).clamp(0, seq)
    return F.cross_entropy(torch.cat([start_logits, end_logits]), positions, ignore_index=seq)
"""),
        ("a one-hot loss without the squeeze: [batch, 1] positions broadcast to [batch, batch, seq]", """
def my_qa_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    seq = start_logits.size(1)

    def head(logits, positions):
        p = positions.clamp(0, seq)
        kept = (p < seq).to(logits.dtype)
        gold = F.one_hot(p.clamp(max=seq - 1), seq).to(logits.dtype)
        per_row = -(gold * F.log_softmax(logits, dim=-1)).sum(-1)
        return (per_row * kept).sum() / kept.sum()

    return (head(start_logits, start_positions) + head(end_logits, end_positions)) / 2
"""),
    ],
}
