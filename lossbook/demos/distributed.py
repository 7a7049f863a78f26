"""Demo material of chapter 12 (losses across processes): uneven batches, the tiny GPT, the single-process
reference, and a launcher that runs ``lossbook.demos.distributed_run`` under ``torchrun`` in a subprocess.

The data are chapter 02's nursery rhymes; the model is chapter 02's ``TinyTransformer(causal=True)``, smaller.
Every batch is a pure function of ``(seed, step)``, so every rank, and the single-process reference, builds the
same global batch and takes its own rows of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..causal_lm import causal_lm_loss
from ..models import TinyTransformer
from .causal_lm import load_rhymes, mean_nll, stream_windows

__all__ = [
    "CONFIG",
    "uneven_batch",
    "heldout_windows",
    "bigram_nll",
    "build_model",
    "flat_grad",
    "flat_params",
    "full_batch_run",
    "free_port",
    "torchrun_command",
    "RunResult",
    "LaunchTimeout",
    "launch",
    "relative_error",
    "distributed_cases",
    "simulated_grad",
    "UpstreamLM",
    "PlainLM",
    "real_trainer",
    "transformers_data_parallel",
    "rank_loss_cases",
    "check_rescaled_rank_mean",
    "check_rank_loss",
    "check_local_count_objective",
    "check_head_tail_shard",
    "check_sequence_rank_loss",
]

# one place for the demo's sizes: the torchrun script, the reference and the tests read them
CONFIG = dict(rows=8, seq=32, d_model=32, n_heads=2, n_layers=2, lr=3e-3, short=(3, 9), long=(26, 33), seed=0)

_DATA = None


def _data():
    global _DATA
    if _DATA is None:
        _DATA = load_rhymes(heldout_every=6)
    return _DATA


def uneven_batch(step: int, *, rows: int = CONFIG["rows"], seq: int = CONFIG["seq"], ranks: int = 2,
                 short=CONFIG["short"], long=CONFIG["long"], seed: int = CONFIG["seed"], ignore_index: int = -100):
    """The global batch of training step ``step``: ``(input_ids, labels)``, Long[Tensor, "rows seq"] each.

    Random windows of the training rhymes, right-padded: the rows of the first half of the ranks (rank 0 of
    2) keep ``short`` = [3, 9) real tokens, the others ``long`` = [26, 33), so the ranks hold very different
    numbers of targets, as a length-grouped or packed sampler produces.  Padding has ``pad_id`` inputs and
    ``ignore_index`` labels.  A pure function of ``(seed, step)``: every process builds the same batch.
    """
    if ranks < 1 or rows % ranks:
        raise ValueError(f"rows ({rows}) must be divisible by ranks ({ranks}): every rank gets rows / ranks rows")
    data = _data()
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    starts = torch.randint(0, data.train_ids.numel() - seq, (rows,), generator=g)
    inputs = torch.stack([data.train_ids[s:s + seq] for s in starts.tolist()])  # [rows, seq]
    per_rank = rows // ranks
    lengths = torch.cat([
        torch.randint(*(short if r < ranks // 2 else long), (per_rank,), generator=g) for r in range(ranks)
    ]).clamp(max=seq)  # [rows]
    real = torch.arange(seq)[None, :] < lengths[:, None]  # [rows, seq]
    input_ids = torch.where(real, inputs, torch.full_like(inputs, data.tokenizer.pad_id))
    labels = torch.where(real, inputs, torch.full_like(inputs, ignore_index))
    return input_ids, labels


def heldout_windows(seq: int = CONFIG["seq"]):
    """The held-out rhymes cut into windows, shifted once: ``(input_ids, shift_labels)`` for ``mean_nll``."""
    return stream_windows(_data().heldout_ids, seq)


def bigram_nll(smoothing=(0.01, 0.03, 0.1, 0.3, 1.0), validation_fraction: float = 1 / 6) -> dict:
    """A count-based baseline: a character bigram model with add-k smoothing, scored on the held-out rhymes.

    k is chosen from ``smoothing`` on a validation cut of the *training* stream (its last
    ``validation_fraction``, fitted on the rest); the chosen k is then refitted on the whole training stream and
    scored once on the held-out rhymes, every character after the first, as ``mean_nll`` scores the model.
    Returns ``{"k", "validation" (k -> NLL), "heldout"}`` in nats.
    """
    data = _data()
    vocab = data.tokenizer.vocab_size

    def fit(ids):
        counts = torch.zeros(vocab, vocab, dtype=torch.float64)  # [previous, next]
        counts.index_put_((ids[:-1], ids[1:]), torch.ones(ids.numel() - 1, dtype=torch.float64), accumulate=True)
        return counts

    def nll(counts, k, ids):
        probs = (counts + k) / (counts + k).sum(1, keepdim=True)  # [vocab, vocab]
        return float(-probs[ids[:-1], ids[1:]].log().mean())

    cut = int(data.train_ids.numel() * (1 - validation_fraction))
    fitted = fit(data.train_ids[:cut])
    validation = {k: nll(fitted, k, data.train_ids[cut:]) for k in smoothing}
    best = min(validation, key=validation.get)
    return {"k": best, "validation": validation, "heldout": nll(fit(data.train_ids), best, data.heldout_ids)}


def build_model(seed: int = CONFIG["seed"], device: torch.device | str = "cpu") -> TinyTransformer:
    """The chapter's tiny GPT, initialised from ``seed`` (the same weights on every rank)."""
    torch.manual_seed(seed)
    model = TinyTransformer(_data().tokenizer.vocab_size, d_model=CONFIG["d_model"], n_heads=CONFIG["n_heads"],
                            n_layers=CONFIG["n_layers"], max_len=CONFIG["seq"], causal=True)
    return model.to(device)


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    """Every parameter's gradient, flattened into one float64 vector on the CPU (zeros where there is none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().double().cpu()
                      for p in model.parameters()])


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double().cpu() for p in model.parameters()])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())


def full_batch_run(steps: int = 1, *, seed: int = CONFIG["seed"], lr: float = CONFIG["lr"], ranks: int = 2,
                   eval_every: int = 0, device: torch.device | str = "cpu", progress: bool = False) -> dict:
    """The single-process reference: the same model and batches, the loss of the *whole* global batch.

    Returns ``{"grad0": gradient of step 0, "losses": [loss per step], "heldout": [(step, nll)], "params":
    the parameters after the last step}``, the fields the torchrun script writes.  ``progress``: a tqdm bar.
    """
    from tqdm.auto import tqdm

    model = build_model(seed, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    out = {"losses": [], "heldout": []}
    held = heldout_windows()
    for step in tqdm(range(steps), desc="one process, full batch", disable=not progress, mininterval=0.5):
        input_ids, labels = (t.to(device) for t in uneven_batch(step, ranks=ranks, seed=seed))
        optimizer.zero_grad(set_to_none=True)
        loss = causal_lm_loss(model(input_ids), labels)  # [] mean over every target of the global batch
        loss.backward()
        if step == 0:
            out["grad0"] = flat_grad(model)
        out["losses"].append(float(loss.detach()))
        optimizer.step()
        if eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            out["heldout"].append((step + 1, mean_nll(model, *held)))
    out["params"] = flat_params(model)
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(modes, out_dir, *, nproc: int = 2, port: int | None = None, steps: int = 1,
                     micro_batches: int = 1, eval_every: int = 0, backend: str | None = None) -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node=N ... -m lossbook.demos.distributed_run --modes ...``.

    ``sys.executable -m torch.distributed.run`` is ``torchrun`` of the running interpreter (a bare
    ``torchrun`` on PATH may belong to another environment).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={port or free_port()}",
           "-m", "lossbook.demos.distributed_run", "--modes", ",".join(modes), "--out", str(out_dir),
           "--steps", str(steps), "--micro-batches", str(micro_batches), "--eval-every", str(eval_every)]
    if backend:
        cmd += ["--backend", backend]
    return cmd


@dataclass
class RunResult:
    """What a torchrun launch returned: the exit code, the combined output, the records, the time.

    ``records[mode][r]`` is rank r's record of ``mode`` (a dict written by the script).
    """

    returncode: int
    output: str
    records: dict = field(default_factory=dict)
    seconds: float = 0.0

    def rank_lines(self) -> str:
        """The lines the ranks printed (``[rank r] ...``), without torchrun's own log lines."""
        return "\n".join(line for line in self.output.splitlines() if line.startswith("[rank"))


