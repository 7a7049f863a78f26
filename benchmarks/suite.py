"""lossbook measured against its peers, in one process: time ratios, peak memory, the in-run roofline.

Run it (from the repository root; one torch thread unless --threads says otherwise; 3 to 3.5 minutes on the
2-core machine, most of it the V=128256 case)::

    PYTHONPATH=$PWD python -m benchmarks            # full suite -> build/benchmarks/results.{md,json,png}
    PYTHONPATH=$PWD python -m benchmarks --quick    # small sizes only, seconds

Discipline (as pytest-benchmark): every timed function is warmed up; the functions of one case are timed in
*interleaved* rounds (lossbook, upstream, torch, lossbook, ...; the order rotates each round), so a slow
phase of a shared machine hits all of them; each sample runs the function enough times to last
``min_sample_s``; the report gives the median per call, the median of the per-round ratios and their spread
(the 25th-75th percentile); peak memory is measured deterministically by lossbook.memory.StorageTracker (live
tensor storage, CPU or GPU) and, on a GPU, by ``torch.cuda.max_memory_allocated`` too.  The roofline (copy
bandwidth and matmul rate) is measured in the same run, and each result reports the fraction of it reached:
``max(bytes / bandwidth, flops / matmul rate) / measured time``, with the bytes and flops a lower bound
(each input read once).  The run ends with issue 12's goals, each judged on the median over the rounds of the
per-round (paired) ratio or difference to the reference (``goals``): a table of measured value, target and verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import lossbook
from lossbook.memory import StorageTracker

__all__ = ["Case", "loss_cases", "chunked_cases", "distillation_cases", "roofline", "time_interleaved",
           "peak_bytes", "run", "main"]


@dataclass
class Case:
    """One comparison: ``fns`` name -> zero-argument callable returning a tensor (the loss or a gradient)."""

    group: str
    size: str
    fns: dict
    reference: str  # the name the others are compared to (upstream, or the naive path)
    bytes: float = 0.0  # lower bound of the bytes a call must move
    flops: float = 0.0  # lower bound of the floating-point operations of a call
    atol: float = 1e-5
    skipped: dict = field(default_factory=dict)  # name -> why it could not run here


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def roofline(device, size_mb: int = 256, n: int = 2048, repeats: int = 5) -> dict:
    """Copy bandwidth (bytes read + written per second) and float32 matmul rate, best of ``repeats``."""
    src = torch.empty(size_mb * 2**20 // 4, device=device).normal_()
    dst = torch.empty_like(src)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    copy, mm = [], []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        copy.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        mm.append(time.perf_counter() - t)
    return {"bandwidth": 2 * src.numel() * 4 / min(copy), "flops": 2 * n**3 / min(mm)}


def _calibrate(fn, device, min_sample_s):
    if min_sample_s <= 0:  # large cases: one call per sample (check_case has already warmed them up)
        return 1
    fn()  # warm-up
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - t, 1e-7)
    return max(1, int(min_sample_s / once))


def time_interleaved(fns: dict, device, rounds: int = 7, min_sample_s: float = 0.02) -> dict:
    """name -> list of seconds per call, one sample per round; the order of the functions rotates each round."""
    loops = {name: _calibrate(fn, device, min_sample_s) for name, fn in fns.items()}
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, k = fns[name], loops[name]
            _sync(device)
            t = time.perf_counter()
            for _ in range(k):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t) / k)
    return samples


def peak_bytes(fn, device) -> dict:
    """Peak live tensor storage of one call (StorageTracker) and, on a GPU, the allocator's peak."""
    out = {}
    with StorageTracker() as tracker:
        fn()
    out["tracked"] = tracker.peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        out["cuda"] = torch.cuda.max_memory_allocated() - base
    return out


def _upstream():
    from transformers.loss import loss_utils

    return loss_utils


class _Config:  # the two fields transformers' heads read from a model config
    def __init__(self, num_labels, problem_type=None):
        self.num_labels, self.problem_type = num_labels, problem_type


