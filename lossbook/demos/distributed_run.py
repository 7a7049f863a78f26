"""Chapter 12's torchrun script: training steps of the tiny GPT with data (or context) parallelism.

    python -m torch.distributed.run --nproc_per_node=2 \
        -m lossbook.demos.distributed_run --modes global_count,per_rank_mean --out DIR

gloo on the CPU, NCCL when CUDA has a GPU for every local rank (``--backend`` overrides).  Every rank builds
the same global batch (``lossbook.demos.distributed.uneven_batch``, uneven token counts per rank) and keeps its
rows, wraps the model in ``DistributedDataParallel`` (which averages the gradients of the ranks), runs
``--steps`` AdamW steps and writes ``DIR/rank{r}.pt``, one record per mode of ``--modes``: the gradient of
step 0 after DDP's all-reduce, the global loss of every step (the sum of the ranks' summed token losses over
the global count, the same number in every mode), the local and global counts, held-out NLLs and the final
parameters.  The modes:

* ``global_count`` (the fix, transformers' ``average_tokens_across_devices``): all-reduce the count, each
  rank backprops ``world_size * S_r / N``.
* ``per_rank_mean``: each rank backprops its own mean (divided by the micro-batches); DDP averages.
* ``no_world_size_factor``: the global count without the factor.
* ``all_reduced_loss``: the per-rank mean, ``dist.all_reduce``-d in place and divided by the world size.
* ``cp`` / ``cp_local``: context parallelism, every rank scores one contiguous piece of every sequence;
  ``cp`` passes its piece of the labels shifted once in full (``shift_labels``), ``cp_local`` shifts its own
  piece (the bug).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..causal_lm import causal_lm_loss
from ..distributed import context_parallel_shard, count_targets, data_parallel_loss, global_num_items
from . import distributed as demo
from .causal_lm import mean_nll

__all__ = ["MODES", "data_parallel_step", "context_parallel_step", "run_mode", "main"]

MODES = ("global_count", "per_rank_mean", "no_world_size_factor", "all_reduced_loss", "cp", "cp_local")


def _say(line: str) -> None:
    """One line on stdout in one write: the ranks share torchrun's stdout, and one short write is not split."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def data_parallel_step(
    model, input_ids, labels, *, mode: str, micro_batches: int, world: int, device
):
    """Forward and backward of this rank's rows for one optimizer step.

    ``input_ids``, ``labels``: Long[Tensor, "rows seq"], this rank's rows, cut into
    ``micro_batches``; ``model``: a ``DistributedDataParallel`` (or a plain module when
    ``world == 1``).  Returns (local count, global count, loss); the loss is the global mean over
    every target of the step, ``all_reduce(sum_j S_rj / N)``, detached, for logging.
    """
    # chunk() would return fewer pieces: no micro-batch would be the last
    if input_ids.shape[0] % micro_batches:
        raise ValueError(
            f"this rank's {input_ids.shape[0]} rows do not split into "
            f"micro_batches={micro_batches} equal micro-batches"
        )
    xs, ys = input_ids.chunk(micro_batches), labels.chunk(micro_batches)  # k x [rows/k, seq]
    local = sum(count_targets(y) for y in ys)  # [] this rank's targets over all its micro-batches
    total = global_num_items(local, device=device)  # [] N: one all-reduce of one int64
    logged = torch.zeros((), device=device)
    for j, (x, y) in enumerate(zip(xs, ys)):
        last = j == micro_batches - 1
        sync = (contextlib.nullcontext() if last or not hasattr(model, "no_sync")
                else model.no_sync())
        with sync:  # DDP all-reduces the gradients only after the last micro-batch
            logits = model(x)  # [rows/k, seq, vocab]
            if mode == "global_count":
                loss = data_parallel_loss(logits, y, total, world)  # world * S_rj / N
            elif mode == "no_world_size_factor":
                loss = causal_lm_loss(logits, y, num_items_in_batch=total)  # S_rj / N
            elif mode == "per_rank_mean":
                loss = causal_lm_loss(logits, y) / micro_batches  # mean_rj / k
            elif mode == "all_reduced_loss":
                loss = causal_lm_loss(logits, y) / micro_batches
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    dist.all_reduce(loss)  # in place: autograd does not see it
                    loss = loss / world  # ... but it sees this
                    loss.backward()
                if caught and dist.get_rank() == 0 and j == 0:
                    _say(f"[rank 0] torch warned: {str(caught[0].message)[:120]}...")
            else:
                raise ValueError(f"mode must be one of {MODES[:4]} here, got {mode!r}")
            if mode != "all_reduced_loss":
                loss.backward()
            logged += causal_lm_loss(logits.detach(), y, num_items_in_batch=total)  # S_rj / N
    if world > 1:
        dist.all_reduce(logged)  # sum_r S_r / N = the global mean
    return int(local), int(total), float(logged)