class LaunchTimeout(RuntimeError):
    """A torchrun launch ran past its timeout and was killed: ``output`` (what it printed until then), ``workers``
    (the pids of the processes torchrun had started, every one of them killed)."""

    def __init__(self, message: str, output: str, workers: list[int]):
        super().__init__(message)
        self.output, self.workers = output, workers


def _descendants(pid: int) -> list[int]:
    """The pids of every process below ``pid`` (children, their children...), read from /proc (Linux; else [])."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the field after the state
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> list[int]:
    """End torchrun (``proc``) and every worker it started; returns the workers' pids.

    torchrun starts each worker in a session of its own (``start_new_session=True`` in
    torch/distributed/elastic/multiprocessing/subprocess_handler/subprocess_handler.py), so killing torchrun's
    process group does not reach them: orphaned, they would keep running, and keep the output pipe open.  So the
    workers are found first (/proc), torchrun is asked to stop (SIGTERM: it terminates its workers), and after
    ``grace`` seconds whatever is left, torchrun's group and each worker's own group, is killed.
    """
    workers = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # proc leads its session (start_new_session): its group id is its pid
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    for pid in [proc.pid, *workers]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # a worker leads its own session and group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    return workers


def launch(modes, *, nproc: int = 2, steps: int = 1, micro_batches: int = 1, eval_every: int = 0,
           timeout: float = 120.0, backend: str | None = None) -> RunResult:
    """Run ``lossbook.demos.distributed_run`` under torchrun with ``nproc`` processes and collect the ranks' files.

    ``modes``: a mode or a list of modes (``"mode:steps"`` overrides ``steps`` for one), run one after the
    other in the same process group (starting Python, torch and lossbook in every process costs seconds; a
    step of the tiny GPT costs milliseconds).

    Each process gets ``OMP_NUM_THREADS=1``; the rendezvous is on 127.0.0.1 and a free port.  If the launch runs
    past ``timeout`` seconds (all attempts together), or the caller is interrupted, torchrun **and its workers**
    are killed (:func:`_stop`) before this returns, so a hung collective can neither hang the caller nor leave
    processes behind: a timeout raises :class:`LaunchTimeout` (a ``RuntimeError``) with the output so far and the
    killed workers' pids.  A non-zero exit raises ``RuntimeError`` with the output.
    """
    modes = [modes] if isinstance(modes, str) else list(modes)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="lossbook-ddp-") as out_dir:
        for attempt in range(2):  # a port taken between free_port() and the bind: try once more
            cmd = torchrun_command(modes, out_dir, nproc=nproc, steps=steps, micro_batches=micro_batches,
                                   eval_every=eval_every, backend=backend)
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    cwd=package_root, start_new_session=True)
            try:
                output, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                workers = _stop(proc)
                try:  # the pipe closes once every process that held it is gone
                    output, _ = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    output = "(the output could not be read)"
                raise LaunchTimeout(f"torchrun {modes} ran past {timeout} s and was killed with its "
                                    f"{len(workers)} worker process(es); output:\n{output}", output, workers) from None
            except BaseException:  # KeyboardInterrupt (a notebook's stop button) or anything else: leave nothing behind
                _stop(proc, grace=1.0)
                raise
            seconds = time.perf_counter() - start
            if proc.returncode == 0 or "address already in use" not in output.lower() or attempt:
                break
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun {modes} exited with {proc.returncode}; output:\n{output}")
        ranks = [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(nproc)]  # tensors, numbers
    names = [m.split(":")[0] for m in modes]
    return RunResult(proc.returncode, output, {m: [ranks[r][m] for r in range(nproc)] for m in names}, seconds)


def distributed_cases(seed: int = 0, *, ranks: int = 2, dtype: torch.dtype = torch.float64) -> list[dict]:
    """Inputs for the chapter's checks: ``{"logits", "labels", "ranks"}`` with uneven targets per rank.

    ``logits`` [batch, seq, vocab] with batch a multiple of ``ranks``; the rows of rank 0 keep few targets,
    the others many; one case has a row with no target at all (all ``-100``), one has equal counts on every
    rank (where the per-rank mean happens to be right), one has extreme logits.
    """
    g = torch.Generator().manual_seed(seed)
    cases = []
    for rows_per_rank, seq, vocab, kind in [(2, 8, 5, "uneven"), (1, 6, 7, "uneven"), (3, 10, 4, "empty_row"),
                                            (2, 6, 3, "even"), (2, 8, 6, "extreme")]:
        rows = rows_per_rank * ranks
        logits = torch.randn(rows, seq, vocab, generator=g)
        if kind == "extreme":
            logits = logits * 30
        labels = torch.randint(0, vocab, (rows, seq), generator=g)
        for r in range(rows):
            rank_of_row = r // rows_per_rank
            if kind == "even":
                keep = seq
            elif rank_of_row == 0:
                keep = int(torch.randint(2, 4, (1,), generator=g))
            else:
                keep = int(torch.randint(seq - 1, seq + 1, (1,), generator=g))
            labels[r, keep:] = -100
        if kind == "empty_row":
            labels[0] = -100
        cases.append({"logits": logits.to(dtype), "labels": labels, "ranks": ranks})
    return cases


def simulated_grad(objective, steps_batch: int = 0, *, ranks: int = 2, micro_batches: int = 1,
                   seed: int = CONFIG["seed"]) -> torch.Tensor:
    """The gradient, for the chapter's model at its initial weights on batch ``steps_batch``, of a simulated
    data-parallel ``objective(logits, labels, ranks=..., micro_batches=...)`` computed in this one process.

    With ``lossbook.distributed.simulated_data_parallel_loss`` it is the full-batch gradient; with a bug-zoo
    exhibit it is the gradient the real torchrun run of that bug produces.
    """
    model = build_model(seed)
    input_ids, labels = uneven_batch(steps_batch, ranks=ranks, seed=seed)
    model.zero_grad(set_to_none=True)
    objective(model(input_ids), labels, ranks=ranks, micro_batches=micro_batches).backward()
    return flat_grad(model)


class UpstreamLM(torch.nn.Module):
    """The tiny GPT written as a transformers causal LM is: ``forward(input_ids, labels=None, **kwargs)`` returns
    ``{"loss", "logits"}``, the loss from transformers' ``LOSS_MAPPING[self.loss_type]`` (``ForCausalLMLoss``)
    called with the keyword arguments the Trainer passes (``num_items_in_batch``), as a transformers model calls
    its ``self.loss_function``.

    The two things ``Trainer.__init__`` looks for: a forward that takes ``**kwargs`` (then
    ``model_accepts_loss_kwargs`` is True and the Trainer counts targets and passes ``num_items_in_batch``) and
    ``loss_type = "ForCausalLM"`` (then ``_loss_shifts_labels`` is True: it counts ``labels[..., 1:]``).
    """

    loss_type = "ForCausalLM"

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels=None, **kwargs):
        from transformers.loss.loss_utils import LOSS_MAPPING

        logits = self.model(input_ids)  # [batch, seq, vocab]
        loss = None if labels is None else LOSS_MAPPING[self.loss_type](logits, labels, logits.shape[-1], **kwargs)
        return {"loss": loss, "logits": logits}


class PlainLM(torch.nn.Module):
    """The same model and loss written without ``**kwargs`` and without ``loss_type``: ``forward(input_ids,
    labels=None)`` returns transformers' ``ForCausalLMLoss`` of its own rows, a mean over its own targets."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels=None):
        from transformers.loss.loss_utils import ForCausalLMLoss

        logits = self.model(input_ids)  # [batch, seq, vocab]
        loss = None if labels is None else ForCausalLMLoss(logits, labels, logits.shape[-1])
        return {"loss": loss, "logits": logits}


