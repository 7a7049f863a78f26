"""chunked_cross_entropy (chapter 11): equal to the naive path, never [tokens, vocab] in memory."""

import pytest
import torch

from lossbook import causal_lm_loss, chunked_cross_entropy, fixed_cross_entropy
from lossbook.memory import StorageTracker, tracked_peak


def _inputs(seed, batch, seq, hidden, vocab, dtype=torch.float32, bias=True, ignored=0.2):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, seq, hidden, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g, dtype=torch.float64) / hidden**0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab, generator=g, dtype=torch.float64) * 0.1).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[torch.rand(batch, seq, generator=g) < ignored] = -100
    return h, w, b, labels


def _grads(loss, params):
    params = [p for p in params if p is not None]
    return [g for g in torch.autograd.grad(loss, params)]


def _naive_logits(h, w, b):
    return h @ w.T if b is None else h @ w.T + b


def _assert_close(ours, theirs, atol, rtol=0.0):
    for a, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, t, atol=atol, rtol=rtol, equal_nan=True)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 64, 1000])  # 1, not dividing 2*13=26 tokens, > tokens
@pytest.mark.parametrize("num_items", [None, 40])
@pytest.mark.parametrize("use_bias", [True, False])
def test_shifted_equals_causal_lm_loss_values_and_gradients(chunk_size, num_items, use_bias):
    h, w, b, labels = _inputs(0, 2, 13, 16, 37, bias=use_bias)
    params = (h, w, b)
    ours = chunked_cross_entropy(h, w, labels, b, chunk_size=chunk_size, shift=True, num_items_in_batch=num_items)
    naive = causal_lm_loss(_naive_logits(h, w, b), labels, num_items_in_batch=num_items)
    assert ours.dtype == naive.dtype == torch.float32
    torch.testing.assert_close(ours, naive, atol=2e-6, rtol=0)
    _assert_close(_grads(ours, params), _grads(naive, params), atol=2e-6)


@pytest.mark.parametrize("chunk_size", [1, 5, 100])
def test_unshifted_equals_fixed_cross_entropy(chunk_size):
    h, w, b, labels = _inputs(1, 3, 7, 8, 29)
    ours = chunked_cross_entropy(h, w, labels, b, chunk_size=chunk_size)
    flat_logits = _naive_logits(h, w, b).reshape(-1, 29)
    naive = fixed_cross_entropy(flat_logits, labels.reshape(-1))
    torch.testing.assert_close(ours, naive, atol=2e-6, rtol=0)
    _assert_close(_grads(ours, (h, w, b)), _grads(naive, (h, w, b)), atol=2e-6)
    # the same with labels already shifted, as causal_lm_loss(..., shift_labels=...)
    shifted = causal_lm_loss(_naive_logits(h, w, b), None, shift_labels=labels)
    torch.testing.assert_close(ours, shifted, atol=2e-6, rtol=0)


def test_tokens_layout_and_other_ignore_index():
    h, w, b, labels = _inputs(2, 1, 11, 8, 13)
    labels[labels == -100] = 7
    ours = chunked_cross_entropy(h[0], w, labels[0], b, chunk_size=4, ignore_index=7)  # [tokens, hidden]
    naive = fixed_cross_entropy(_naive_logits(h[0], w, b), labels[0], ignore_index=7)
    torch.testing.assert_close(ours, naive, atol=2e-6, rtol=0)


def test_shared_denominator_makes_chunks_add_up():
    """Two halves with num_items_in_batch = the total count sum to the loss of the whole batch."""
    h, w, b, labels = _inputs(3, 4, 9, 8, 19)
    count = int((labels[:, 1:] != -100).sum())
    whole = chunked_cross_entropy(h, w, labels, b, chunk_size=5, shift=True)
    halves = sum(chunked_cross_entropy(h[i:i + 2], w, labels[i:i + 2], b, chunk_size=5, shift=True,
                                       num_items_in_batch=count) for i in (0, 2))
    torch.testing.assert_close(whole, halves, atol=2e-6, rtol=0)


