"""Chapter 15: distillation_loss and chunked_distillation_loss against TRL 1.16 (GKD's generalized_jsd_loss and
DistillationTrainer's chunked divergence), sympy, autograd, each other, and their errors."""

from __future__ import annotations

import os

import pytest
import sympy as sp
import torch

from lossbook import chunked_distillation_loss, distillation_loss
from lossbook.demos import distillation as demo
from lossbook.derivations import distillation as dd
from lossbook.derivations import kl_divergence

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="module")
def gkd(trl):
    from trl.experimental.gkd import GKDTrainer

    return GKDTrainer.generalized_jsd_loss


@pytest.fixture(scope="module")
def trl_chunked(trl):
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    return _chunked_divergence_loss


def _inputs(seed=0, dtype=torch.float32, batch=3, seq=6, vocab=17):
    h_s, h_t, w_s, w_t, mask, labels = demo._inputs(seed, batch=batch, seq=seq, vocab=vocab, dtype=dtype)
    return h_s, h_t, w_s, w_t, mask, labels


def _grads(fn, *leaves):
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    loss = fn(*leaves)
    return loss.detach(), torch.autograd.grad(loss, leaves)


BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("n", [None, 23, "tensor"])
@pytest.mark.parametrize("with_labels", [True, False])
def test_distillation_loss_equals_gkd(gkd, beta, temperature, n, with_labels):
    h_s, h_t, w_s, w_t, mask, labels = _inputs()
    num = torch.tensor(23.0) if n == "tensor" else n
    y = labels if with_labels else None
    zs, zt = (h_s @ w_s.T).reshape(-1, w_s.shape[0]), (h_t @ w_t.T).reshape(-1, w_t.shape[0])  # [tokens, vocab]
    y = None if y is None else y.reshape(-1)
    kw = dict(beta=beta, temperature=temperature, num_items_in_batch=num)
    ours, g_ours = _grads(lambda a, b: distillation_loss(a, b, y, **kw), zs, zt)
    theirs, g_theirs = _grads(lambda a, b: gkd(a, b, y, **kw), zs, zt)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_3d_without_labels_is_the_mean_over_positions_where_gkd_divides_by_batch(gkd):
    h_s, h_t, w_s, w_t, _, _ = _inputs()
    zs, zt = h_s @ w_s.T, h_t @ w_t.T  # [3, 6, vocab]
    ours = distillation_loss(zs, zt, beta=0.5)
    theirs = gkd(zs, zt, beta=0.5)  # F.kl_div's "batchmean": the sum over batch and seq / batch
    assert torch.allclose(ours * zs.shape[1], theirs, rtol=1e-6)