def real_trainer(model, **arguments):
    """A real ``transformers.Trainer``, built as a user builds one, offline, on the CPU:
    ``Trainer(model=model, args=TrainingArguments(output_dir=..., report_to="none", use_cpu=True, **arguments))``.
    Nothing is trained or saved (the output directory is a temporary one, gone when this returns)."""
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory(prefix="lossbook-trainer-") as out:
        return Trainer(model=model, args=TrainingArguments(output_dir=out, report_to="none", use_cpu=True,
                                                           **arguments))


class _Overlay:
    """An object seen with a few attributes replaced: every other attribute is the object's own."""

    def __init__(self, base, **replaced):
        self.__dict__.update(replaced)
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)


def _rank_view(trainer, world: int, gather):
    """A real Trainer seen from one rank of a simulated world of ``world`` processes: everything is the Trainer's
    own (``model_accepts_loss_kwargs``, ``_loss_shifts_labels``, ``average_tokens_across_devices``, the tensor- and
    context-parallel sizes, ...) except ``args.world_size``, ``accelerator.num_processes`` and the collective
    ``accelerator.gather``."""
    return _Overlay(trainer, args=_Overlay(trainer.args, world_size=world),
                    accelerator=_Overlay(trainer.accelerator, num_processes=world, gather=gather))


