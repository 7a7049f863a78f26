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


def test_interleaved_timing_and_report(cpu, tmp_path):
    samples = suite.time_interleaved({"a": lambda: torch.ones(3).sum(), "b": lambda: torch.zeros(3)}, cpu,
                                     rounds=3, min_sample_s=0.0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    roof = suite.roofline(cpu, size_mb=4, n=128, repeats=2)
    assert roof["bandwidth"] > 0 and roof["flops"] > 0