def loss_cases(device, sizes) -> list[Case]:
    """Every lossbook loss against the transformers function it mirrors and, where it applies, plain torch."""
    hf = _upstream()
    cases = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for batch, seq, vocab in sizes:
        size = f"{batch}x{seq}x{vocab}"
        logits = torch.randn(batch, seq, vocab, generator=g).to(device)
        labels = torch.randint(0, vocab, (batch, seq), generator=g)
        labels[:, : seq // 4] = -100
        labels = labels.to(device)
        flat, flat_labels = logits.view(-1, vocab), labels.view(-1)
        shifted = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous().view(-1)
        nbytes = logits.numel() * 4
        cases.append(Case("fixed_cross_entropy", size, {
            "lossbook": lambda z=flat, y=flat_labels: lossbook.fixed_cross_entropy(z, y),
            "upstream": lambda z=flat, y=flat_labels: hf.fixed_cross_entropy(z, y),
            "torch": lambda z=flat, y=flat_labels: F.cross_entropy(z, y, ignore_index=-100),
        }, "upstream", nbytes))
        cases.append(Case("causal_lm_loss", size, {
            "lossbook": lambda z=logits, y=labels: lossbook.causal_lm_loss(z, y),
            "upstream": lambda z=logits, y=labels, v=vocab: hf.ForCausalLMLoss(z, y, v),
            "torch": lambda z=flat, y=shifted: F.cross_entropy(z, y, ignore_index=-100),
        }, "upstream", nbytes))
        cases.append(Case("masked_lm_loss", size, {
            "lossbook": lambda z=logits, y=labels: lossbook.masked_lm_loss(z, y),
            "upstream": lambda z=logits, y=labels, v=vocab: hf.ForMaskedLMLoss(z, y, v),
        }, "upstream", nbytes))
        tags = min(vocab, 9)
        tag_logits = logits[..., :tags].contiguous()
        tag_labels = labels.clamp(max=tags - 1).masked_fill(labels < 0, -100)
        cases.append(Case("token_classification_loss", f"{batch}x{seq}x{tags}", {
            "lossbook": lambda z=tag_logits, y=tag_labels, n=tags: lossbook.token_classification_loss(z, y, n),
            "upstream": lambda z=tag_logits, y=tag_labels, n=tags: hf.ForTokenClassification(z, y, _Config(n)),
        }, "upstream", tag_logits.numel() * 4))
    for batch, classes in [(8, 3), (256, 16)]:
        z = torch.randn(batch, classes, generator=g).to(device)
        y = torch.randint(0, classes, (batch,), generator=g).to(device)
        cases.append(Case("sequence_classification_loss", f"{batch}x{classes}", {
            "lossbook": lambda z=z, y=y, n=classes: lossbook.sequence_classification_loss(y, z, n),
            "upstream": lambda z=z, y=y, n=classes: hf.ForSequenceClassificationLoss(y, z, _Config(n)),
            "torch": lambda z=z, y=y: F.cross_entropy(z, y),
        }, "upstream", z.numel() * 4))
    for batch, seq in [(8, 128), (64, 512)]:
        s, e = torch.randn(batch, seq, generator=g).to(device), torch.randn(batch, seq, generator=g).to(device)
        sp = torch.randint(0, seq + 8, (batch,), generator=g).to(device)
        ep = torch.randint(0, seq + 8, (batch,), generator=g).to(device)
        cases.append(Case("question_answering_loss", f"{batch}x{seq}", {
            "lossbook": lambda s=s, e=e, a=sp, b=ep: lossbook.question_answering_loss(s, e, a, b),
            "upstream": lambda s=s, e=e, a=sp, b=ep: hf.ForQuestionAnsweringLoss(s, e, a, b),
        }, "upstream", 2 * s.numel() * 4))
    for pairs in (16, 4096):
        c, r = torch.randn(pairs, 1, generator=g).to(device), torch.randn(pairs, 1, generator=g).to(device)
        cases.append(Case("pairwise_reward_loss", f"{pairs}", {
            "lossbook": lambda c=c, r=r: lossbook.pairwise_reward_loss(c, r),
            "torch": lambda c=c, r=r: -F.logsigmoid(c - r).mean(),  # TRL RewardTrainer.compute_loss's formula
        }, "torch", 2 * c.numel() * 4))
    return cases


def _peers():
    """The packaged chunked implementations, or why they cannot run here."""
    peers, skipped = {}, {}
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        peers["liger"] = liger_fused_linear_cross_entropy
    except Exception as error:  # noqa: BLE001 - any failure to import is reported, not raised
        skipped["liger"] = f"{type(error).__name__}: {error}"
    try:
        from cut_cross_entropy import linear_cross_entropy

        peers["cce"] = linear_cross_entropy
    except Exception as error:  # noqa: BLE001
        skipped["cce"] = f"{type(error).__name__}: {error}"
    return peers, skipped


def _try_peer(peer, device) -> str | None:
    """Run a packaged peer once, forward and backward, on a tiny problem on ``device``: None if it works, else
    what went wrong (Triton's kernels need a GPU; on the CPU this says how they fail)."""
    g = torch.Generator(device="cpu").manual_seed(2)
    h = torch.randn(8, 4, generator=g).to(device).requires_grad_()
    w = torch.randn(16, 4, generator=g).to(device).requires_grad_()
    y = torch.randint(0, 16, (8,), generator=g).to(device)
    try:
        peer(h, w, y).backward()
    except Exception as error:  # noqa: BLE001 - any failure is reported in the table, not raised
        lines = str(error).strip().splitlines()
        return f"fails on {device.type}: {type(error).__name__}: {lines[-1] if lines else ''}"
    return None


def chunked_cases(device, sizes, chunk_size: int | None = None) -> list[Case]:
    """chunked_cross_entropy (forward + backward) against the naive path and the packaged peers."""
    peers, skipped = _peers()
    for name in list(peers):
        why = _try_peer(peers[name], device)
        if why is not None:
            skipped[name] = why
            del peers[name]
    cases = []
    g = torch.Generator(device="cpu").manual_seed(1)
    for tokens, hidden, vocab in sizes:
        h = torch.randn(tokens, hidden, generator=g).to(device).requires_grad_()
        w = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(device).requires_grad_()
        y = torch.randint(0, vocab, (tokens,), generator=g).to(device)
        y[: tokens // 8] = -100

        def grads(loss, h, w):
            return torch.autograd.grad(loss, (h, w))

        fns = {
            "chunked": lambda h=h, w=w, y=y: grads(lossbook.chunked_cross_entropy(h, w, y, chunk_size=chunk_size),
                                                   h, w),
            "chunked_early": lambda h=h, w=w, y=y: grads(
                lossbook.chunked_cross_entropy(h, w, y, chunk_size=chunk_size, recompute=False), h, w),
            "naive": lambda h=h, w=w, y=y: grads(lossbook.fixed_cross_entropy(h @ w.T, y), h, w),
        }
        for name, peer in peers.items():  # the ones that ran on this device
            fns[name] = lambda h=h, w=w, y=y, peer=peer: grads(peer(h, w, y), h, w)
        skip = dict(skipped)
        flops = 3 * 2 * tokens * hidden * vocab  # logits, grad hidden, grad weight: the minimum
        nbytes = (tokens + 2 * vocab) * hidden * 4  # read hidden and weight, write the weight gradient
        cases.append(Case("chunked_cross_entropy", f"{tokens}x{hidden}x{vocab}", fns, "naive", nbytes, flops,
                          atol=1e-4, skipped=skip))
    return cases


def distillation_cases(device, sizes, chunk_size: int | None = None) -> list[Case]:
    """chunked_distillation_loss (forward + backward, beta 0.5: the generalised JSD, TRL's default) against TRL
    1.16 DistillationTrainer's ``_chunked_divergence_loss`` (the reference) and the naive path
    (``distillation_loss`` on both [tokens, vocab] logits); the student's hidden-state and weight gradients."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.trainer.distillation_trainer import _chunked_divergence_loss
    except Exception as error:  # noqa: BLE001 - reported, not raised
        _chunked_divergence_loss, why = None, f"{type(error).__name__}: {error}"
    cases = []
    g = torch.Generator(device="cpu").manual_seed(3)
    for tokens, hidden, vocab in sizes:
        h = torch.randn(tokens, hidden, generator=g).to(device).requires_grad_()
        ht = torch.randn(tokens, hidden, generator=g).to(device)
        w = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(device).requires_grad_()
        wt = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(device)
        mask = torch.ones(tokens, dtype=torch.long, device=device)
        mask[: tokens // 8] = 0
        labels = mask.masked_fill(mask == 0, -100)

        def grads(loss, h, w):
            return torch.autograd.grad(loss, (h, w))

        fns = {
            "chunked": lambda h=h, ht=ht, w=w, wt=wt, m=mask: grads(lossbook.chunked_distillation_loss(
                h, ht, w, wt, m, beta=0.5, chunk_size=chunk_size), h, w),
            "naive": lambda h=h, ht=ht, w=w, wt=wt, y=labels: grads(lossbook.distillation_loss(
                h @ w.T, ht @ wt.T, y, beta=0.5), h, w),
        }
        skipped = {}
        if _chunked_divergence_loss is None:
            skipped["trl"] = why
        else:
            fns["trl"] = lambda h=h, ht=ht, w=w, wt=wt, m=mask: grads(_chunked_divergence_loss(
                h, ht, w, wt, m, 0.5)[0], h, w)
        flops = 4 * 2 * tokens * hidden * vocab  # both logits, grad hidden, grad weight: the minimum
        nbytes = (2 * tokens + 3 * vocab) * hidden * 4  # read both hiddens and weights, write the weight gradient
        cases.append(Case("chunked_distillation_loss", f"{tokens}x{hidden}x{vocab}", fns,
                          "trl" if "trl" in fns else "naive", nbytes, flops, atol=1e-4, skipped=skipped))
    return cases


def _values(out):
    return out if isinstance(out, (tuple, list)) else (out,)


def check_case(case: Case) -> dict:
    """Max absolute difference of every function's output from the reference's."""
    outs = {name: [t.detach().float() for t in _values(fn())] for name, fn in case.fns.items()}  # one call each
    ref = outs[case.reference]
    return {name: max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(got, ref, strict=True))
            for name, got in outs.items()}


def median_ci(xs) -> tuple[float, float]:
    """A distribution-free ~95% confidence interval of the median of ``xs``: the order statistics of ranks
    (n - 1.96 sqrt(n)) / 2 and 1 + (n + 1.96 sqrt(n)) / 2 (1-based, clamped to the sample)."""
    xs, n = sorted(xs), len(xs)
    lo = max(1, int((n - 1.96 * n**0.5) // 2))
    hi = min(n, -int(-(1 + (n + 1.96 * n**0.5) / 2) // 1))
    return xs[lo - 1], xs[hi - 1]


def _q(xs, p):
    xs = sorted(xs)
    i = (len(xs) - 1) * p
    lo, hi = int(i), min(int(i) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


# The most a lossbook loss may add to its upstream's time per call where upstream takes under 1 ms (issue 23).
ADDED_US = 20
# Rounds of a case below the big ones.  Issue 12's "<= 10 µs added" (now 20) is 2% of a 450 µs call, and with 15 rounds
# the best-sample difference of two identical calls wandered by +-15 µs on the 2-core machine (the L3 cache is
# shared with other tenants); with 45 it stayed within +-6 µs in three runs.
SUB_MS_ROUNDS = 45
# Rounds of a case whose calls take a second or more (one call per sample): the median of 5 paired ratios; with 3,
# one slow round of the reference or of lossbook moved an identical-ops ratio to 1.08.
BIG_ROUNDS = 5


def run(quick: bool = False, rounds: int | None = None, device=None, only: str | None = None) -> list[dict]:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    roof = roofline(device, size_mb=64 if quick else 256, n=1024 if quick else 2048)
    loss_sizes = [(2, 16, 64), (4, 128, 1024)] if quick else [(2, 16, 64), (4, 128, 1024), (8, 512, 32000)]
    chunk_sizes = [(256, 32, 4096)] if quick else [(256, 32, 4096), (2048, 256, 128256)]
    rows = []
    start = time.perf_counter()
    cases = loss_cases(device, loss_sizes) + chunked_cases(device, chunk_sizes) + distillation_cases(device,
                                                                                                     chunk_sizes)
    for case in [c for c in cases if only is None or c.group == only]:
        print(f"[{time.perf_counter() - start:5.0f} s] {case.group} {case.size}", file=sys.stderr, flush=True)
        big = case.flops > 1e10 or case.bytes > 1e8  # seconds per call: BIG_ROUNDS rounds of one call
        diffs = check_case(case)
        peaks = {name: peak_bytes(fn, device) for name, fn in case.fns.items()}
        samples = time_interleaved(case.fns, device, rounds=rounds or (BIG_ROUNDS if big else SUB_MS_ROUNDS),
                                   min_sample_s=0.0 if big else (0.005 if quick else 0.02))
        ref = samples[case.reference]
        for name, ts in samples.items():
            ratios = [t / r for t, r in zip(ts, ref, strict=True)]
            added = [(t - r) * 1e6 for t, r in zip(ts, ref, strict=True)]  # µs, paired within each round
            med = statistics.median(ts)
            bound = max(case.bytes / roof["bandwidth"], case.flops / roof["flops"])
            rows.append({
                "group": case.group, "size": case.size, "impl": name, "reference": case.reference,
                "median_us": med * 1e6, "ratio": statistics.median(ratios),
                "ratio_q25": _q(ratios, 0.25), "ratio_q75": _q(ratios, 0.75),
                "ref_median_us": statistics.median(ref) * 1e6,
                "added_paired_us": statistics.median(added), "added_q25_us": _q(added, 0.25),
                "added_q75_us": _q(added, 0.75), "added_ci_us": median_ci(added), "ratio_ci": median_ci(ratios),
                "min_us": min(ts) * 1e6, "ratio_min": min(ts) / min(ref), "added_min_us": (min(ts) - min(ref)) * 1e6,
                "peak_bytes": peaks[name]["tracked"], "cuda_peak_bytes": peaks[name].get("cuda"),
                "peak_vs_ref": peaks[name]["tracked"] / max(peaks[case.reference]["tracked"], 1),
                "max_abs_diff": diffs[name], "roofline_fraction": bound / med, "atol": case.atol,
            })
        for name, why in case.skipped.items():
            rows.append({"group": case.group, "size": case.size, "impl": name, "skipped": why})
    meta = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "bandwidth_GBps": roof["bandwidth"] / 1e9, "matmul_GFLOPs": roof["flops"] / 1e9}
    return [{"meta": meta}] + rows


def table(results: list[dict]) -> str:
    meta = results[0]["meta"]
    lines = [f"device {meta['device']}, {meta['threads']} thread(s), torch {meta['torch']}; in-run roofline: copy "
             f"{meta['bandwidth_GBps']:.1f} GB/s, matmul {meta['matmul_GFLOPs']:.1f} GFLOP/s", "",
             "| loss | size | impl | median | ratio to ref [q25, q75] | added [q25, q75] | best | best ratio | "
             "best added | peak (tracked) | peak/ref | max abs diff | roofline |", "|" + "---|" * 13]
    for r in results[1:]:
        if "skipped" in r:
            lines.append(f"| {r['group']} | {r['size']} | {r['impl']} | skipped: {r['skipped']} | | | | | | | | | |")
            continue
        med_s, best_s = _duration(r["median_us"]), _duration(r["min_us"])
        added = "" if r["impl"] == r["reference"] else (
            f"{_delta(r['added_paired_us'])} [{_delta(r['added_q25_us'])}, {_delta(r['added_q75_us'])}]")
        best_added = _delta(r["added_min_us"])
        best_ratio = "ref" if r["impl"] == r["reference"] else f"{r['ratio_min']:.2f}"
        ratio = "ref" if r["impl"] == r["reference"] else (
            f"{r['ratio']:.2f} [{r['ratio_q25']:.2f}, {r['ratio_q75']:.2f}]")
        lines.append(f"| {r['group']} | {r['size']} | {r['impl']} | {med_s} | {ratio} | {added} | {best_s} | "
                     f"{best_ratio} | {best_added} | "
                     f"{r['peak_bytes'] / 2**20:.2f} MiB | {r['peak_vs_ref']:.3f} | {r['max_abs_diff']:.1e} | "
                     f"{r['roofline_fraction']:.1%} |")
    return "\n".join(lines)


def _duration(us: float) -> str:
    return f"{us:.1f} µs" if us < 1e3 else (f"{us / 1e3:.2f} ms" if us < 1e6 else f"{us / 1e6:.2f} s")


def _delta(us: float) -> str:
    return f"{us:+.1f} µs" if abs(us) < 1e3 else f"{us / 1e3:+.1f} ms"


def goals(results: list[dict]) -> list[dict]:
    """Issue 12's goals as issue 23 set them, each checked against this run's rows: one verdict per (goal, case).

    Times are judged *paired*: in each interleaved round the function and its reference run back to back, and
    the verdict takes the median over the rounds of their per-round ratio (``ratio``) or difference
    (``added_paired_us``).  Slow phases of the shared machine hit both members of a pair, so they cancel.  A time
    goal whose median misses its target while the median's 95% interval (``median_ci``) still reaches it is
    reported "within noise": on a noisy run the machine cannot tell, which is neither met nor failed.  An
    earlier version judged the best samples (min against min): two independent extremes, whose difference for a
    450 µs call wandered by +-15 to +-30 µs from run to run on this machine (its L3 cache is shared with other
    tenants), more than the 20 µs being judged.  The table keeps the best samples beside the medians.

    * every lossbook loss: time ratio <= 1.10 where upstream takes >= 1 ms, else <= 20 µs added per call
      (issue 23 relaxed the 10 µs of issue 12: one code path, checks in one call, no CPU short path);
      never more tracked peak memory than its reference;
    * ``chunked_cross_entropy`` at V=128256, 2048 tokens, H=256: tracked peak <= 10% of the naive path's, time
      <= 1.2x, loss and gradients within the case's float32 tolerance (checked by ``check_case``).
    """
    out = []
    peaks = {(r["group"], r["size"], r["impl"]): r.get("peak_bytes") for r in results[1:] if "skipped" not in r}
    for r in results[1:]:
        if "skipped" in r:
            continue
        case = f"{r['group']} {r['size']}"
        if r["group"] == "chunked_cross_entropy":
            if r["impl"] != "chunked" or r["size"] != "2048x256x128256":
                continue
            out.append({"goal": "chunked peak memory", "case": case, "measured": f"{r['peak_vs_ref']:.3f} of naive",
                        "target": "<= 0.10", "met": r["peak_vs_ref"] <= 0.10})
            out.append(_timed("chunked time", case, r["ratio"], r["ratio_ci"], 1.20, "{:.2f}x", " naive"))
            out.append({"goal": "chunked equals naive", "case": case, "measured": f"{r['max_abs_diff']:.1e}",
                        "target": f"<= {r.get('atol', 1e-4):.0e}", "met": r["max_abs_diff"] <= r.get("atol", 1e-4)})
            continue
        if r["group"] == "chunked_distillation_loss":  # issue 28: against TRL's chunked divergence
            if r["size"] != "2048x256x128256" or r["impl"] not in ("chunked", "naive"):
                continue
            if r["impl"] == "naive":
                continue
            naive = peaks.get((r["group"], r["size"], "naive"), float("inf"))
            out.append(_timed("distillation time", case, r["ratio"], r["ratio_ci"], 1.10, "{:.2f}x", " TRL"))
            out.append({"goal": "distillation peak memory", "case": case,
                        "measured": f"{r['peak_vs_ref']:.3f} of TRL's", "target": "<= 1.10",
                        "met": r["peak_vs_ref"] <= 1.10})
            out.append({"goal": "distillation equals TRL", "case": case, "measured": f"{r['max_abs_diff']:.1e}",
                        "target": f"<= {r.get('atol', 1e-4):.0e}", "met": r["max_abs_diff"] <= r.get("atol", 1e-4)})
            out.append({"goal": "distillation peak memory vs naive", "case": case,
                        "measured": f"{r['peak_bytes'] / naive:.3f} of naive", "target": "<= 0.10",
                        "met": r["peak_bytes"] <= 0.10 * naive})
            continue
        if r["impl"] != "lossbook":
            continue
        if r["ref_median_us"] >= 1e3:
            out.append(_timed("time (reference >= 1 ms)", case, r["ratio"], r["ratio_ci"], 1.10, "{:.2f}x"))
        else:
            out.append(_timed("added time (reference < 1 ms)", case, r["added_paired_us"], r["added_ci_us"], ADDED_US,
                              "{:+.1f} µs"))
        out.append({"goal": "peak memory", "case": case, "measured": f"{r['peak_vs_ref']:.3f} of reference",
                    "target": "<= 1.000", "met": r["peak_vs_ref"] <= 1.0})
    return out


def _timed(goal, case, value, ci, target, fmt, unit=""):
    """A time goal: met when the paired median is within ``target``; "within noise" when it is not but the
    median's 95% interval still reaches the target (the machine was too noisy in this run to tell); else not met."""
    lo, hi = ci
    within = value <= target
    return {"goal": goal, "case": case, "measured": f"{fmt.format(value)}{unit} (95% CI {fmt.format(lo)} to "
            f"{fmt.format(hi)})", "target": f"<= {fmt.format(target)}", "met": within,
            "noise": not within and lo <= target}


def goals_table(rows: list[dict]) -> str:
    met = sum(g["met"] for g in rows)
    noise = sum(g.get("noise", False) for g in rows)
    lines = [f"Goals (issues 12 and 23): {met} of {len(rows)} met, {noise} within this run's noise, "
             f"{len(rows) - met - noise} not met", "", "| goal | case | measured | target | met |",
             "|---|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['case']} | {g['measured']} | {g['target']} | "
              f"{'yes' if g['met'] else ('within noise' if g.get('noise') else 'NO')} |" for g in rows]
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results[1:] if "skipped" not in r and r["impl"] != r["reference"]]
    labels = [f"{r['group']} {r['size']} {r['impl']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1))
    y = range(len(rows))
    ax.errorbar([r["ratio"] for r in rows], y, xerr=[[r["ratio"] - r["ratio_q25"] for r in rows],
                                                   [r["ratio_q75"] - r["ratio"] for r in rows]], fmt="o")
    ax.axvline(1.0, color="grey", lw=1)
    ax.axvline(1.1, color="grey", lw=1, ls="--")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xlabel("time / reference time (median, q25-q75)")
    ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    parser.add_argument("--out", default="build/benchmarks", help="folder for results.md/.json/.png")
    parser.add_argument("--device", default=os.environ.get("LOSSBOOK_DEVICE"))
    parser.add_argument("--only", default=None, help="run one group only (e.g. chunked_distillation_loss)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1, or LOSSBOOK_THREADS): on a shared 2-core machine two "
                             "threads made a 10 µs loss take 50 ms, waiting for a descheduled worker")
    args = parser.parse_args(argv)
    lossbook.pin_threads(args.threads)
    start = time.perf_counter()
    results = run(quick=args.quick, rounds=args.rounds, device=args.device, only=args.only)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(results) + "\n\n" + goals_table(goals(results))
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "results.png")
    print(text)
    print(f"\n{time.perf_counter() - start:.0f} s; written to {out}/results.md, .json, .png")
    return results