def test_all_positions_ignored_gives_zero_and_zero_gradients(gkd):
    zs, zt = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    labels = torch.full((2, 3), -100)
    loss, (g, _) = _grads(lambda a, b: distillation_loss(a, b, labels), zs, zt)
    assert loss == 0 and torch.equal(g, torch.zeros_like(g))
    assert gkd(zs, zt, labels) == 0


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("n", [None, 40])
@pytest.mark.parametrize("chunk_size", [1, 4, None, 1000])
def test_chunked_equals_trl_chunked_divergence(trl_chunked, beta, temperature, n, chunk_size):
    h_s, h_t, w_s, w_t, mask, _ = _inputs(seed=1)
    ours, g_ours = _grads(lambda a, b: chunked_distillation_loss(a, h_t, b, w_t, mask, beta=beta,
                                                                 temperature=temperature, num_items_in_batch=n,
                                                                 chunk_size=chunk_size), h_s, w_s)
    theirs, g_theirs = _grads(lambda a, b: trl_chunked(a, h_t, b, w_t, mask, beta, num_items_in_batch=n,
                                                       temperature=temperature)[0], h_s, w_s)
    assert torch.allclose(ours, theirs, rtol=2e-6, atol=1e-7)
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_demo_conformance_table_is_within_float32_rounding(trl):
    for row in demo.trl_conformance():
        assert row["value_diff"] <= 1e-6 * max(1.0, abs(row["gkd"])), row
        assert row["grad_diff"] <= 1e-6 and row["chunked_grad_diff"] <= 1e-5, row
        assert row["chunked_value_diff"] <= 2e-6 * max(1.0, abs(row["chunked_trl"])), row


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("chunk_size", [1, 5, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_equals_unchunked_on_the_projected_logits(beta, chunk_size, dtype):
    h_s, h_t, w_s, w_t, mask, labels = _inputs(seed=2, dtype=dtype)
    kw = dict(beta=beta, temperature=1.5)
    ours, g_ours = _grads(lambda a, b: chunked_distillation_loss(a, h_t, b, w_t, mask, chunk_size=chunk_size,
                                                                 **kw), h_s, w_s)
    naive, g_naive = _grads(lambda a, b: distillation_loss(a @ b.T, h_t @ w_t.T, labels, **kw), h_s, w_s)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(ours, naive, rtol=tol, atol=tol)
    for a, b in zip(g_ours, g_naive, strict=True):
        assert torch.allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_half_inputs_accumulate_in_float32(dtype):
    h_s, h_t, w_s, w_t, mask, labels = _inputs(seed=3, dtype=torch.float32)
    half = [t.to(dtype) for t in (h_s, h_t, w_s, w_t)]
    loss, (g_h, g_w) = _grads(lambda a, b: chunked_distillation_loss(a, half[1], b, half[3], mask, beta=0.5),
                              half[0], half[2])
    ref = distillation_loss((half[0] @ half[2].T).float(), (half[1] @ half[3].T).float(), labels, beta=0.5)
    assert loss.dtype == torch.float32 and g_h.dtype == dtype and g_w.dtype == dtype
    assert torch.allclose(loss, ref, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_gradcheck_float64(beta):
    h_s, h_t, w_s, w_t, mask, labels = _inputs(seed=4, dtype=torch.float64, batch=2, seq=3, vocab=6)
    a, b = h_s.clone().requires_grad_(), w_s.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: chunked_distillation_loss(x, h_t, y, w_t, mask, beta=beta,
                                                                           temperature=1.7, chunk_size=2), (a, b))
    zs = (h_s @ w_s.T).requires_grad_()
    zt = (h_t @ w_t.T).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: distillation_loss(x, y, labels, beta=beta, temperature=0.7),
                                    (zs, zt))


def test_teacher_gets_no_gradient_from_the_chunked_loss():
    h_s, h_t, w_s, w_t, mask, _ = _inputs()
    leaves = [t.clone().requires_grad_() for t in (h_s, h_t, w_s, w_t)]
    chunked_distillation_loss(leaves[0], leaves[1], leaves[2], leaves[3], mask).backward()
    assert leaves[1].grad is None and leaves[3].grad is None and leaves[0].grad is not None


# ---------------------------------------------------------------- sympy


def _symbols(k=3):
    return list(sp.symbols(f"s0:{k}", real=True)), list(sp.symbols(f"t0:{k}", real=True))


def test_sympy_forward_kl_is_cross_entropy_minus_entropy_and_its_gradient():
    zs, zt = _symbols()
    T = sp.Symbol("T", positive=True)
    assert sp.simplify(dd.forward_kl(zs, zt, T) - dd.soft_cross_entropy(zs, zt, T)) == 0
    for z, g in zip(zs, dd.forward_kl_grad(zs, zt, T)):
        assert sp.simplify(sp.diff(dd.forward_kl(zs, zt, T), z) - g) == 0
    for z, g in zip(zs, dd.reverse_kl_grad(zs, zt, T)):
        assert sp.simplify(sp.diff(dd.reverse_kl(zs, zt, T), z) - g) == 0
    assert sp.simplify(dd.forward_kl_grad(zs, zt, T)[0] - dd.forward_kl_grad(zs, zt, 1)[0]) != 0


def test_sympy_jsd_gradient_and_limits():
    p, q = list(sp.symbols("p0:3", positive=True)), list(sp.symbols("q0:3", positive=True))
    beta = sp.Symbol("beta", positive=True)
    close = {p[2]: 1 - p[0] - p[1], q[2]: 1 - q[0] - q[1]}
    jsd = dd.generalized_jsd(p, q, beta)
    for k in range(3):
        e = (dd.through_softmax(jsd, p, k) - dd.jsd_grad_in_probs(p, q, beta, k)).subs(close)
        assert sp.simplify(sp.expand_log(sp.expand(e), force=True)) == 0
    j = jsd.subs(close)
    assert sp.simplify(j.subs(beta, 0)) == 0 and sp.simplify(j.subs(beta, 1)) == 0
    fwd, rev = kl_divergence(q, p).subs(close), kl_divergence(p, q).subs(close)
    assert sp.simplify(sp.expand_log(sp.diff(j, beta).subs(beta, 0) - fwd, force=True)) == 0
    assert sp.simplify(sp.expand_log(-sp.diff(j, beta).subs(beta, 1) - rev, force=True)) == 0


def test_sympy_hinton_limit_and_two_modes():
    zs, zt = _symbols()
    e = sp.Symbol("e", positive=True)
    for k in range(3):
        g = dd.forward_kl_grad(zs, zt, 1 / e)[k] / e**2  # T^2 times the gradient at T = 1/e
        assert sp.simplify(sp.limit(g, e, 0) - dd.hinton_limit(zs, zt)[k]) == 0
    ex = dd.two_mode_example()
    t, wide, narrow = ex["teacher"], ex["wide"], ex["narrow"]
    assert (kl_divergence(t, wide) - kl_divergence(t, narrow)).evalf(50) < 0  # forward KL: the wide one
    assert (kl_divergence(narrow, t) - kl_divergence(wide, t)).evalf(50) < 0  # reverse KL: the narrow one


def test_sympy_lambdified_equals_distillation_loss():
    zs, zt = _symbols(4)
    T, beta = sp.Symbol("T", positive=True), sp.Symbol("beta", positive=True)
    exprs = {0.0: dd.forward_kl(zs, zt, T), 1.0: dd.reverse_kl(zs, zt, T),
             0.3: dd.generalized_jsd(dd.tempered(zs, T), dd.tempered(zt, T), beta)}
    g = torch.Generator().manual_seed(0)
    for b, expr in exprs.items():
        f = sp.lambdify((*zs, *zt, T, beta), expr, "math")
        z = 2 * torch.randn(5, 8, generator=g, dtype=torch.float64)
        want = sum(f(*row.tolist(), 1.5, b) for row in z) / 5
        got = distillation_loss(z[:, :4], z[:, 4:], beta=b, temperature=1.5)
        assert abs(float(got) - want) < 1e-12


# ---------------------------------------------------------------- widgets, bug zoo, errors


def test_widget_forward_covers_and_reverse_seeks():
    from lossbook.widgets.distillation import DistillationExplorer

    e = DistillationExplorer(beta=0.5, temperature=1.0)
    fwd, rev = e.students["forward KL"], e.students["reverse KL"]
    assert fwd["sigma"] > 2 * rev["sigma"] and rev["left_mass"] > 0.99 > fwd["left_mass"]
    e.temperature.value = 3.0
    assert abs(e.students["forward KL"]["mu"] - e.students["reverse KL"]["mu"]) < 0.5


def test_bug_zoo_fails_and_lossbook_passes():
    from lossbook.bugzoo import distillation as zoo
    from lossbook.checks import compare_losses

    cases = demo.forward_kl_cases()
    assert compare_losses(distillation_loss, distillation_loss, cases).passed
    for bug in (zoo.kl_arguments_swapped, zoo.temperature_on_one_side, zoo.mean_over_vocab, zoo.counts_padding):
        assert not compare_losses(bug, distillation_loss, cases, atol=1e-5).passed, bug.__name__

    def ref(student_logits, teacher_logits, labels, temperature, alpha):
        return demo.hinton_mixed_loss(student_logits, teacher_logits, labels, temperature=temperature, alpha=alpha)

    assert not compare_losses(zoo.missing_t_squared, ref, demo.hinton_cases(), atol=1e-5).passed


@pytest.mark.parametrize("call, error, words", [
    (lambda z, y: distillation_loss(z, z[..., :4], y), ValueError, "one shape"),
    (lambda z, y: distillation_loss(z, z.double(), y), TypeError, "dtype"),
    (lambda z, y: distillation_loss(z, z, y[:, :2]), ValueError, "labels must have shape"),
    (lambda z, y: distillation_loss(z, z, y.float()), TypeError, "labels"),
    (lambda z, y: distillation_loss(z, z, y, beta=1.5), ValueError, "beta"),
    (lambda z, y: distillation_loss(z, z, y, beta=True), TypeError, "beta"),
    (lambda z, y: distillation_loss(z, z, y, temperature=0.0), ValueError, "temperature"),
    (lambda z, y: distillation_loss(z, z, y, num_items_in_batch=0), ValueError, "num_items_in_batch"),
    (lambda z, y: distillation_loss(z.long(), z, y), TypeError, "student_logits"),
])
def test_distillation_loss_errors(call, error, words):
    z, y = torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(error, match=words):
        call(z, y)


@pytest.mark.parametrize("change, error, words", [
    (dict(student_weight=torch.randn(9, 4)), ValueError, "student_weight must be"),
    (dict(teacher_weight=torch.randn(7, 6)), ValueError, "share the vocabulary"),
    (dict(teacher_hidden=torch.randn(2, 4, 6)), ValueError, "same positions"),
    (dict(completion_mask=torch.ones(2, 4)), ValueError, "completion_mask must have shape"),
    (dict(teacher_hidden=torch.randn(2, 3, 6, dtype=torch.float64)), TypeError, "dtype"),
    (dict(chunk_size=0), ValueError, "chunk_size"),
    (dict(beta=-0.1), ValueError, "beta"),
    (dict(student_hidden=torch.randn(4)), ValueError, "student_hidden must be"),
])
def test_chunked_errors(change, error, words):
    args = dict(student_hidden=torch.randn(2, 3, 4), teacher_hidden=torch.randn(2, 3, 6),
                student_weight=torch.randn(9, 4), teacher_weight=torch.randn(9, 6),
                completion_mask=torch.ones(2, 3))
    if "student_weight" in change:
        change = dict(student_weight=torch.randn(9, 5))
    kw = {k: change.pop(k) for k in ("chunk_size", "beta") if k in change}
    args.update(change)
    with pytest.raises(error, match=words):
        chunked_distillation_loss(**args, **kw)


def test_benchmark_case_is_correct_and_below_the_naive_memory():
    from benchmarks import suite

    case = suite.distillation_cases(torch.device("cpu"), [(256, 16, 8192)], chunk_size=64)[0]
    diffs = suite.check_case(case)
    assert diffs["chunked"] <= 1e-5, diffs
    peaks = {name: suite.peak_bytes(case.fns[name], torch.device("cpu"))["tracked"] for name in ("chunked", "naive")}
    assert peaks["chunked"] <= 0.2 * peaks["naive"], peaks


def test_nan_inputs_and_a_mask_that_is_not_0_or_1_are_refused_by_name():
    z = torch.randn(2, 3, 5)
    bad = z.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_logits \(shape \[2, 3, 5\]\) holds NaN at 1 of 30"):
        distillation_loss(z, bad)
    with pytest.raises(ValueError, match=r"student_logits .* holds NaN"):
        distillation_loss(bad, z)
    h, w = torch.randn(2, 3, 4), torch.randn(5, 4)
    mask = torch.ones(2, 3, dtype=torch.long)
    nan_h = h.clone()
    nan_h[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"student_hidden .* holds NaN"):
        chunked_distillation_loss(nan_h, h, w, w, mask)
    with pytest.raises(ValueError, match="completion_mask must hold only 0 and 1"):
        chunked_distillation_loss(h, h, w, w, mask * 2)
    assert torch.isfinite(chunked_distillation_loss(h, h.flip(0), w, w, mask))
