"""Demo material of chapter 11 (memory-efficient losses): peak memory of the two paths, and training chapter
02's tiny GPT with the chunked loss beside the naive one.
"""

from __future__ import annotations

import torch

from ..causal_lm import causal_lm_loss
from ..chunked import chunked_cross_entropy
from ..memory import StorageTracker

__all__ = [
    "hidden_states",
    "naive_step",
    "chunked_step",
    "peak_memory",
    "predicted_peak",
    "train_pair",
    "loss_alone_chunked",
    "chunked_cases",
    "check_logits_gib",
    "check_chunked_loss",
    "check_chunked_peak",
]

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float64: 8}


def hidden_states(model, input_ids: torch.Tensor) -> torch.Tensor:
    """``TinyTransformer``'s last hidden states [batch, seq, d_model]: its forward without the output head."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    x = model.tok(input_ids) + model.pos(positions)
    for block in model.blocks:
        x = block(x)
    return model.norm(x)


def naive_step(model, input_ids):
    """The chapter 02 loss: full logits from the head, then ``causal_lm_loss``."""
    return causal_lm_loss(model(input_ids), input_ids)


def chunked_step(model, input_ids, chunk_size=None):
    """The same loss from the hidden states and the head's weight and bias, chunk by chunk."""
    return chunked_cross_entropy(hidden_states(model, input_ids), model.head.weight, input_ids, model.head.bias,
                                 chunk_size=chunk_size, shift=True)


def peak_memory(batch, seq, vocab, hidden, dtype=torch.float32, chunk_size=None, device="meta") -> dict:
    """Peak tracked bytes of forward + backward of the loss alone (hidden states in, gradients out), naive and
    chunked.  ``device="meta"``: shapes only, no arithmetic, so any size is measured in milliseconds; the
    tracker counts the same tensors a CPU run allocates (tests/test_chunked_cross_entropy.py)."""
    out = {}
    for name in ("naive", "chunked"):
        h = torch.zeros(batch, seq, hidden, device=device, dtype=dtype).requires_grad_()
        w = torch.zeros(vocab, hidden, device=device, dtype=dtype).requires_grad_()
        y = torch.zeros(batch, seq, dtype=torch.long, device=device)
        with StorageTracker() as tracker:
            if name == "naive":
                loss = causal_lm_loss(h @ w.T, y)
            else:
                loss = chunked_cross_entropy(h, w, y, chunk_size=chunk_size, shift=True)
            loss.backward()
        out[name] = tracker.peak
    return out


def predicted_peak(batch, seq, vocab, hidden, dtype=torch.float32, chunk_size=None) -> dict:
    """The chapter's arithmetic, with b bytes per element of the input dtype.

    naive, float32: three float32 ``[tokens, vocab]`` tensors alive at once (the logits, their log-softmax,
    the gradient); half: the half logits and their half gradient besides, ``tokens * vocab * (8 + 2b)``.
    chunked: the float32 weight gradient and one float32 chunk ``(vocab * hidden + chunk * vocab) * 4`` (half
    inputs: a half copy of each besides), plus the hidden states' gradient ``tokens * hidden * b`` and 16 bytes
    per token (log-sum-exp, targets, masks).  The chunk holds at most the ``tokens``, as the loss's buffer.
    """
    n, b = batch * seq, _BYTES[dtype]
    c = min(chunk_size or hidden, n)  # a chunk larger than the batch holds only its tokens
    half = dtype in (torch.float16, torch.bfloat16)
    naive = n * vocab * (8 + 2 * b) if half else 3 * n * vocab * b
    chunked = (vocab * hidden + c * vocab) * (4 + b if half else b) + n * hidden * b + 16 * n
    return {"naive": naive, "chunked": chunked}