def transformers_data_parallel(step: int = 0, *, ranks: int = 2, micro_batches: int = 1,
                               seed: int = CONFIG["seed"], loss_kwargs: bool = True, **arguments) -> dict:
    """transformers' own ``Trainer._get_num_items_in_batch`` and ``Trainer.compute_loss``, run for each rank.

    A real ``Trainer`` is built on the chapter's model (:func:`real_trainer`), wrapped as :class:`UpstreamLM`
    (``loss_kwargs=True``: forward takes ``**kwargs``, ``loss_type`` set) or :class:`PlainLM` (neither), with
    ``gradient_accumulation_steps=micro_batches`` and any other ``TrainingArguments`` in ``arguments``
    (``average_tokens_across_devices=False``, say).  The installed functions run unmodified on that Trainer, seen
    from each of ``ranks`` simulated ranks (``_rank_view``: the world size, and the collective
    ``accelerator.gather`` played by handing every rank the list of all ranks' counts, which upstream sums), on
    batch ``step``.  Each micro-batch's loss is divided by the number of accumulation steps when it was not
    scaled by ``num_items_in_batch``, as ``Trainer.training_step`` does (``loss_is_scaled_for_ga``), then
    backpropagated.  Returns ``{"model_accepts_loss_kwargs", "loss_shifts_labels", "local_counts", "num_items"
    (None where the Trainer counts nothing), "rank_losses" (per rank, per micro-batch, detached), "grad" (the mean
    over ranks of the ranks' gradients, as DDP averages them)}``.
    """
    from transformers import Trainer

    from ..distributed import split_for_ranks

    model = build_model(seed)
    upstream = UpstreamLM(model) if loss_kwargs else PlainLM(model)
    trainer = real_trainer(upstream, gradient_accumulation_steps=micro_batches, **arguments)
    input_ids, labels = uneven_batch(step, ranks=ranks, seed=seed)
    xs, ys = split_for_ranks(input_ids, ranks, micro_batches), split_for_ranks(labels, ranks, micro_batches)
    batches = [[{"input_ids": x, "labels": y} for x, y in zip(xr, yr)] for xr, yr in zip(xs, ys)]
    cpu = torch.device("cpu")
    local = [trainer._get_num_items_in_batch(b, cpu) for b in batches]  # world size 1: no gather, the local count
    counted = local[0] is not None
    everyone = torch.stack([c.reshape(()) for c in local]) if counted else None  # what gather returns everywhere
    grads, rank_losses, num_items = [], [], []
    for r in range(ranks):
        view = _rank_view(trainer, ranks, lambda t: everyone)
        n = Trainer._get_num_items_in_batch(view, batches[r], cpu)
        num_items.append(None if n is None else int(n))
        scaled = trainer.model_accepts_loss_kwargs and n is not None  # training_step's loss_is_scaled_for_ga
        model.zero_grad(set_to_none=True)
        losses = []
        for inputs in batches[r]:
            loss = Trainer.compute_loss(view, upstream, dict(inputs), num_items_in_batch=n)
            if not scaled:
                loss = loss / micro_batches  # training_step: loss / self.current_gradient_accumulation_steps
            loss.backward()  # micro-batches accumulate, as in Trainer.training_step
            losses.append(float(loss.detach()))
        rank_losses.append(losses)
        grads.append(flat_grad(model))
    return {"model_accepts_loss_kwargs": trainer.model_accepts_loss_kwargs,
            "loss_shifts_labels": trainer._loss_shifts_labels,
            "local_counts": [int(c) for c in local] if counted else None, "num_items": num_items,
            "rank_losses": rank_losses, "grad": sum(grads) / ranks}


