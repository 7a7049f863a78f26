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
    "transformers_data_parallel",
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


class _UpstreamLM(torch.nn.Module):
    """The tiny GPT with transformers' own causal-LM loss, called as a Trainer calls a model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, num_items_in_batch=None):
        from transformers.loss.loss_utils import ForCausalLMLoss

        logits = self.model(input_ids)  # [batch, seq, vocab]
        return {"loss": ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)}


def _trainer_stub(world: int, gather, model):
    """The attributes of a ``transformers.Trainer`` that ``_get_num_items_in_batch`` and ``compute_loss`` read.

    ``average_tokens_across_devices=True`` (the default), one device per process, no tensor/context parallelism.
    """
    from types import SimpleNamespace

    from transformers import Trainer

    stub = SimpleNamespace(
        args=SimpleNamespace(average_tokens_across_devices=True, world_size=world, n_gpu=1),
        accelerator=SimpleNamespace(gather=gather, num_processes=world, parallelism_config=None,
                                    unwrap_model=lambda m: m),
        model=model, model_accepts_loss_kwargs=True, compute_loss_func=None, label_smoother=None,
        _loss_shifts_labels=True, is_deepspeed_enabled=False,
    )
    for name in ("get_tp_size", "get_cp_size", "get_sp_size"):
        setattr(stub, name, getattr(Trainer, name).__get__(stub))
    return stub


def transformers_data_parallel(step: int = 0, *, ranks: int = 2, micro_batches: int = 1,
                               seed: int = CONFIG["seed"]) -> dict:
    """transformers' own ``Trainer._get_num_items_in_batch`` and ``Trainer.compute_loss``, run for each rank.

    The installed functions run unmodified on a stand-in ``self`` (``_trainer_stub``) for each of ``ranks``
    simulated ranks, on the chapter's model and batch ``step``: each rank counts its micro-batches' targets,
    the collective ``accelerator.gather`` is played by handing every rank the list of all ranks' counts
    (which upstream sums), and ``compute_loss`` calls the model (whose loss is transformers' ``ForCausalLMLoss``
    with ``num_items_in_batch``) and applies the world-size factor.  Returns ``{"local_counts", "num_items",
    "rank_losses" (per rank, per micro-batch, detached), "grad" (the mean over ranks of the ranks' gradients,
    as DDP averages them)}``.
    """
    from transformers import Trainer

    model = build_model(seed)
    upstream = _UpstreamLM(model)
    input_ids, labels = uneven_batch(step, ranks=ranks, seed=seed)
    from ..distributed import split_for_ranks

    xs, ys = split_for_ranks(input_ids, ranks, micro_batches), split_for_ranks(labels, ranks, micro_batches)
    batches = [[{"input_ids": x, "labels": y} for x, y in zip(xr, yr)] for xr, yr in zip(xs, ys)]
    alone = _trainer_stub(1, None, upstream)  # world_size 1: no gather, the local count
    local = [Trainer._get_num_items_in_batch(alone, b, torch.device("cpu")) for b in batches]
    everyone = torch.stack([c.reshape(()) for c in local])  # what accelerator.gather returns on every rank
    grads, rank_losses, num_items = [], [], []
    for r in range(ranks):
        stub = _trainer_stub(ranks, lambda t: everyone, upstream)
        n = Trainer._get_num_items_in_batch(stub, batches[r], torch.device("cpu"))
        num_items.append(int(n))
        model.zero_grad(set_to_none=True)
        losses = []
        for inputs in batches[r]:
            loss = Trainer.compute_loss(stub, upstream, dict(inputs), num_items_in_batch=n)
            loss.backward()  # micro-batches accumulate, as in Trainer.training_step
            losses.append(float(loss.detach()))
        rank_losses.append(losses)
        grads.append(flat_grad(model))
    return {"local_counts": [int(c) for c in local], "num_items": num_items, "rank_losses": rank_losses,
            "grad": sum(grads) / ranks}