def train_pair(steps: int = 60, seed: int = 0, chunk_size: int = 300, device="cpu", progress: bool = False):
    """Train two copies of chapter 02's tiny GPT on the same batches, one with ``causal_lm_loss`` on the full
    logits, one with ``chunked_cross_entropy``; returns ``(naive_losses, chunked_losses)`` per step."""
    from ..models import TinyTransformer
    from ..text import random_windows
    from .causal_lm import load_rhymes

    data = load_rhymes(heldout_every=6)
    curves = {}
    for name, step_fn in (("naive", naive_step), ("chunked", lambda m, x: chunked_step(m, x, chunk_size))):
        torch.manual_seed(seed)
        model = TinyTransformer(data.tokenizer.vocab_size, d_model=64, n_heads=4, n_layers=2, max_len=64,
                                dropout=0.2).to(device)
        gen = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        losses = []
        for _ in range(steps):
            x = random_windows(data.train_ids, 32, 64, gen).to(device)
            loss = step_fn(model, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves[name] = losses
    return curves["naive"], curves["chunked"]


def loss_alone_chunked(hidden, weight, labels, bias=None, *, chunk_size=None, ignore_index=-100, shift=False):
    """Chunking the loss alone: the full logits from one matmul, then cross-entropy chunk by chunk (each chunk
    upcast on its own).  Same value as the naive path; the ``[tokens, vocab]`` logits and their gradient exist."""
    import torch.nn.functional as F

    from ..causal_lm import next_token_labels

    if shift:
        labels = next_token_labels(labels, ignore_index)
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    logits = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)  # [tokens, vocab]
    c = chunk_size or hidden.shape[-1]
    total = sum(F.cross_entropy(logits[s:s + c].float(), y[s:s + c], ignore_index=ignore_index, reduction="sum")
                for s in range(0, h.shape[0], c))
    return total / (y != ignore_index).sum()