# --- the exercises' checks: each prints a verdict only (never the answer or its distance) -----------------------


def _verdict(name: str, ok: bool, detail: str = "") -> None:
    from ..checks import print_verdict

    print_verdict(f"{name}: {'correct' if ok else 'not yet'}{detail}", ok)


def _not_attempted(name: str) -> None:
    from ..checks import print_verdict

    print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)


def _splits(*, nonempty: bool = False) -> list[tuple[int, int, dict]]:
    """The exercises' data-parallel splits ``(ranks, micro_batches, {"logits", "labels"})``: 2-4 ranks, 1-2
    micro-batches per rank, uneven counts, a row with no target, equal counts, extreme logits.  ``nonempty``:
    only splits where every micro-batch holds a target (a per-micro-batch mean is 0/0 otherwise)."""
    from ..distributed import count_targets, split_for_ranks

    out = []
    for ranks in (2, 3, 4):
        for case in distributed_cases(seed=10 + ranks, ranks=ranks):
            for micro in (1, 2):
                if case["logits"].shape[0] % (ranks * micro):
                    continue
                pieces = [y for yr in split_for_ranks(case["labels"], ranks, micro) for y in yr]
                if nonempty and any(int(count_targets(y)) == 0 for y in pieces):
                    continue
                out.append((ranks, micro, {"logits": case["logits"], "labels": case["labels"]}))
    return out


