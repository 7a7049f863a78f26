"""Losses across processes: one denominator for every rank, and the world-size factor that undoes DDP's mean.

Chapter: notebooks/12_distributed.ipynb.  Upstream: transformers ``Trainer`` with
``TrainingArguments(average_tokens_across_devices=True)`` (the default), which

* counts the kept targets of every micro-batch of an optimizer step (``labels[..., 1:] != -100`` for a causal
  LM), then gathers the counts of all processes and sums them: ``Trainer._get_num_items_in_batch``,
  ``self.accelerator.gather(num_items_in_batch.to(device)).sum()``;
* passes that global count to the model's loss as ``num_items_in_batch`` (sum over the rank's tokens / global
  count), then multiplies the loss by the number of processes (``Trainer.compute_loss``: ``loss_scale =
  self.accelerator.num_processes // self.get_tp_size()``, ``loss *= loss_scale``), because DDP *averages* the
  gradients of the ranks.  (The tensor-parallel size divides because those ranks see replicated batches.)  All
  of this only when the model's ``forward`` takes ``**kwargs`` (``model_accepts_loss_kwargs``, set in
  ``Trainer.__init__``) or a ``compute_loss_func`` is given; otherwise the Trainer counts nothing, applies no
  factor, and divides each micro-batch's own mean by the accumulation steps: the per-rank mean.

The chapter cites the exact lines of the installed source.  With data parallelism over ``W`` ranks, rank r
backprops ``L_r = W * S_r / N`` (``S_r`` its summed token losses, ``N`` the global count), DDP averages the
gradients, and ``(1/W) sum_r W * grad S_r / N = grad (S / N)``: the full-batch gradient, however unevenly
the tokens fall on the ranks.

Everything here also works without a process group (a single process is a world of size 1), so the same
training step runs under ``torchrun`` and in a notebook.
"""

from __future__ import annotations

import numbers

import torch
import torch.distributed as dist

from ._checks import check_ignore_index, check_integer, check_rank, shape_str
from .causal_lm import causal_lm_loss, next_token_labels

__all__ = [
    "count_targets",
    "global_num_items",
    "world_size",
    "rank",
    "data_parallel_loss",
    "split_for_ranks",
    "simulated_data_parallel_loss",
    "context_parallel_shard",
    "token_weights",
    "RECIPES",
]

# how each recipe weights one token of shard (rank r, micro-batch j) in the gradient DDP ends up with
RECIPES = ("global_count", "per_rank_mean", "no_world_size_factor", "all_reduced_loss")


def _initialized(group=None) -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size(group=None) -> int:
    """The number of processes that average their gradients (1 without a process group)."""
    return dist.get_world_size(group) if _initialized(group) else 1


def rank(group=None) -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank(group) if _initialized(group) else 0


def count_targets(labels: torch.Tensor | None = None, *, shift_labels: torch.Tensor | None = None,
                  ignore_index: int = -100) -> torch.Tensor:
    """The number of positions with a target, a 0-dim int64: the local ``num_items_in_batch``.

    ``labels``: Long[Tensor, "batch seq"], *unshifted* (a causal LM's labels): the targets are
    ``labels[..., 1:]`` (the last position of every row has none), as transformers counts them.
    ``shift_labels``: Long[Tensor, "batch seq"], already shifted (or cut from a shifted sequence,
    context parallelism): every entry that is not ``ignore_index`` counts.  Give exactly one of the
    two.
    """
    t, ignore_index = _check_count_inputs(labels, shift_labels, ignore_index)
    targets = next_token_labels(t, ignore_index) if labels is not None else t  # [batch, seq]
    return (targets != ignore_index).sum()  # [] int64


def _check_count_inputs(labels, shift_labels, ignore_index) -> tuple[torch.Tensor, int]:
    """count_targets' checks: exactly one integer tensor with a sequence dim, an int ignore_index."""
    _one_of("count_targets", labels, shift_labels)
    ignore_index = check_ignore_index(ignore_index)
    name, t = ("labels", labels) if labels is not None else ("shift_labels", shift_labels)
    check_integer(name, t, "token ids")
    if t.dim() == 0:
        raise ValueError(f"{name} must have a sequence dimension (shape [..., seq]), got a 0-dim tensor")
    return t, ignore_index


def _one_of(caller: str, labels, shift_labels) -> None:
    if (labels is None) == (shift_labels is None):
        raise TypeError(f"{caller} needs exactly one of labels (unshifted) or shift_labels (already shifted), "
                        f"got {'both' if labels is not None else 'neither'}")