def context_parallel_step(model, input_ids, labels, *, mode: str, world: int, rank: int, device):
    """Context parallelism: this rank scores one contiguous piece of every row.

    The piece is positions ``[rank * seq / world, (rank + 1) * seq / world)``.  The rank runs the
    model on the prefix up to the end of its piece (the keys and values of the earlier pieces, which
    ring attention would pass it) and keeps the logits of its piece.  ``cp``: its targets are its
    piece of the labels shifted once, in full; ``cp_local``: it shifts its own piece.  Both divide
    by the all-reduced count and multiply by ``world`` (DDP averages).  Returns (local count,
    global count, loss).
    """
    # positions: a slice of seq; shift_labels: [rows, seq/world]
    positions, shift_labels = context_parallel_shard(labels, rank, world)
    logits = model(input_ids[:, :positions.stop])[:, positions]  # [rows, seq/world, vocab]
    if mode == "cp":
        local = count_targets(shift_labels=shift_labels)
        total = global_num_items(local, device=device)
        loss = data_parallel_loss(logits, None, total, world, shift_labels=shift_labels)
    elif mode == "cp_local":
        piece = labels[:, positions]  # [rows, seq/world], unshifted
        local = count_targets(piece)
        total = global_num_items(local, device=device)
        loss = data_parallel_loss(logits, piece, total, world)
    else:
        raise ValueError(f"mode must be 'cp' or 'cp_local' here, got {mode!r}")
    loss.backward()
    logged = (loss.detach() / world).reshape(())
    if world > 1:
        dist.all_reduce(logged)
    return int(local), int(total), float(logged)


def run_mode(mode: str, steps: int, args, rank: int, world: int, local_rank: int, device, backend: str) -> dict:
    """``steps`` AdamW steps of a fresh model (the same initial weights in every mode) with ``mode``."""
    model = demo.build_model(device=device)  # same seed on every rank (DDP also broadcasts rank 0's weights)
    ddp = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=demo.CONFIG["lr"], weight_decay=0.0)
    record = {"mode": mode, "rank": rank, "world_size": world, "backend": backend, "losses": [],
              "local_counts": [], "global_counts": [], "heldout": []}
    held = demo.heldout_windows()
    for step in range(steps):
        input_ids, labels = (t.to(device) for t in demo.uneven_batch(step, ranks=world))  # [rows, seq]
        optimizer.zero_grad(set_to_none=True)
        if mode.startswith("cp"):
            counts = context_parallel_step(ddp, input_ids, labels, mode=mode, world=world, rank=rank, device=device)
        else:
            rows = input_ids.shape[0] // world
            mine = slice(rank * rows, (rank + 1) * rows)  # this rank's rows of the global batch
            counts = data_parallel_step(ddp, input_ids[mine], labels[mine], mode=mode,
                                        micro_batches=args.micro_batches, world=world, device=device)
        local, total, logged = counts
        if step == 0:
            record["grad0"] = demo.flat_grad(model)
            _say(f"[rank {rank}] {backend}, world {world}, {mode}: local targets {local}, "
                 f"global num_items_in_batch {total}, global loss {logged:.4f}")
        if rank == 0 and steps > 1 and (step + 1) % 100 == 0:
            _say(f"[rank 0] {mode}: step {step + 1}/{steps}, global loss {logged:.4f}")  # progress
        record["losses"].append(logged)
        record["local_counts"].append(local)
        record["global_counts"].append(total)
        optimizer.step()
        if args.eval_every and rank == 0 and ((step + 1) % args.eval_every == 0 or step + 1 == steps):
            record["heldout"].append((step + 1, mean_nll(model, *held)))
    record["params"] = demo.flat_params(model)
    if steps > 1:
        _say(f"[rank {rank}] {mode}: {steps} steps, last global loss {record['losses'][-1]:.4f}")
    del ddp
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", required=True,
                        help=f"comma-separated MODE or MODE:STEPS (default --steps); MODE in {', '.join(MODES)}")
    parser.add_argument("--out", required=True, help="folder for rank{r}.pt")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--micro-batches", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    args = parser.parse_args(argv)
    modes = dict((item.split(":") + [str(args.steps)])[:2] for item in args.modes.split(","))  # mode -> steps
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {MODES}")
    bad = [f"{m}:{n}" for m, n in modes.items() if not n.isdigit() or int(n) < 1]
    if bad or args.micro_batches < 1:
        parser.error(f"steps and --micro-batches must be positive integers, got {bad or args.micro_batches}")

    torch.set_num_threads(1)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    use_cuda = (torch.cuda.is_available() and os.environ.get("LOSSBOOK_DEVICE", "") != "cpu"
                and torch.cuda.device_count() >= local_world)  # NCCL wants one GPU per rank
    backend = args.backend or ("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=60))  # env:// from torchrun
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        records = {mode: run_mode(mode, int(steps), args, rank, world, local_rank, device, backend)
                   for mode, steps in modes.items()}
        torch.save(records, Path(args.out) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