def _judge_ddp(name: str, fn, objective_for, reference, splits, what: str) -> None:
    """Compare ``objective_for(fn, ranks, micro)`` (the mean over simulated ranks, as DDP averages) with
    ``reference`` on every split: values and gradients, atol 1e-9 in float64; print a verdict."""
    from ..checks import compare_losses

    if fn is Ellipsis:
        _not_attempted(name)
        return
    for ranks, micro, case in splits:
        try:
            result = compare_losses(objective_for(fn, ranks, micro), reference, [case], atol=1e-9)
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
            return
        if result.value_error > result.atol:
            _verdict(name, False, f" (DDP's mean of your ranks' losses is not {what} on some splits)")
            return
        if not result.passed:
            _verdict(name, False, f" (the values are {what}, the gradients are not, on some splits)")
            return
    _verdict(name, True, f" (values and gradients equal {what} on {len(splits)} splits: 2-4 ranks, 1-2 "
                         "micro-batches)")


def _full_batch_loss(logits, labels):
    return causal_lm_loss(logits, labels)


def check_rescaled_rank_mean(fn, name: str = "exercise 1") -> None:
    """Exercise: ``fn(mean_loss, local_count, num_items_in_batch, world_size)`` turns one micro-batch's mean loss
    (over its own ``local_count`` targets) into the loss that micro-batch should backprop.

    Each micro-batch of every simulated rank gets its own mean (``causal_lm_loss``), its own count and the
    all-reduced count (0-dim int64 tensors, as the Trainer hands them); a rank backprops the sum over its
    micro-batches of ``fn``; DDP's mean over ranks must be the full batch's ``causal_lm_loss``, values and
    gradients, on every split."""
    from ..distributed import count_targets, split_for_ranks

    def objective_for(fn, ranks, micro):
        def objective(logits, labels):
            zs, ys = split_for_ranks(logits, ranks, micro), split_for_ranks(labels, ranks, micro)
            counts = [[count_targets(y) for y in yr] for yr in ys]
            total = sum(c for row in counts for c in row)  # [] int64: the all-reduced count
            per_rank = [sum(fn(causal_lm_loss(z, y), c.clone(), total.clone(), ranks) for z, y, c in zip(*piece))
                        for piece in zip(zs, ys, counts)]
            return sum(per_rank) / ranks  # DDP: the mean of the ranks' gradients
        return objective

    _judge_ddp(name, fn, objective_for, _full_batch_loss, _splits(nonempty=True), "the full batch's loss")