def test_all_ignored_is_nan_with_zero_gradients_and_zero_with_a_count():
    h, w, b, labels = _inputs(4, 2, 5, 8, 11)
    labels.fill_(-100)
    ours = chunked_cross_entropy(h, w, labels, b, chunk_size=3, shift=True)
    naive = causal_lm_loss(_naive_logits(h, w, b), labels)
    assert torch.isnan(ours) and torch.isnan(naive)
    for g_ours, g_naive in zip(_grads(ours, (h, w, b)), _grads(naive, (h, w, b)), strict=True):
        assert torch.equal(g_ours, torch.zeros_like(g_ours))
        assert torch.equal(g_naive, torch.zeros_like(g_naive))
    counted = chunked_cross_entropy(h, w, labels, b, chunk_size=3, shift=True, num_items_in_batch=10)
    assert counted.item() == 0.0


def test_gradcheck_float64():
    h, w, b, labels = _inputs(5, 2, 5, 4, 7, dtype=torch.float64)

    def fn(h, w, b):
        return chunked_cross_entropy(h, w, labels, b, chunk_size=3, shift=True, num_items_in_batch=6)

    assert torch.autograd.gradcheck(fn, (h, w, b))


def test_float64_is_kept_and_matches_to_1e_12():
    h, w, b, labels = _inputs(6, 2, 9, 8, 17, dtype=torch.float64)
    ours = chunked_cross_entropy(h, w, labels, b, chunk_size=4, shift=True)
    naive = causal_lm_loss(_naive_logits(h, w, b), labels)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, naive, atol=1e-12, rtol=0)
    _assert_close(_grads(ours, (h, w, b)), _grads(naive, (h, w, b)), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_float32(dtype):
    h, w, b, labels = _inputs(7, 2, 33, 16, 101, dtype=dtype)
    ours = chunked_cross_entropy(h, w, labels, b, chunk_size=8, shift=True)
    naive = causal_lm_loss(_naive_logits(h, w, b), labels)  # upcasts the half logits to float32
    assert ours.dtype == naive.dtype == torch.float32
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=0)  # the same float32 sum of the same logits
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3  # gradients: chunk sums rounded to half before summing
    for g_ours, g_naive in zip(_grads(ours, (h, w, b)), _grads(naive, (h, w, b)), strict=True):
        assert g_ours.dtype == dtype
        torch.testing.assert_close(g_ours.float(), g_naive.float(), atol=tol, rtol=tol)


def test_large_half_batch_does_not_overflow():
    """float16 per-token losses near 10 over 8192 tokens: a float16 sum would be inf."""
    g = torch.Generator().manual_seed(8)
    h = (torch.randn(8192, 8, generator=g) * 4).half()
    w = torch.randn(50, 8, generator=g).half()
    labels = torch.randint(0, 50, (8192,), generator=g)
    loss = chunked_cross_entropy(h, w, labels, chunk_size=1024)
    assert torch.isfinite(loss) and 1 < loss.item() < 100


def test_no_gradient_requested_for_some_inputs():
    h, w, b, labels = _inputs(9, 2, 6, 8, 11)
    w.requires_grad_(False)
    loss = chunked_cross_entropy(h, w, labels, b, chunk_size=4, shift=True)
    naive = causal_lm_loss(_naive_logits(h, w, b), labels)
    _assert_close(_grads(loss, (h, b)), _grads(naive, (h, b)), atol=2e-6)


def test_peak_memory_never_holds_tokens_by_vocab():
    """Deterministic CPU peak (live tensor storage): chunked forward+backward stays far below one
    [tokens, vocab] float32 tensor; the naive path holds several."""
    tokens, hidden, vocab, chunk = 1024, 32, 4096, 64
    h, w, b, labels = _inputs(10, 1, tokens, hidden, vocab)
    logits_bytes = tokens * vocab * 4

    def chunked():
        chunked_cross_entropy(h, w, labels, b, chunk_size=chunk, shift=True).backward()

    def naive():
        causal_lm_loss(_naive_logits(h, w, b), labels).backward()

    peak_chunked, _ = tracked_peak(chunked)
    h.grad = w.grad = b.grad = None
    with StorageTracker() as tracker:
        naive()
    assert tracker.largest == logits_bytes  # the naive path materialises [tokens, vocab]
    assert 3 * logits_bytes <= tracker.peak <= 3 * logits_bytes + 4 * tokens * 8  # logits, log-softmax, gradient
    # chunked: the [vocab, hidden] weight gradient + one [chunk, vocab] chunk + per-token vectors
    assert peak_chunked <= (vocab * hidden + chunk * vocab) * 4 + tokens * hidden * 4 + 16 * tokens * 8 + vocab * 8
    assert peak_chunked < 0.05 * tracker.peak


