"""Chapter 12: losses across processes.

Real 2-process runs (torchrun, gloo on the CPU) of the chapter's script, each compared with the single-process
full batch and with the in-process simulation of the same recipe; transformers' Trainer functions on simulated
ranks; sympy; the helpers' errors; the bug zoo.  One torchrun launch serves the whole file (module fixture),
killed if it runs past its timeout.
"""

from __future__ import annotations

import sys
import time

import pytest
import sympy as sp
import torch
import torch.distributed as dist

from lossbook import causal_lm_loss
from lossbook.bugzoo import distributed as bugs
from lossbook.causal_lm import next_token_labels
from lossbook.checks import compare_losses
from lossbook.demos import distributed as demo
from lossbook.demos import distributed_run
from lossbook.derivations import causal_lm as dcl
from lossbook.derivations import distributed as dd
from lossbook.distributed import (
    RECIPES,
    context_parallel_shard,
    count_targets,
    data_parallel_loss,
    global_num_items,
    simulated_data_parallel_loss,
    split_for_ranks,
    token_weights,
)

MODES = ("global_count", "per_rank_mean", "no_world_size_factor", "all_reduced_loss", "cp", "cp_local")
SIMULATIONS = {
    "global_count": simulated_data_parallel_loss,
    "per_rank_mean": bugs.per_rank_mean,
    "no_world_size_factor": bugs.forgets_world_size_factor,
    "all_reduced_loss": bugs.all_reduces_the_loss,
    "cp": simulated_data_parallel_loss,
    "cp_local": lambda logits, labels, ranks, micro_batches: bugs.shifts_each_shard(logits, labels, ranks=ranks),
}
MICRO = 2  # the data-parallel modes run 2 micro-batches per rank (DDP's no_sync on the first)


def _full(logits, labels, ranks=2, micro_batches=1, ignore_index=-100):
    return causal_lm_loss(logits, labels, ignore_index=ignore_index)


@pytest.fixture(scope="module")
def runs():
    """Every mode, one step, 2 processes, gloo; the single-process full batch of the same step."""
    result = demo.launch(list(MODES), nproc=2, micro_batches=MICRO, timeout=150, backend="gloo")
    return result, demo.full_batch_run(1)


# ---------------------------------------------------------------- real torchrun runs


def test_the_ranks_hold_uneven_counts_and_share_one_global_count(runs):
    result, _ = runs
    rec = result.records["global_count"]
    local = [r["local_counts"][0] for r in rec]
    assert local[1] > 3 * local[0] > 0  # very uneven: the case where the per-rank mean is wrong
    assert all(r["global_counts"][0] == sum(local) for r in rec)  # the all-reduced num_items_in_batch
    labels = demo.uneven_batch(0)[1]
    assert sum(local) == int(count_targets(labels))
    assert all(r["backend"] == "gloo" and r["world_size"] == 2 for r in rec)


@pytest.mark.parametrize("mode", MODES)
def test_every_rank_ends_with_the_same_gradient(runs, mode):
    result, _ = runs
    a, b = (r["grad0"] for r in result.records[mode])
    assert torch.equal(a, b)  # DDP all-reduced them


def test_global_count_matches_the_full_batch_and_per_rank_mean_does_not(runs):
    result, ref = runs
    err_b = demo.relative_error(result.records["global_count"][0]["grad0"], ref["grad0"])
    err_a = demo.relative_error(result.records["per_rank_mean"][0]["grad0"], ref["grad0"])
    assert err_b < 1e-5, err_b
    assert err_a > 0.1, err_a


def test_the_bugs_miss_the_full_batch(runs):
    result, ref = runs
    assert demo.relative_error(result.records["no_world_size_factor"][0]["grad0"], ref["grad0"]) == pytest.approx(
        0.5, abs=1e-5)  # exactly half: DDP's mean over 2 ranks, not undone
    for mode in ("all_reduced_loss", "cp_local"):
        assert demo.relative_error(result.records[mode][0]["grad0"], ref["grad0"]) > 0.05, mode


@pytest.mark.parametrize("mode", MODES)
def test_the_real_run_equals_its_single_process_simulation(runs, mode):
    result, _ = runs
    micro = 1 if mode.startswith("cp") else MICRO
    simulated = demo.simulated_grad(SIMULATIONS[mode], micro_batches=micro)
    assert demo.relative_error(result.records[mode][0]["grad0"], simulated) < 1e-5


