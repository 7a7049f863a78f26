"""Wrong answers to chapter 13's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

# Exercise 2's wrong answers share the accumulation loop; they differ in the loss type, the count and the tail.
_ACCUMULATE = """
def my_accumulated_dapo(per_token_logps, old_per_token_logps, advantages, completion_mask, micro_batches):
    size = per_token_logps.shape[0] // micro_batches
    total = 0.0
    for k in range(micro_batches):
        s = slice(k * size, (k + 1) * size)
        total = total + policy_gradient_loss(per_token_logps[s], old_per_token_logps[s].detach(),
                                             advantages[s].detach(), completion_mask[s],
                                             loss_type="{loss_type}"{count})
    return total{tail}
"""

MUTANTS = {
    "ex1": [
        ("the reference itself", "my_clipped_surrogate = lossbook.policy_gradient.clipped_surrogate"),
        ("the ratio detached in the unclipped branch", """
def my_clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high):
    clipped = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    return -torch.min(coef_1.detach() * advantages, clipped * advantages)
"""),
        ("the objective, not the loss: the sign flipped", """
def my_clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high):
    clipped = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    return torch.min(coef_1 * advantages, clipped * advantages)
"""),
        ("the max instead of the min: the pessimistic bound lost", """
def my_clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high):
    clipped = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    return -torch.max(coef_1 * advantages, clipped * advantages)
"""),
        ("a symmetric clip: epsilon_high ignored", """
def my_clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high):
    clipped = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_low)
    return -torch.min(coef_1 * advantages, clipped * advantages)
"""),
        ("the advantage clipped instead of the ratio", """
def my_clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high):
    return -torch.min(coef_1 * advantages, coef_1 * torch.clamp(advantages, 1 - epsilon_low, 1 + epsilon_high))
"""),
    ],
    "ex2": [
        ("each micro-batch over its own token count (bnpo's local count)",
         _ACCUMULATE.format(loss_type="dapo", count="", tail="")),
        ("the mean of the micro-batch losses (divided by the step count as well)",
         _ACCUMULATE.format(loss_type="dapo", count=", num_items_in_batch=completion_mask.sum()",
                            tail=" / micro_batches")),
        ("grpo's per-sequence mean in each micro-batch",
         _ACCUMULATE.format(loss_type="grpo", count="", tail=" / micro_batches")),
        ("the padding counted: the global count is the number of positions",
         _ACCUMULATE.format(loss_type="dapo", count=", num_items_in_batch=completion_mask.numel()", tail="")),
        ("the exercise's reference called", """
def my_accumulated_dapo(per_token_logps, old_per_token_logps, advantages, completion_mask, micro_batches):
    return demo.accumulated_dapo(per_token_logps, old_per_token_logps, advantages, completion_mask, micro_batches)
"""),
    ],
    "ex3": [
        ("k1: the plain log-ratio (unbiased, but negative on some tokens)", """
def my_k3(per_token_logps, ref_per_token_logps):
    return per_token_logps - ref_per_token_logps
"""),
        ("the log-ratio's sign flipped inside k3", """
def my_k3(per_token_logps, ref_per_token_logps):
    x = per_token_logps - ref_per_token_logps
    return torch.exp(x) - x - 1
"""),
        ("k2: half the squared log-ratio", """
def my_k3(per_token_logps, ref_per_token_logps):
    return 0.5 * (ref_per_token_logps - per_token_logps) ** 2
"""),
        ("the reference detached: right values, no gradient to the reference argument", """
def my_k3(per_token_logps, ref_per_token_logps):
    x = ref_per_token_logps.detach() - per_token_logps
    return torch.exp(x) - x - 1
"""),
    ],
}