def test_default_chunk_is_the_hidden_size_and_meta_tensors_measure_large_shapes():
    """On the meta device (shapes, no data) the tracker counts what a real run allocates, at any size."""
    tokens, hidden, vocab = 2048, 256, 128256
    h = torch.empty(1, tokens, hidden, device="meta", requires_grad=True)
    w = torch.empty(vocab, hidden, device="meta", requires_grad=True)
    y = torch.zeros(1, tokens, dtype=torch.long, device="meta")
    with StorageTracker() as naive:
        causal_lm_loss(h @ w.T, y).backward()
    h.grad = w.grad = None
    with StorageTracker() as chunked:
        chunked_cross_entropy(h, w, y, shift=True).backward()
    assert naive.peak >= 3 * tokens * vocab * 4
    assert chunked.peak <= (vocab * hidden + hidden * vocab) * 4 * 1.02
    assert chunked.peak <= 0.10 * naive.peak  # the goal at V=128256, 2048 tokens, H=256


def test_tracker_counts_views_once_and_frees():
    with StorageTracker() as t:
        x = torch.empty(1000)  # 4000 bytes
        y = x.view(10, 100)
        assert t.current == 4000
        del x, y
        assert t.current == 0
        z = torch.ones(10) * 2  # ones (freed) and the product
    assert t.peak == 4000 and t.largest == 4000 and t.current == 40 and z.numel() == 10


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((torch.randn(2, 3, 4), torch.randn(5, 3), torch.zeros(2, 3, dtype=torch.long)), {}, ValueError,
         r"weight must be \[vocab, hidden\] with hidden=4 .*got \[5, 3\]"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 4, dtype=torch.long)), {}, ValueError,
         r"labels must have shape \[2, 3\] .*got \[2, 4\]"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.full((2, 3), 5)), {}, ValueError,
         r"labels holds token id 5, outside \[0, 5\)"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.full((2, 3), -1)), {}, ValueError, r"token id -1"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3)), {}, TypeError, r"labels must hold integer"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4).double(), torch.zeros(2, 3, dtype=torch.long)), {}, TypeError,
         r"share dtype and device"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long), torch.randn(4)), {},
         ValueError, r"bias must have shape \[5\]"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long)), {"chunk_size": 0},
         ValueError, r"chunk_size must be a positive int"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long)), {"chunk_size": 2.0},
         ValueError, r"chunk_size must be a positive int"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long)),
         {"num_items_in_batch": 0}, ValueError, r"num_items_in_batch must be a positive, finite count"),
        ((torch.randn(4), torch.randn(5, 4), torch.zeros((), dtype=torch.long)), {}, ValueError,
         r"hidden must be \[batch, seq, hidden\]"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4, 1), torch.zeros(2, 3, dtype=torch.long)), {}, ValueError,
         r"weight must be \[vocab, hidden\]"),
        ((torch.randn(2, 3, 4).long(), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long)), {}, TypeError,
         r"hidden must be a floating-point tensor"),
    ],
)
def test_clear_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        chunked_cross_entropy(*args, **kwargs)


# --- chapter 11's layers: derivations, bug zoo, demo arithmetic, widget ------------------------------------------


def test_sympy_chunks_with_a_shared_denominator_equal_the_whole_and_chunk_means_do_not():
    import sympy as sp

    from lossbook.derivations import memory as dm

    W, hs = dm.projection_symbols(vocab=3, hidden=2, tokens=5)
    ys = [2, 0, -100, 1, 1]
    whole = dm.fused_loss(W, hs, ys, 4)
    for chunk in (1, 2, 3, 5):
        assert sp.simplify(dm.chunked_loss(W, hs, ys, 4, chunk) - whole) == 0
    point = {s: sp.Rational(k % 5 - 2, 3) for k, s in enumerate(sorted(whole.free_symbols, key=str))}
    assert sp.N(dm.mean_of_chunk_means(W, hs, ys, 2).subs(point) - whole.subs(point)) != 0
    closed = dm.weight_grad_closed_form(W, hs, ys, 4)
    assert all(sp.simplify(sp.diff(whole, W[i, j]) - closed[i, j]) == 0 for i in range(3) for j in range(2))
    wrong = dm.weight_grad_closed_form(W, hs, [2, 0, 0, 1, 1], 4)
    assert sp.simplify(sp.diff(whole, W[0, 0]) - wrong[0, 0]) != 0