def test_context_parallel_loss_equals_the_unsharded_loss(runs):
    result, ref = runs
    cp = result.records["cp"][0]
    assert abs(cp["losses"][0] - ref["losses"][0]) < 1e-5
    assert demo.relative_error(cp["grad0"], ref["grad0"]) < 1e-5
    local = result.records["cp_local"][0]
    labels = demo.uneven_batch(0)[1]
    crossing = int((labels[:, labels.shape[1] // 2] != -100).sum())  # rows whose cut has a target after it
    assert crossing > 0
    assert local["global_counts"][0] == cp["global_counts"][0] - crossing  # each loses the target at the cut
    assert abs(local["losses"][0] - ref["losses"][0]) > 1e-3


def test_every_mode_logs_the_global_loss(runs):
    result, ref = runs
    for mode in ("global_count", "per_rank_mean", "no_world_size_factor", "all_reduced_loss"):
        assert all(abs(r["losses"][0] - ref["losses"][0]) < 1e-5 for r in result.records[mode]), mode


def test_the_all_reduced_loss_warning_is_printed(runs):
    result, _ = runs
    assert "autograd kernel was not registered" in result.output
    assert result.rank_lines().count("[rank") >= 2 * len(MODES)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
def test_launch_times_out_and_kills_torchrun_and_its_workers():
    """A launch that cannot finish in time (a million steps) returns soon after its timeout, workers killed.

    torchrun starts each worker in a session of its own, so killing torchrun's process group alone would leave
    them running, holding the output pipe (the caller would wait for them) and the CPU.
    """
    start = time.monotonic()
    with pytest.raises(demo.LaunchTimeout, match="ran past 15 s and was killed") as caught:
        demo.launch("global_count:1000000", timeout=15)
    assert time.monotonic() - start < 15 + 15  # the grace period and the pipe, not the workers' own timeouts
    workers = caught.value.workers
    assert len(workers) >= 2  # both ranks had started
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), workers


def test_launch_before_the_workers_start_times_out_too():
    with pytest.raises(RuntimeError, match="ran past 0.5 s and was killed"):
        demo.launch("global_count", timeout=0.5)


def test_the_script_refuses_micro_batches_that_do_not_divide_the_rows():
    model = demo.build_model()
    input_ids, labels = demo.uneven_batch(0)
    with pytest.raises(ValueError, match=r"8 rows do not split into micro_batches=3"):
        distributed_run.data_parallel_step(model, input_ids, labels, mode="global_count", micro_batches=3, world=1,
                                           device="cpu")
    with pytest.raises(ValueError, match=r"rows \(8\) must be divisible by ranks \(3\)"):
        demo.uneven_batch(0, ranks=3)


def test_the_script_in_one_process_is_the_full_batch_and_destroys_its_group(tmp_path, monkeypatch):
    """world_size 1 (no torchrun): the recipe reduces to the full batch; the process group is destroyed."""
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(demo.free_port()), "RANK": "0",
                 "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOSSBOOK_DEVICE": "cpu"}.items():
        monkeypatch.setenv(k, v)
    threads = torch.get_num_threads()
    try:
        distributed_run.main(["--modes", "global_count,cp", "--out", str(tmp_path), "--backend", "gloo"])
    finally:
        torch.set_num_threads(threads)
    assert not dist.is_initialized()
    records = torch.load(tmp_path / "rank0.pt", weights_only=False)
    ref = demo.full_batch_run(1, ranks=1)  # the batch a world of 1 builds
    for mode in ("global_count", "cp"):
        assert demo.relative_error(records[mode]["grad0"], ref["grad0"]) < 1e-5


def test_script_refuses_an_unknown_mode_and_bad_steps(tmp_path, capsys):
    with pytest.raises(SystemExit):
        distributed_run.main(["--modes", "global_count,mean_of_means", "--out", str(tmp_path)])
    assert "mean_of_means" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distributed_run.main(["--modes", "global_count:ten", "--out", str(tmp_path)])
    assert "global_count:ten" in capsys.readouterr().err
    assert not dist.is_initialized()


def test_torchrun_command_uses_this_interpreter_and_localhost():
    cmd = demo.torchrun_command(["global_count", "per_rank_mean:5"], "/out", port=12345)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--master_addr=127.0.0.1" in cmd and "--master_port=12345" in cmd and "--nproc_per_node=2" in cmd
    assert cmd[cmd.index("--modes") + 1] == "global_count,per_rank_mean:5"


# ---------------------------------------------------------------- transformers


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_transformers_trainer_recipe_equals_lossbook(hf_loss_utils, micro_batches):
    """The installed Trainer._get_num_items_in_batch and compute_loss, per simulated rank, against lossbook."""
    up = demo.transformers_data_parallel(micro_batches=micro_batches)
    input_ids, labels = demo.uneven_batch(0)
    ys = split_for_ranks(labels, 2, micro_batches)
    local = [int(sum(count_targets(y) for y in yr)) for yr in ys]
    assert up["local_counts"] == local
    assert up["num_items"] == [sum(local)] * 2
    model = demo.build_model()
    xs = split_for_ranks(input_ids, 2, micro_batches)
    for r in range(2):
        for j in range(micro_batches):
            ours = data_parallel_loss(model(xs[r][j]), ys[r][j], sum(local), 2)
            assert abs(float(ours.detach()) - up["rank_losses"][r][j]) < 1e-6
    assert demo.relative_error(up["grad"], demo.full_batch_run(1)["grad0"]) < 1e-5


def test_a_real_trainer_takes_the_count_only_from_a_model_that_accepts_loss_kwargs(hf_loss_utils):
    """Trainer.__init__ on the chapter's bare model and on PlainLM: no **kwargs, no loss_type, so no count; on
    UpstreamLM both, and _get_num_items_in_batch counts labels[..., 1:]."""
    input_ids, labels = demo.uneven_batch(0)
    batch = [{"input_ids": input_ids, "labels": labels}]
    for lm, expected in ((demo.build_model(), False), (demo.PlainLM(demo.build_model()), False),
                         (demo.UpstreamLM(demo.build_model()), True)):
        trainer = demo.real_trainer(lm)
        assert trainer.model_accepts_loss_kwargs is expected and trainer._loss_shifts_labels is expected
        count = trainer._get_num_items_in_batch(batch, torch.device("cpu"))
        assert (count is None) if not expected else int(count) == int(count_targets(labels)) == 131


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_a_real_trainer_on_a_model_without_loss_kwargs_trains_the_per_rank_mean(hf_loss_utils, micro_batches):
    up = demo.transformers_data_parallel(micro_batches=micro_batches, loss_kwargs=False)
    assert up["num_items"] == [None, None] and up["local_counts"] is None
    naive = demo.simulated_grad(bugs.per_rank_mean, micro_batches=micro_batches)
    assert demo.relative_error(up["grad"], naive) < 1e-5
    assert demo.relative_error(up["grad"], demo.full_batch_run(1)["grad0"]) > 0.1


def _local_count(logits, labels, ranks=2, micro_batches=1):
    """Exercise 3's objective: each rank's summed losses over its own count, DDP's mean over ranks."""
    zs, ys = split_for_ranks(logits, ranks, micro_batches), split_for_ranks(labels, ranks, micro_batches)
    per_rank = [sum(causal_lm_loss(z, y, num_items_in_batch=sum(count_targets(y_) for y_ in yr))
                    for z, y in zip(zr, yr)) for zr, yr in zip(zs, ys)]
    return sum(per_rank) / ranks


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_exercise_3s_objective_is_what_the_trainer_does_without_averaging_tokens(hf_loss_utils, micro_batches):
    """The check of exercise 3 accepts the objective the real Trainer trains with average_tokens_across_devices=False
    (local counts over the rank's micro-batches, no gather, no world-size factor)."""
    up = demo.transformers_data_parallel(micro_batches=micro_batches, average_tokens_across_devices=False)
    assert up["num_items"] == [19, 112]
    assert demo.relative_error(up["grad"], demo.simulated_grad(_local_count, micro_batches=micro_batches)) < 1e-5
    S, n = dd.shard_symbols(3, 2)
    value = {x: sp.Rational(i + 1, 3) for i, x in enumerate(x for row in S for x in row)}
    value |= {c: i + 2 for i, c in enumerate(c for row in n for c in row)}
    reference = sum(sum(Sr) / sum(nr) for Sr, nr in zip(S, n)) / 3  # the check's reference, written out
    losses = torch.tensor([[float(value[x]) for x in row] for row in S], dtype=torch.float64)
    counts = torch.tensor([[float(value[c]) for c in row] for row in n], dtype=torch.float64)
    assert abs(float(reference.subs(value)) - float((losses.sum(1) / counts.sum(1)).mean())) < 1e-12


def test_the_head_tail_check_agrees_with_torchs_load_balancer():
    from torch.distributed.tensor.experimental._context_parallel._load_balancer import _HeadTailLoadBalancer

    for seq, world in ((8, 2), (8, 4), (12, 3), (4, 1)):
        order = torch.cat([demo._head_tail_positions(seq, r, world) for r in range(world)])
        assert torch.equal(order, _HeadTailLoadBalancer(seq, world, "cpu")._generate_indices()[0].long())
        chunks = torch.arange(seq).view(2 * world, -1)
        assert torch.equal(order, torch.cat([torch.cat([chunks[r], chunks[2 * world - 1 - r]]) for r in range(world)]))


# ---------------------------------------------------------------- sympy


def test_sympy_global_count_with_world_size_factor_is_the_full_batch():
    for ranks, micro in [(2, 1), (3, 2)]:
        S, n = dd.shard_symbols(ranks, micro)
        full = dd.full_batch_mean(S, n)
        assert sp.simplify(dd.ddp_objective(dd.global_count_losses(S, n)) - full) == 0
        no_factor = dd.ddp_objective(dd.global_count_losses(S, n, world_size_factor=False))
        assert sp.simplify(no_factor - full / ranks) == 0
        ones = {x: 1 for row in S + n for x in row}  # every S_rj = n_rj = 1: the full batch's loss is 1
        assert full.subs(ones) == 1 and no_factor.subs(ones) == sp.Rational(1, ranks)  # the wrong variant misses


def test_sympy_per_rank_mean_is_right_only_for_equal_counts():
    S, n = dd.shard_symbols(2)
    gap = dd.ddp_objective(dd.per_rank_mean_losses(S, n)) - dd.full_batch_mean(S, n)
    point = {S[0][0]: 1, S[1][0]: 4, n[0][0]: 1, n[1][0]: 2}
    assert gap.subs(point) == sp.Rational(-1, 6)  # (1/1 + 4/2) / 2 - 5/3
    m = sp.Symbol("m", positive=True)
    assert sp.simplify(gap.subs({n[0][0]: m, n[1][0]: m})) == 0
    expected = -(n[0][0] - n[1][0]) * (S[0][0] * n[1][0] - S[1][0] * n[0][0]) / (
        2 * n[0][0] * n[1][0] * (n[0][0] + n[1][0]))
    assert sp.simplify(gap - expected) == 0


@pytest.mark.parametrize("recipe", RECIPES)
def test_token_weights_equal_sympy(recipe):
    counts = [[1, 2], [3, 4]]
    ell = dd.token_loss_symbols(counts)
    S = [[sum(x) for x in row] for row in ell]
    n = [[sp.Integer(c) for c in row] for row in counts]
    losses = {"global_count": dd.global_count_losses(S, n),
              "no_world_size_factor": dd.global_count_losses(S, n, world_size_factor=False),
              "per_rank_mean": dd.per_rank_mean_losses(S, n),
              "all_reduced_loss": [x / 2 for x in dd.per_rank_mean_losses(S, n)]}[recipe]
    objective = dd.ddp_objective(losses)
    ours = token_weights(counts, recipe)
    for r in range(2):
        for j in range(2):
            assert float(ours[r, j]) == pytest.approx(float(dd.token_weight(objective, ell, r, j)), abs=1e-15)


def test_sympy_context_parallel_shift_once_is_the_unsharded_loss():
    zs = dcl.position_logits(seq=4, vocab=2)
    tokens = [0, 1, 1, 0]
    full = dcl.mean_next_token_nll(zs, tokens)
    assert sp.simplify(dd.context_parallel_loss(zs, tokens, 2, shift="once") - full) == 0
    local = dd.context_parallel_loss(zs, tokens, 2, shift="local")
    scored = [t for t in range(4) if any(z in local.free_symbols for z in zs[t])]
    assert scored == [0, 2]  # the position before the cut (1) lost its target; the full loss scores 0, 1, 2
    assert [t for t in range(4) if any(z in full.free_symbols for z in zs[t])] == [0, 1, 2]
    with pytest.raises(ValueError, match="shift"):
        dd.context_parallel_loss(zs, tokens, 2, shift="twice")


# ---------------------------------------------------------------- helpers, errors, bug zoo


@pytest.mark.parametrize("ranks,micro", [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_simulated_data_parallel_loss_is_the_full_batch(ranks, micro):
    cases = [c for c in demo.distributed_cases(seed=1, ranks=4) if c["logits"].shape[0] % (ranks * micro) == 0]
    assert cases
    cases = [{"logits": c["logits"], "labels": c["labels"]} for c in cases]

    def simulated(logits, labels):
        return simulated_data_parallel_loss(logits, labels, ranks, micro)

    assert compare_losses(simulated, _full, cases, atol=1e-12).passed


@pytest.mark.parametrize("bug", [bugs.per_rank_mean, bugs.forgets_world_size_factor, bugs.all_reduces_the_loss,
                                 bugs.shifts_each_shard])
def test_every_bug_fails_the_check_lossbook_passes(bug):
    cases = demo.distributed_cases(seed=0)
    assert compare_losses(simulated_data_parallel_loss, _full, cases, atol=1e-10).passed
    assert not compare_losses(bug, _full, cases, atol=1e-6).passed


def test_per_rank_mean_is_right_when_counts_are_even():
    even = [c for c in demo.distributed_cases(seed=0) if (c["labels"] != -100).all()]
    assert even and compare_losses(bugs.per_rank_mean, _full, even, atol=1e-10).passed


def test_count_targets():
    labels = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    assert int(count_targets(labels)) == 3  # the shift: labels[..., 1:]
    assert int(count_targets(shift_labels=next_token_labels(labels))) == 3
    with pytest.raises(TypeError, match="exactly one"):
        count_targets(labels, shift_labels=labels)
    with pytest.raises(TypeError, match="exactly one"):
        count_targets()
    with pytest.raises(TypeError, match="labels"):
        count_targets(labels.float())


def test_count_targets_refuses_a_non_int_ignore_index():
    labels = torch.tensor([[1, 2, 3, -100]])
    for bad in (None, 1.5, True):
        with pytest.raises(TypeError, match=r"ignore_index must be an int .*got (NoneType|float|bool)"):
            count_targets(shift_labels=labels, ignore_index=bad)
        with pytest.raises(TypeError, match=r"ignore_index must be an int"):
            count_targets(labels, ignore_index=bad)


def test_global_num_items_without_a_group_and_its_errors():
    assert int(global_num_items(7)) == 7 and int(global_num_items(torch.tensor(5))) == 5
    with pytest.raises(ValueError, match=r"single count.*\[2\]"):
        global_num_items(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        global_num_items(torch.tensor(3.0))
    with pytest.raises(TypeError, match="bool"):
        global_num_items(True)
    for flag in (torch.tensor(True), torch.tensor([False])):  # a bool tensor is no more a count than True
        with pytest.raises(TypeError, match=r"local_count must be an integer count, got dtype torch.bool"):
            global_num_items(flag)
    with pytest.raises(ValueError, match=">= 0"):
        global_num_items(-1)


def test_data_parallel_loss_and_its_errors():
    logits, labels = torch.randn(2, 5, 4, dtype=torch.float64), torch.randint(0, 4, (2, 5))
    ours = data_parallel_loss(logits, labels, 20, 4)
    assert torch.allclose(ours, 4 * causal_lm_loss(logits, labels, num_items_in_batch=20))
    with pytest.raises(ValueError, match="world_size"):
        data_parallel_loss(logits, labels, 20, 0)
    with pytest.raises(TypeError, match="num_items_in_batch"):
        data_parallel_loss(logits, labels, None, 2)


def test_data_parallel_loss_takes_exactly_one_of_labels_and_shift_labels():
    """As count_targets: with both, causal_lm_loss would silently score shift_labels and drop labels."""
    logits, labels = torch.randn(2, 5, 4, dtype=torch.float64), torch.randint(0, 4, (2, 5))
    shifted = next_token_labels(labels)
    torch.testing.assert_close(data_parallel_loss(logits, None, 8, 2, shift_labels=shifted),
                               data_parallel_loss(logits, labels, 8, 2))
    with pytest.raises(TypeError, match=r"data_parallel_loss needs exactly one of labels .* got both"):
        data_parallel_loss(logits, labels, 8, 2, shift_labels=shifted)
    with pytest.raises(TypeError, match=r"data_parallel_loss needs exactly one of labels .* got neither"):
        data_parallel_loss(logits, None, 8, 2)
    with pytest.raises(TypeError, match=r"count_targets needs exactly one of labels .* got both"):
        count_targets(labels, shift_labels=shifted)


def test_split_for_ranks_and_its_errors():
    x = torch.arange(8)
    assert [[t.tolist() for t in r] for r in split_for_ranks(x, 2, 2)] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    with pytest.raises(ValueError, match=r"\[6\].*divisible by ranks \* micro_batches = 2 \* 2"):
        split_for_ranks(torch.arange(6), 2, 2)
    with pytest.raises(ValueError, match="ranks"):
        split_for_ranks(x, 0)


def test_context_parallel_shard():
    labels = torch.tensor([[1, 2, 3, 4, 5, 6]])
    positions, piece = context_parallel_shard(labels, 1, 2)
    assert positions == slice(3, 6) and piece.tolist() == [[5, 6, -100]]
    assert context_parallel_shard(labels, 0, 2)[1].tolist() == [[2, 3, 4]]  # keeps the target across the cut
    with pytest.raises(ValueError, match=r"seq \(6.*\[1, 6\].*world_size \(4\)"):
        context_parallel_shard(labels, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        context_parallel_shard(labels, 2, 2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 0.5"):
        context_parallel_shard(labels, 0.5, 2)


def test_token_weights_errors_and_empty_shards():
    w = token_weights([[0, 2], [2, 4]], "per_rank_mean")
    assert w[0, 0] == 0 and torch.isfinite(w).all()
    logits = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (4, 5))
    labels[:2] = -100  # rank 0 of 2 holds no target: the per-rank mean logs NaN, its gradient stays finite
    loss = bugs.per_rank_mean(logits, labels)
    loss.backward()
    assert torch.isnan(loss) and torch.isfinite(logits.grad).all()
    assert float((token_weights([[3], [9]]) * torch.tensor([[3], [9]])).sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="recipe"):
        token_weights([[1]], "mean")
    with pytest.raises(ValueError, match=r"\[ranks, micro_batches\]"):
        token_weights([1, 2])


def test_token_weights_refuses_ragged_and_bool_counts():
    with pytest.raises(ValueError, match=r"counts must be a \[ranks, micro_batches\] table .*got \[\[1, 2\], \[3\]\]"):
        token_weights([[1, 2], [3]])
    with pytest.raises(ValueError, match=r"counts must be integer counts .*dtype torch.bool"):
        token_weights(torch.tensor([[True, False], [True, True]]))


def test_token_weights_widget_shows_lossbook_numbers():
    from lossbook.widgets.distributed import TokenWeights

    w = TokenWeights(ranks=2, rank0_tokens=20, other_tokens=110, recipe="per_rank_mean")
    assert w.counts.tolist() == [[20], [110]]
    assert torch.equal(w.weights, token_weights(w.counts, "per_rank_mean"))
    assert "not the full batch" in w.html.value
    w.recipe.value = "global_count"
    assert w.total == pytest.approx(1.0) and "= the full batch" in w.html.value
    w.recipe.value = "no_world_size_factor"
    assert w.total == pytest.approx(0.5)


def test_bigram_baseline_picks_k_on_the_training_text():
    base = demo.bigram_nll()
    assert base["k"] == min(base["validation"], key=base["validation"].get)
    data = demo._data()
    from lossbook.demos.causal_lm import unigram_nll

    assert 0 < base["heldout"] < unigram_nll(data.train_ids, data.heldout_ids, data.tokenizer.vocab_size)