def global_num_items(local_count: int | torch.Tensor, group=None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The sum of every rank's ``local_count``: the ``num_items_in_batch`` all ranks divide by.

    One ``all_reduce(SUM)`` of a single int64 (transformers gathers the counts with
    ``accelerator.gather`` and sums them, the same number).  Without a process group it returns
    ``local_count`` as a tensor. ``device``: where the count travels (NCCL needs a CUDA tensor; gloo
    a CPU one); default: the device of ``local_count`` when it is a tensor, else the CPU.
    """
    count = _as_count(local_count)  # [] int64, a copy
    if device is not None:
        count = count.to(device)
    if _initialized(group):
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)  # every rank: N = sum_r n_r
    return count


def _as_count(local_count) -> torch.Tensor:
    """global_num_items' check: an int, or a one-element integer tensor, >= 0; as a new int64 []."""
    if torch.is_tensor(local_count):
        if local_count.numel() != 1:
            raise ValueError(f"local_count must be a single count, got a tensor of shape {shape_str(local_count)}")
        kind = local_count.dtype
        if kind == torch.bool or kind.is_floating_point or kind.is_complex:
            raise TypeError(f"local_count must be an integer count, got dtype {local_count.dtype}")
        count = local_count.detach().reshape(()).to(torch.int64).clone()
    elif isinstance(local_count, numbers.Integral) and not isinstance(local_count, bool):
        count = torch.tensor(int(local_count), dtype=torch.int64)
    else:
        raise TypeError(f"local_count must be an int or a one-element integer tensor, got {type(local_count).__name__}")
    if int(count) < 0:
        raise ValueError(f"local_count must be >= 0, got {int(count)}")
    return count


def data_parallel_loss(logits: torch.Tensor, labels: torch.Tensor | None,
                       num_items_in_batch: int | torch.Tensor, world_size: int, *,
                       shift_labels: torch.Tensor | None = None, ignore_index: int = -100,
                       **kwargs) -> torch.Tensor:
    """The loss one rank backprops under data parallelism: ``world_size * S_r / N``.

    ``logits``: Float[Tensor, "batch seq vocab"] of this rank's rows (or of one micro-batch of
    them); ``labels`` / ``shift_labels`` as ``causal_lm_loss``, exactly one of them (as
    :func:`count_targets`; ``causal_lm_loss`` ignores ``labels`` when both come, as upstream);
    ``num_items_in_batch``: the global count N from :func:`global_num_items` (every rank, every
    micro-batch of the optimizer step); ``world_size``: the number of ranks whose gradients DDP
    averages.

    After DDP's mean over ranks the gradient is ``grad (sum_r S_r) / N``, the full-batch gradient
    (transformers: ``num_items_in_batch`` gathered in ``Trainer._get_num_items_in_batch`` and ``loss
    *= num_processes`` in ``Trainer.compute_loss``).  The value is ``world_size`` times this rank's
    share of the global loss; sum the ranks' ``S_r / N`` (an all-reduce of the detached value,
    divided by ``world_size``) to log the global loss.
    """
    _check_data_parallel(labels, shift_labels, num_items_in_batch, world_size)
    loss = causal_lm_loss(logits, labels, num_items_in_batch=num_items_in_batch,
                          ignore_index=ignore_index, shift_labels=shift_labels, **kwargs)  # S_r / N
    return loss * world_size  # undo DDP's division by world_size


def _check_data_parallel(labels, shift_labels, num_items_in_batch, world_size) -> None:
    """data_parallel_loss' own checks (causal_lm_loss checks the tensors)."""
    _check_world_size(world_size)
    if num_items_in_batch is None:
        raise TypeError("data_parallel_loss needs num_items_in_batch, the global count from global_num_items()")
    _one_of("data_parallel_loss", labels, shift_labels)


def _check_world_size(world_size) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")


def split_for_ranks(tensor: torch.Tensor, ranks: int, micro_batches: int = 1) -> list[list[torch.Tensor]]:
    """Rows of a global batch as a data-parallel sampler hands them out: ``out[r][j]``, rank r, micro-batch j.

    ``tensor``: [batch, ...] with batch divisible by ``ranks * micro_batches``; rank r gets the r-th block of
    ``batch / ranks`` consecutive rows, cut into ``micro_batches`` consecutive pieces.
    """
    for name, v in (("ranks", ranks), ("micro_batches", micro_batches)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    pieces = ranks * micro_batches
    if tensor.dim() == 0 or tensor.shape[0] % pieces:
        raise ValueError(f"the batch dimension of a tensor of shape {shape_str(tensor)} must be divisible by "
                         f"ranks * micro_batches = {ranks} * {micro_batches}")
    chunks = tensor.split(tensor.shape[0] // pieces)  # pieces x [batch / pieces, ...]
    return [list(chunks[r * micro_batches:(r + 1) * micro_batches]) for r in range(ranks)]


def simulated_data_parallel_loss(logits: torch.Tensor, labels: torch.Tensor, ranks: int = 2, micro_batches: int = 1,
                                 ignore_index: int = -100) -> torch.Tensor:
    """In one process, the objective whose gradient is the one DDP produces with the recipe of this module.

    ``logits``: Float[Tensor, "batch seq vocab"]; ``labels``: Long[Tensor, "batch seq"] (unshifted).  The
    rows are dealt out by :func:`split_for_ranks`; rank r backprops ``sum_j data_parallel_loss(...)`` over its
    micro-batches with the global count, and DDP averages over ranks: the result is
    ``(1/W) sum_r sum_j W S_rj / N = S / N``, ``causal_lm_loss`` of the whole batch (values and gradients).
    The torchrun script of the chapter checks that a real 2-process run gives the same gradient.
    """
    check_rank("logits", logits, (3,), "[batch, seq, vocab]")
    parts_z = split_for_ranks(logits, ranks, micro_batches)
    parts_y = split_for_ranks(labels, ranks, micro_batches)
    total = sum(count_targets(y, ignore_index=ignore_index) for ys in parts_y for y in ys)  # the all-reduced N
    per_rank = [sum(data_parallel_loss(z, y, total, ranks, ignore_index=ignore_index) for z, y in zip(zs, ys))
                for zs, ys in zip(parts_z, parts_y)]  # what each rank backprops
    return sum(per_rank) / ranks  # DDP: the mean of the ranks' gradients


def context_parallel_shard(labels: torch.Tensor, rank: int, world_size: int,
                           ignore_index: int = -100):
    """The positions and targets of ``rank``'s piece of a sequence split over ``world_size`` ranks.

    ``labels``: Long[Tensor, "batch seq"], unshifted, the whole sequence.  Returns ``(positions,
    shift_labels)``: a ``slice`` of the sequence dimension and Long[Tensor, "batch seq/world_size"],
    the piece of the sequence **shifted once, in full** (chapter 02), so the last position of a
    shard keeps its target, the first token of the next shard.  Pass it as ``causal_lm_loss(...,
    shift_labels=...)`` with the global count
    (``global_num_items(count_targets(shift_labels=...))``).  transformers builds the same
    ``shift_labels`` before it splits the buffers (``Trainer._prepare_context_parallel_inputs``).
    """
    _check_shard(labels, rank, world_size)
    width = labels.shape[1] // world_size
    positions = slice(rank * width, (rank + 1) * width)
    shift_labels = next_token_labels(labels, ignore_index)  # [batch, seq]: all of it, shifted
    return positions, shift_labels[:, positions].contiguous()  # [batch, width]


def _check_shard(labels, rank, world_size) -> None:
    """context_parallel_shard's checks: [batch, seq] integer labels, seq divisible, a valid rank."""
    check_integer("labels", labels, "token ids")
    check_rank("labels", labels, (2,), "[batch, seq]")
    seq = labels.shape[1]
    _check_world_size(world_size)
    if seq % world_size:
        raise ValueError(f"seq ({seq}, labels of shape {shape_str(labels)}) must be divisible by world_size "
                         f"({world_size})")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")


def token_weights(counts, recipe: str = "global_count") -> torch.Tensor:
    """The weight one kept token of shard (rank r, micro-batch j) gets in the gradient after DDP averages.

    ``counts``: [ranks, micro_batches] kept-token counts ``n_rj`` (a nested list or an integer tensor).
    Returns Float64[Tensor, "ranks micro_batches"]; the gradient DDP produces is
    ``sum_rj weight_rj * sum_{tokens of rj} grad loss_token``.  The full batch weights every token 1/N.

    * ``global_count``: ``num_items_in_batch`` = N all-reduced, times the world size W: ``W/N``, averaged: 1/N.
    * ``per_rank_mean``: each micro-batch's mean divided by the k micro-batches (a naive training loop;
      transformers' ``loss / gradient_accumulation_steps`` when the loss does not take ``num_items_in_batch``),
      then DDP's mean: ``1 / (W k n_rj)``.
    * ``no_world_size_factor``: the global count without the factor W: ``1 / (W N)``.
    * ``all_reduced_loss``: ``dist.all_reduce(loss); loss = loss / W`` on the per-rank means, so that every
      rank logs one number.  Autograd does not see the in-place all-reduce (torch warns), only the ``/ W``:
      the gradient is the ``per_rank_mean`` one divided by W again, ``1 / (W^2 k n_rj)``.
    A micro-batch with no kept token gets weight 0: it adds nothing to any recipe's gradient.  (Its per-rank
    *mean*, in ``per_rank_mean`` and ``all_reduced_loss``, is 0/0 = NaN, as in PyTorch: the gradient stays
    finite but the loss those recipes log is NaN.)
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    try:
        n = torch.as_tensor(counts)
    except (TypeError, ValueError, RuntimeError) as err:  # a ragged or non-numeric nested list
        raise ValueError(f"counts must be a [ranks, micro_batches] table of integer counts (every rank the same "
                         f"number of micro-batches), got {counts!r}") from err
    if n.is_floating_point() or n.is_complex() or n.dtype == torch.bool or n.dim() != 2 or n.numel() == 0:
        raise ValueError(f"counts must be integer counts of shape [ranks, micro_batches], got {shape_str(n)}"
                         f" of dtype {n.dtype}")
    if (n < 0).any():
        raise ValueError("counts must be >= 0")
    n = n.double()
    ranks, micro = n.shape
    total = n.sum()
    if recipe == "global_count":
        w = torch.full_like(n, 1.0) / total
    elif recipe == "no_world_size_factor":
        w = torch.full_like(n, 1.0) / (ranks * total)
    elif recipe == "per_rank_mean":
        w = 1.0 / (ranks * micro * n)
    else:
        w = 1.0 / (ranks * ranks * micro * n)
    return torch.where(n > 0, w, torch.zeros_like(w))