def chunked_cases(seed: int = 0, dtype=torch.float32) -> list[dict]:
    """Keyword cases for ``chunked_cross_entropy`` (hidden first, so checks differentiate it): rows padded by
    different amounts, chunk sizes that split sequences and do not divide the token count."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, hidden, vocab, chunk in [(2, 9, 4, 11, 4), (3, 7, 8, 23, 5), (1, 12, 6, 17, 12), (2, 5, 3, 7, 1)]:
        h = torch.randn(batch, seq, hidden, generator=g, dtype=dtype)
        w = torch.randn(vocab, hidden, generator=g, dtype=dtype) / hidden**0.5
        b = torch.randn(vocab, generator=g, dtype=dtype) * 0.1
        labels = torch.randint(0, vocab, (batch, seq), generator=g)
        for row in range(batch):
            labels[row, seq - row * 2:] = -100  # row r ends in 2r padding positions
        cases.append(dict(hidden=h, weight=w, labels=labels, bias=b, chunk_size=chunk, shift=True))
    return cases


# ---- the exercises' checks (a verdict, never the answer nor its distance) ------------------------------------------


def _say(name: str, passed: bool, text: str) -> None:
    from ..checks import print_verdict

    print_verdict(f"{'PASS' if passed else 'FAIL'}  {name}{text}", passed)


def check_logits_gib(fn, name: str = "exercise 1") -> None:
    """Exercise: ``fn(batch, seq, vocab, dtype)`` -> the GiB (2**30 bytes) of one ``[batch, seq, vocab]`` logits
    tensor of ``dtype``; judged against the bytes PyTorch itself gives such a tensor (on the meta device)."""
    if fn is Ellipsis:
        return _say(name, False, ": not attempted yet (replace ... with your function)")
    sizes = [(8, 4096, 128256, torch.float32), (1, 2048, 32000, torch.bfloat16), (4, 512, 50257, torch.float16),
             (2, 100, 1000, torch.float64), (16, 8192, 151936, torch.bfloat16)]
    for batch, seq, vocab, dtype in sizes:
        want = torch.empty(batch, seq, vocab, dtype=dtype, device="meta").untyped_storage().nbytes() / 2**30
        try:
            got = float(fn(batch, seq, vocab, dtype))
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            return _say(name, False, f": your function raised {type(err).__name__}: {err}")
        if not abs(got - want) <= 1e-9 * want:
            return _say(name, False, f": not yet (batch {batch}, seq {seq}, vocab {vocab}, {dtype})")
    _say(name, True, f": the logits' size in GiB for {len(sizes)} shapes and dtypes (relative tolerance 1e-09)")


def check_chunked_loss(fn, name: str = "exercise 2") -> None:
    """Exercise: ``fn(hidden, weight, labels, bias, chunk_size, shift)``, the chunked loss from
    ``F.cross_entropy``: values and gradients against ``chunked_cross_entropy`` on the padded cases, then its peak
    memory (forward and backward, tracked on the meta device) at 8192 tokens, V = 32000, H = 64, chunks of 128,
    which must stay below two float32 ``[tokens, vocab]`` tensors: no chunking keeps three."""
    from ..checks import calls_reference, check_function
    from ..memory import StorageTracker

    if fn is Ellipsis:
        return _say(name, False, ": not attempted yet (replace ... with your function)")
    cases = chunked_cases(seed=5)
    if calls_reference(fn, chunked_cross_entropy, lambda: [fn(**case) for case in cases]):
        return _say(name, False, ": your function calls chunked_cross_entropy, the function it is checked against")
    import contextlib
    import io

    from .. import checks

    out, graded = io.StringIO(), checks._GRADED[0]
    checks._GRADED[0] = False  # the comparison's verdict is captured here, and given below
    try:
        with contextlib.redirect_stdout(out):
            check_function(name, fn, chunked_cross_entropy, cases)
    finally:
        checks._GRADED[0] = graded
    verdict = out.getvalue().strip()
    if not verdict.startswith("PASS"):
        from ..checks import print_verdict

        return print_verdict(verdict, False)
    tokens, vocab, hidden = 8192, 32000, 64
    h = torch.zeros(2, tokens // 2, hidden, device="meta").requires_grad_()
    w = torch.zeros(vocab, hidden, device="meta").requires_grad_()
    b = torch.zeros(vocab, device="meta").requires_grad_()
    y = torch.zeros(2, tokens // 2, dtype=torch.long, device="meta")
    try:
        with StorageTracker() as tracker:
            fn(hidden=h, weight=w, labels=y, bias=b, chunk_size=128, shift=True).backward()
    except Exception as err:  # e.g. .item() or Python control flow on a meta tensor's value
        return _say(name, False, f": on the meta device (shapes only, no values) your function raised "
                                 f"{type(err).__name__}: {err}")
    if not tracker.peak < 2 * tokens * vocab * 4:
        return _say(name, False, ": values and gradients agree, but the peak memory at 8192 tokens and V = 32000 "
                                 "is not below two [tokens, vocab] float32 tensors: is the loss chunked?")
    _say(name, True, ": values and gradients agree with chunked_cross_entropy (atol 1e-05, 4 cases), and the "
                     "peak stays below two [tokens, vocab] float32 tensors")


def check_chunked_peak(fn, name: str = "exercise 3") -> None:
    """Exercise: ``fn(batch, seq, vocab, hidden, dtype, chunk_size)`` -> the predicted chunked peak in bytes,
    the chapter's arithmetic, exact on shapes, dtypes and chunk sizes the chapter does not print."""
    from ..checks import calls_reference

    if fn is Ellipsis:
        return _say(name, False, ": not attempted yet (replace ... with your function)")
    settings = [(8, 4096, 128256, 4096, torch.float32, None), (2, 300, 1000, 64, torch.float32, 96),
                (1, 50, 1000, 64, torch.float32, 128), (4, 512, 32000, 256, torch.bfloat16, None),
                (3, 100, 5000, 16, torch.float16, 64), (16, 8192, 151936, 1024, torch.bfloat16, 4096)]
    for reference in (predicted_peak, peak_memory):
        if calls_reference(fn, reference, lambda: [fn(*s) for s in settings[1:3]]):
            return _say(name, False, f": your function calls demo.{reference.__name__}: write the arithmetic")
    for batch, seq, vocab, hidden, dtype, chunk in settings:
        try:
            got = fn(batch, seq, vocab, hidden, dtype, chunk)
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            return _say(name, False, f": your function raised {type(err).__name__}: {err}")
        if got != predicted_peak(batch, seq, vocab, hidden, dtype, chunk)["chunked"]:
            return _say(name, False, f": not yet (B={batch}, T={seq}, V={vocab}, H={hidden}, {dtype}, "
                                     f"chunk_size={chunk})")
    _say(name, True, f": the predicted chunked peak, exact in bytes, for {len(settings)} settings")