def test_sympy_loss_equals_lossbook_float64():
    import sympy as sp

    from lossbook.derivations import memory as dm

    W, hs = dm.projection_symbols(vocab=3, hidden=2, tokens=5)
    ys = [2, 0, -100, 1, 1]
    whole = dm.fused_loss(W, hs, ys, 4)
    symbols = sorted(whole.free_symbols, key=str)
    f = sp.lambdify(symbols, whole)
    g = torch.Generator().manual_seed(0)
    Wn, Hn = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    values = {f"w{i}{j}": Wn[i, j].item() for i in range(3) for j in range(2)}
    values |= {f"h{t}{j}": Hn[t, j].item() for t in range(5) for j in range(2)}
    expected = f(*[values[str(s)] for s in symbols])
    assert abs(chunked_cross_entropy(Hn, Wn, torch.tensor(ys), chunk_size=2).item() - expected) < 1e-12


def test_bug_zoo_fails_the_checks_lossbook_passes():
    from lossbook.bugzoo import memory as zoo
    from lossbook.checks import compare_losses
    from lossbook.demos import memory as demo

    cases = demo.chunked_cases(seed=0)

    def naive(hidden, weight, labels, bias, chunk_size, shift):
        return causal_lm_loss(hidden @ weight.T + bias, labels)

    assert compare_losses(chunked_cross_entropy, naive, cases).passed
    assert not compare_losses(zoo.mean_per_chunk, chunked_cross_entropy, cases).passed
    assert not compare_losses(zoo.shift_per_chunk, chunked_cross_entropy, cases).passed
    # the memory bug has the right values and fails the memory check
    assert compare_losses(zoo.upcasts_whole_logits, chunked_cross_entropy, cases).passed
    h, w, b, labels = _inputs(11, 2, 256, 16, 2048)
    one = 512 * 2048 * 4
    peaks = {}
    for fn in (chunked_cross_entropy, zoo.upcasts_whole_logits, demo.loss_alone_chunked):
        with StorageTracker() as t:
            fn(h, w, labels, b, chunk_size=64, shift=True).backward()
        peaks[fn.__name__] = t.peak
        h.grad = w.grad = b.grad = None
    assert peaks["chunked_cross_entropy"] < 0.25 * one
    assert peaks["upcasts_whole_logits"] >= 2 * one and peaks["loss_alone_chunked"] >= 2 * one


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(1, 2048, 128256, 256, None), (2, 512, 32000, 512, 256), (8, 128, 1000, 64, 7)])
def test_predicted_peak_matches_the_measured_one(dtype, shape):
    from lossbook.demos import memory as demo

    measured = demo.peak_memory(*shape[:4], dtype, shape[4])
    predicted = demo.predicted_peak(*shape[:4], dtype, shape[4])
    for name in ("naive", "chunked"):
        assert abs(measured[name] / predicted[name] - 1) < 0.01, (name, measured, predicted)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_predicted_peak_caps_the_chunk_at_the_tokens(dtype):
    """A chunk larger than the batch holds only its tokens: T = 256 with chunk 8192 is the chunk-256 peak."""
    from lossbook.demos import memory as demo
    from lossbook.widgets.memory import MemoryExplorer

    args = (1, 256, 128256, 256, dtype)
    measured, predicted = demo.peak_memory(*args, 8192), demo.predicted_peak(*args, 8192)
    assert abs(measured["chunked"] / predicted["chunked"] - 1) < 0.01, (measured, predicted)
    assert predicted == demo.predicted_peak(*args, 256)
    e = MemoryExplorer(batch=1, seq=256, vocab=128256, hidden=256, chunk=8192)
    assert abs(e.measured["chunked"] / e.predicted["chunked"] - 1) < 0.01 and "chunk = 256<" in e.html.value