def rank_loss_cases(seed: int = 5) -> list[dict]:
    """Exercise 2's cases: one rank's rows of the chapter's cases with a global count and a world size each."""
    sizes = [(40, 4), (17, 2), (93, 3), (11, 1), (250, 8)]
    return [{"logits": c["logits"][:2], "labels": c["labels"][:2], "num_items_in_batch": n, "world_size": w}
            for c, (n, w) in zip(distributed_cases(seed=seed), sizes)]


def check_rank_loss(fn, name: str = "exercise 2") -> None:
    """Exercise: ``fn(logits, labels, num_items_in_batch, world_size)`` against ``data_parallel_loss``, values and
    gradients, on :func:`rank_loss_cases` (a different global count and world size in every case)."""
    from ..checks import check_function
    from ..distributed import data_parallel_loss

    check_function(name, fn, data_parallel_loss, rank_loss_cases())


def check_local_count_objective(fn, name: str = "exercise 3") -> None:
    """Exercise: ``fn(S, n)`` -> the sympy objective DDP descends when every rank divides by its own count.

    ``S[r][j]``, ``n[r][j]`` as ``derivations.distributed.shard_symbols``.  Compared, exactly, at random rational
    points with the objective written here, for several numbers of ranks and micro-batches."""
    import random

    import sympy as sp

    from ..derivations.distributed import shard_symbols

    if fn is Ellipsis:
        _not_attempted(name)
        return
    rng = random.Random(3)
    shapes = ((1, 1), (2, 1), (1, 3), (2, 2), (3, 2))
    for ranks, micro in shapes:
        S, n = shard_symbols(ranks, micro)
        symbols = {x for row in S + n for x in row}
        try:
            expr = sp.sympify(fn(S, n))
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
            return
        others = sorted(str(x) for x in getattr(expr, "free_symbols", set()) - symbols)
        if not isinstance(expr, sp.Expr) or others:
            _verdict(name, False, f": return one sympy expression in the S and n it is given (it also has {others})")
            return
        # each rank: its micro-batches' summed losses over its own count; DDP: the mean over ranks
        reference = sum(sum(Sr) / sum(nr) for Sr, nr in zip(S, n)) / ranks
        for _ in range(4):
            point = {x: sp.Rational(rng.randint(-60, 60), rng.randint(1, 9)) for row in S for x in row}
            point |= {c: sp.Integer(rng.randint(1, 40)) for row in n for c in row}
            try:
                got, want = complex(expr.subs(point)), float(reference.subs(point))
            except (TypeError, ValueError) as err:
                _verdict(name, False, f": your expression could not be evaluated ({type(err).__name__})")
                return
            if not abs(got - want) <= 1e-12 * (1 + abs(want)):
                _verdict(name, False, f" (not the objective DDP descends, for {ranks} rank(s) with {micro} "
                                      "micro-batch(es) each)")
                return
    _verdict(name, True, f" ({len(shapes)} shapes, 1-3 ranks, 1-3 micro-batches, exact at random points)")


