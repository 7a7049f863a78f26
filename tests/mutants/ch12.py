"""Wrong answers to chapter 12's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("the per-rank mean left as it is", """
def rescale_rank_mean(mean_loss, local_count, num_items_in_batch, world_size):
    return mean_loss
"""),
        ("the right denominator, no world-size factor", """
def rescale_rank_mean(mean_loss, local_count, num_items_in_batch, world_size):
    return mean_loss * local_count / num_items_in_batch
"""),
        ("the mean divided by the global count: the local count missing", """
def rescale_rank_mean(mean_loss, local_count, num_items_in_batch, world_size):
    return world_size * mean_loss / num_items_in_batch
"""),
        ("the weight n / N applied to a detached mean: the right value, no gradient", """
def rescale_rank_mean(mean_loss, local_count, num_items_in_batch, world_size):
    return world_size * mean_loss.detach() * local_count / num_items_in_batch
"""),
    ],
    "ex2": [
        ("no world-size factor", """
import torch.nn.functional as F


def my_rank_loss(logits, labels, num_items_in_batch, world_size):
    targets = F.pad(labels, (0, 1), value=-100)[..., 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return total / num_items_in_batch
"""),
        ("the rank's own mean times the world size", """
import torch.nn.functional as F


def my_rank_loss(logits, labels, num_items_in_batch, world_size):
    targets = F.pad(labels, (0, 1), value=-100)[..., 1:]
    return world_size * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
"""),
        ("no shift: each position scored against its own token", """
import torch.nn.functional as F


def my_rank_loss(logits, labels, num_items_in_batch, world_size):
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
    return world_size * total / num_items_in_batch
"""),
        ("shifted the wrong way: padded in front, last column dropped", """
import torch.nn.functional as F


def my_rank_loss(logits, labels, num_items_in_batch, world_size):
    targets = F.pad(labels, (1, 0), value=-100)[..., :-1]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return world_size * total / num_items_in_batch
"""),
    ],
    "ex3": [
        ("the global count: what the all-reduce gives, not the local one", """
def local_count_objective(S, n):
    return sum(sum(S_r) for S_r in S) / sum(sum(n_r) for n_r in n)
"""),
        ("each micro-batch's own mean, divided by the micro-batches (the naive loop)", """
def local_count_objective(S, n):
    rank_losses = [sum(s / c for s, c in zip(S_r, n_r)) / len(S_r) for S_r, n_r in zip(S, n)]
    return sum(rank_losses) / len(rank_losses)
"""),
        ("DDP's mean forgotten: the ranks' losses summed", """
def local_count_objective(S, n):
    return sum(sum(S_r) / sum(n_r) for S_r, n_r in zip(S, n))
"""),
        ("a constant: the two-rank, one-micro-batch answer typed for every shape", """
def local_count_objective(S, n):
    return S[0][0] / n[0][0]
"""),
    ],
    "ex4": [
        ("the contiguous split of section 2: balanced targets, unbalanced attention", """
def head_tail_shard(labels, rank, world_size):
    width = labels.shape[-1] // world_size
    positions = torch.arange(rank * width, (rank + 1) * width)
    shift_labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    return positions, shift_labels[:, positions]
"""),
        ("each chunk shifted on its own: a target lost at every cut", """
def head_tail_shard(labels, rank, world_size):
    width = labels.shape[-1] // (2 * world_size)
    pieces = []
    for c in (rank, 2 * world_size - 1 - rank):
        chunk = labels[:, c * width:(c + 1) * width]
        pieces.append((torch.arange(c * width, (c + 1) * width),
                       torch.nn.functional.pad(chunk, (0, 1), value=-100)[:, 1:]))
    return torch.cat([p for p, _ in pieces]), torch.cat([y for _, y in pieces], dim=1)
"""),
        ("round robin: chunks r and W + r", """
def head_tail_shard(labels, rank, world_size):
    width = labels.shape[-1] // (2 * world_size)
    positions = torch.cat([torch.arange(rank * width, (rank + 1) * width),
                           torch.arange((world_size + rank) * width, (world_size + rank + 1) * width)])
    shift_labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    return positions, shift_labels[:, positions]
"""),
        ("shifted with torch.roll: the last position wraps around to the first token", """
def head_tail_shard(labels, rank, world_size):
    width = labels.shape[-1] // (2 * world_size)
    positions = torch.cat([torch.arange(rank * width, (rank + 1) * width),
                           torch.arange((2 * world_size - 1 - rank) * width, (2 * world_size - rank) * width)])
    return positions, torch.roll(labels, -1, dims=1)[:, positions]
"""),
        ("not shifted: the labels at the rank's positions", """
def head_tail_shard(labels, rank, world_size):
    width = labels.shape[-1] // (2 * world_size)
    positions = torch.cat([torch.arange(rank * width, (rank + 1) * width),
                           torch.arange((2 * world_size - 1 - rank) * width, (2 * world_size - rank) * width)])
    return positions, labels[:, positions]
"""),
    ],
    "ex5": [
        ("per-token weights: the token count of exercise 2 instead of sequences", """
def my_sequence_rank_loss(logits, labels, num_sequences, world_size):
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    total = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="sum")
    return world_size * total / (targets != -100).sum()
"""),
        ("the rank's own mean of its rows' means: the per-rank mean again", """
def my_sequence_rank_loss(logits, labels, num_sequences, world_size):
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    counts = (targets != -100).sum(-1)
    return (token.sum(-1)[counts > 0] / counts[counts > 0]).mean()
"""),
        ("no world-size factor", """
def my_sequence_rank_loss(logits, labels, num_sequences, world_size):
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    counts = (targets != -100).sum(-1)
    return (token.sum(-1) / counts.clamp(min=1)).sum() / num_sequences
"""),
        ("each row's summed loss, not its mean", """
def my_sequence_rank_loss(logits, labels, num_sequences, world_size):
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return world_size * token.sum() / num_sequences
"""),
        ("a row with no target divides 0 by 0", """
def my_sequence_rank_loss(logits, labels, num_sequences, world_size):
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return world_size * (token.sum(-1) / (targets != -100).sum(-1)).sum() / num_sequences
"""),
    ],
}
