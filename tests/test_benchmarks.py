"""The fast subset of benchmarks/ (correctness and the memory ratio; no timing assertions)."""

import pytest
import torch

from benchmarks import suite


@pytest.fixture(scope="module")
def cpu():
    return torch.device("cpu")


def test_every_loss_case_agrees_with_its_reference(cpu):
    cases = suite.loss_cases(cpu, [(2, 8, 16)])
    assert {c.group for c in cases} >= {"fixed_cross_entropy", "causal_lm_loss", "masked_lm_loss",
                                        "token_classification_loss", "sequence_classification_loss",
                                        "question_answering_loss", "pairwise_reward_loss"}
    for case in cases:
        diffs = suite.check_case(case)
        assert max(diffs.values()) <= 1e-6, (case.group, case.size, diffs)


def test_lossbook_never_needs_more_tracked_memory_than_upstream(cpu):
    for case in suite.loss_cases(cpu, [(2, 8, 16)]):
        peaks = {name: suite.peak_bytes(fn, cpu)["tracked"] for name, fn in case.fns.items()}
        assert peaks["lossbook"] <= peaks[case.reference], (case.group, peaks)


def test_chunked_case_is_correct_and_a_small_fraction_of_the_naive_memory(cpu):
    cases = suite.chunked_cases(cpu, [(64, 8, 128), (512, 16, 8192)], chunk_size=64)  # two: closures stay apart
    assert max(suite.check_case(cases[0]).values()) <= 1e-5
    case = cases[1]
    diffs = suite.check_case(case)
    assert diffs["chunked"] <= 1e-5
    peaks = {name: suite.peak_bytes(case.fns[name], cpu)["tracked"] for name in ("chunked", "naive")}
    assert peaks["chunked"] <= 0.10 * peaks["naive"], peaks
    assert set(case.skipped) <= {"liger", "cce"}  # peers that cannot run here are reported, not hidden


def test_a_packaged_peer_is_tried_and_its_failure_reported(cpu):
    """Liger-Kernel and Cut Cross-Entropy are Triton kernels: the suite runs each once on a tiny problem and
    either times it or reports how it failed (on this CPU: "RuntimeError: 0 active drivers")."""
    import lossbook

    def broken(h, w, y):
        raise RuntimeError("0 active drivers ([]). There should only be one.")

    why = suite._try_peer(broken, cpu)
    assert why == "fails on cpu: RuntimeError: 0 active drivers ([]). There should only be one."
    assert suite._try_peer(lambda h, w, y: lossbook.chunked_cross_entropy(h, w, y), cpu) is None


def test_interleaved_timing_and_report(cpu, tmp_path):
    samples = suite.time_interleaved({"a": lambda: torch.ones(3).sum(), "b": lambda: torch.zeros(3)}, cpu,
                                     rounds=3, min_sample_s=0.0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    roof = suite.roofline(cpu, size_mb=4, n=128, repeats=2)
    assert roof["bandwidth"] > 0 and roof["flops"] > 0


def test_goals_are_judged_from_the_rows_and_can_fail():
    def row(group, size, impl, median_us, added_us, ratio, peak, diff=0.0):
        return {"group": group, "size": size, "impl": impl, "median_us": median_us, "ref_median_us": median_us,
                "ratio": ratio, "added_paired_us": added_us,  # judged paired, per round
                "ratio_ci": (ratio - 0.01, ratio + 0.01), "added_ci_us": (added_us - 1, added_us + 1),
                "min_us": 0.5 * median_us, "added_min_us": -99.0, "ratio_min": 0.5,  # the best samples: not judged
                "peak_vs_ref": peak, "max_abs_diff": diff, "atol": 1e-4}

    results = [{"meta": {}},
               row("causal_lm_loss", "2x16x64", "lossbook", 30, 5, 1.2, 1.0),       # small: added time decides
               row("causal_lm_loss", "2x16x64", "upstream", 25, 0, 1.0, 1.0),      # not judged
               row("masked_lm_loss", "2x16x64", "lossbook", 40, 22, 1.4, 1.0),      # 22 µs added: fails
               row("causal_lm_loss", "8x512x32000", "lossbook", 3e5, 4e4, 1.15, 0.9),  # large: ratio, fails
               row("causal_lm_loss", "8x512x32000", "torch", 3e5, 4e4, 1.15, 0.9),     # not judged
               row("token_classification_loss", "4x128x9", "lossbook", 90, 2, 1.0, 1.5),  # memory fails
               row("chunked_cross_entropy", "2048x256x128256", "chunked", 3e6, 1, 1.25, 0.05, 2e-4),
               row("chunked_cross_entropy", "256x32x4096", "chunked", 3e3, 1, 9.0, 0.5),   # not the goal's size
               {"group": "chunked_cross_entropy", "size": "2048x256x128256", "impl": "liger", "skipped": "no GPU"}]
    verdicts = {(g["goal"], g["case"]): g["met"] for g in suite.goals(results)}
    assert verdicts == {
        ("added time (reference < 1 ms)", "causal_lm_loss 2x16x64"): True,
        ("peak memory", "causal_lm_loss 2x16x64"): True,
        ("added time (reference < 1 ms)", "masked_lm_loss 2x16x64"): False,
        ("peak memory", "masked_lm_loss 2x16x64"): True,
        ("time (reference >= 1 ms)", "causal_lm_loss 8x512x32000"): False,
        ("peak memory", "causal_lm_loss 8x512x32000"): True,
        ("added time (reference < 1 ms)", "token_classification_loss 4x128x9"): True,
        ("peak memory", "token_classification_loss 4x128x9"): False,
        ("chunked peak memory", "chunked_cross_entropy 2048x256x128256"): True,
        ("chunked time", "chunked_cross_entropy 2048x256x128256"): False,
        ("chunked equals naive", "chunked_cross_entropy 2048x256x128256"): False,
    }
    assert "6 of 11 met, 0 within this run's noise, 5 not met" in suite.goals_table(suite.goals(results))
    noisy = dict(results[3], added_ci_us=(-20.0, 40.0))  # 22 µs, but the interval reaches 20 µs: undecided
    goal = suite.goals([{"meta": {}}, noisy])[0]
    assert not goal["met"] and goal["noise"] and "within noise" in suite.goals_table([goal])


def test_the_median_interval_is_distribution_free_order_statistics():
    assert suite.median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # n = 5: the whole sample
    lo, hi = suite.median_ci([float(i) for i in range(45)])
    assert (lo, hi) == (14.0, 30.0)  # ranks 15 and 31 of 45 (1-based)
    draws = torch.Generator().manual_seed(0)
    covered = sum(lo <= 0 <= hi for lo, hi in (suite.median_ci(torch.randn(45, generator=draws).tolist())
                                                for _ in range(400)))
    assert 0.92 * 400 <= covered <= 0.99 * 400  # about 95% of intervals hold the true median, 0