def _head_tail_positions(seq: int, rank: int, world_size: int) -> torch.Tensor:
    """The positions of ``rank`` under torch's head-tail load balancing for context parallelism
    (``torch.distributed.tensor.experimental._context_parallel._load_balancer._HeadTailLoadBalancer``)."""
    try:
        from torch.distributed.tensor.experimental._context_parallel._load_balancer import _HeadTailLoadBalancer
    except ImportError:  # a private class: torch may move it; the rule is its docstring's
        chunks = torch.arange(seq).view(2 * world_size, seq // (2 * world_size))
        return torch.cat([chunks[rank], chunks[2 * world_size - 1 - rank]])
    order = _HeadTailLoadBalancer(seq, world_size, "cpu")._generate_indices()[0].long()  # [seq]
    width = seq // world_size
    return order[rank * width:(rank + 1) * width]


def check_head_tail_shard(fn, name: str = "exercise 4") -> None:
    """Exercise: ``fn(labels, rank, world_size)`` -> ``(positions, shift_labels)`` of ``rank`` under head-tail
    load balancing (chunks r and 2W - 1 - r of 2W), with the labels shifted once, in full.

    The positions are compared with torch's own ``_HeadTailLoadBalancer``; the targets with the full sequence's
    next tokens at those positions; and the ranks' summed losses over the all-reduced count with the unsharded
    loss, on several sequence lengths, world sizes and padded rows."""
    from ..causal_lm import next_token_labels

    if fn is Ellipsis:
        _not_attempted(name)
        return
    g = torch.Generator().manual_seed(12)
    shapes = ((8, 2), (8, 4), (12, 3), (16, 4), (4, 1), (24, 2))
    for seq, world in shapes:
        labels = torch.randint(0, 9, (3, seq), generator=g)
        labels[1, seq // 3:] = -100  # a padded row
        labels[2, seq - 1:] = -100
        logits = torch.randn(3, seq, 9, generator=g, dtype=torch.float64)
        full = next_token_labels(labels)  # [3, seq]
        total, count = 0.0, 0
        for r in range(world):
            try:
                positions, shift_labels = fn(labels.clone(), r, world)
                positions, shift_labels = torch.as_tensor(positions), torch.as_tensor(shift_labels)
            except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
                _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
                return
            if not torch.equal(positions.long().flatten(), _head_tail_positions(seq, r, world)):
                _verdict(name, False, " (some ranks' positions are not their two chunks, r and 2W - 1 - r, in "
                                      "that order)")
                return
            if shift_labels.shape != (3, positions.numel()) or not torch.equal(shift_labels.long(),
                                                                             full[:, positions.long()]):
                _verdict(name, False, " (some ranks' targets are not the full sequence's next tokens at their "
                                      "positions)")
                return
            kept = shift_labels != -100
            total = total + torch.nn.functional.cross_entropy(logits[:, positions.long()][kept],
                                                              shift_labels[kept], reduction="sum")
            count += int(kept.sum())
        if not abs(float(total) / count - float(causal_lm_loss(logits, labels))) <= 1e-10:
            _verdict(name, False, " (the ranks' losses do not add up to the unsharded loss)")
            return
    _verdict(name, True, f" (torch's head-tail positions, the full shift, the unsharded loss: {len(shapes)} "
                         "sequence lengths and world sizes)")


def _per_sequence_loss(logits, labels):
    """The full batch's per-sequence loss: each row's mean over its targets, averaged over the rows that have one."""
    from ..causal_lm import next_token_labels

    targets = next_token_labels(labels)  # [batch, seq]
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100,
                                              reduction="none")  # [batch, seq], 0 where ignored
    counts = (targets != -100).sum(-1)  # [batch]
    has = counts > 0
    return (token.sum(-1)[has] / counts[has]).mean()


def check_sequence_rank_loss(fn, name: str = "exercise 5") -> None:
    """Exercise: ``fn(logits, labels, num_sequences, world_size)``, the loss one micro-batch of one rank backprops so
    that DDP's mean over ranks is the global batch's per-sequence loss (each row's mean token loss, averaged over
    every row of the batch with a target; ``num_sequences``: that number of rows, all-reduced).  Compared with that
    loss on the full batch, values and gradients, on every split (a row with no target among them)."""
    from ..distributed import count_targets, split_for_ranks

    def objective_for(fn, ranks, micro):
        def objective(logits, labels):
            rows_with_target = sum(int(count_targets(row[None]) > 0) for row in labels)  # the all-reduced count
            zs, ys = split_for_ranks(logits, ranks, micro), split_for_ranks(labels, ranks, micro)
            per_rank = [sum(fn(z, y, rows_with_target, ranks) for z, y in zip(zr, yr)) for zr, yr in zip(zs, ys)]
            return sum(per_rank) / ranks  # DDP: the mean of the ranks' gradients
        return objective

    _judge_ddp(name, fn, objective_for, _per_sequence_loss, _splits(), "the per-sequence loss of the full batch")