def test_meta_measurement_equals_a_cpu_run():
    from lossbook.demos import memory as demo

    assert demo.peak_memory(2, 64, 500, 16, chunk_size=24) == demo.peak_memory(2, 64, 500, 16, chunk_size=24,
                                                                                 device="cpu")


def test_explorer_numbers_are_lossbooks():
    from lossbook.demos import memory as demo
    from lossbook.widgets.memory import MemoryExplorer

    e = MemoryExplorer(batch=1, seq=512, vocab=32000, hidden=64)
    assert e.measured == demo.peak_memory(1, 512, 32000, 64)
    e.dtype.value = torch.bfloat16
    e.chunk.value = 128
    assert e.measured == demo.peak_memory(1, 512, 32000, 64, torch.bfloat16, 128)
    assert e.predicted == demo.predicted_peak(1, 512, 32000, 64, torch.bfloat16, 128)
    assert "chunked / naive" in e.html.value


def test_training_with_the_chunked_loss_follows_the_naive_curve():
    from lossbook.demos import memory as demo

    naive, chunked = demo.train_pair(steps=8, chunk_size=300)
    assert max(abs(a - c) for a, c in zip(naive, chunked)) < 1e-4
    assert naive[-1] < naive[0]


@pytest.mark.parametrize("count", [40, 40.0, torch.tensor(40), torch.tensor([40.0])])
def test_num_items_in_batch_as_int_float_or_tensor(count):
    h, w, b, labels = _inputs(12, 2, 13, 8, 19)
    ours = chunked_cross_entropy(h, w, labels, b, chunk_size=5, shift=True, num_items_in_batch=count)
    naive = causal_lm_loss(_naive_logits(h, w, b), labels, num_items_in_batch=40)
    torch.testing.assert_close(ours, naive, atol=2e-6, rtol=0)
    _assert_close(_grads(ours, (h, w, b)), _grads(naive, (h, w, b)), atol=2e-6)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("chunk_size", [1, 5, 100])
def test_gradients_in_forward_equal_recomputed_ones(dtype, tol, chunk_size):
    h, w, b, labels = _inputs(13, 2, 13, 8, 19, dtype=dtype)
    params = (h, w, b)
    early = chunked_cross_entropy(h, w, labels, b, chunk_size=chunk_size, shift=True, recompute=False)
    late = chunked_cross_entropy(h, w, labels, b, chunk_size=chunk_size, shift=True)
    torch.testing.assert_close(early, late, atol=0, rtol=0)
    expected = _grads(3 * causal_lm_loss(_naive_logits(h, w, b), labels), params)
    _assert_close(_grads(3 * early, params), expected, atol=3 * tol)  # an incoming gradient of 3
    _assert_close(_grads(3 * late, params), expected, atol=3 * tol)


def test_gradients_in_forward_gradcheck_and_repeated_backward():
    h, w, b, labels = _inputs(14, 2, 5, 4, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda h, w, b: chunked_cross_entropy(h, w, labels, b, chunk_size=3, shift=True, recompute=False), (h, w, b))
    loss = chunked_cross_entropy(h, w, labels, b, chunk_size=3, shift=True, recompute=False)
    first = torch.autograd.grad(loss, (h, w, b), retain_graph=True)
    _assert_close(torch.autograd.grad(loss, (h, w, b)), first, atol=0)  # the saved gradients are not consumed
    with torch.no_grad():  # no gradient wanted: no gradient work in forward
        assert torch.isfinite(chunked_cross_entropy(h, w, labels, b, chunk_size=3, recompute=False))


def test_gradients_in_forward_keep_the_peak():
    tokens, hidden, vocab, chunk = 1024, 32, 4096, 32
    h, w, b, labels = _inputs(15, 1, tokens, hidden, vocab)
    peaks = {}
    for recompute in (True, False):
        with StorageTracker() as t:
            chunked_cross_entropy(h, w, labels, b, chunk_size=chunk, shift=True, recompute=recompute).backward()
        peaks[recompute] = t.peak
        h.grad = w.grad = b.grad = None
    # default chunk (= hidden): the scaled weight gradient replaces the chunk; the scaled copy of the hidden
    # states' gradient (tokens * hidden * 4 bytes) comes on top
    assert peaks[False] <= peaks[True] + tokens * hidden * 4 + 4 * vocab * 4
