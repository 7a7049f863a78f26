"""Wrong answers to chapter 14's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("summed log-probs: SimPO without the length normalisation", """
def my_simpo_from_logits(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                         beta, simpo_gamma):
    u_w = lossbook.sequence_logps(chosen_logits, chosen_ids, chosen_mask)
    u_l = lossbook.sequence_logps(rejected_logits, rejected_ids, rejected_mask)
    return cpo_loss(u_w, u_l, beta=beta, loss_type="simpo", simpo_gamma=simpo_gamma)[0]
"""),
        ("the margin added with the wrong sign", """
def my_simpo_from_logits(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                         beta, simpo_gamma):
    u_w = lossbook.sequence_logps(chosen_logits, chosen_ids, chosen_mask, average=True)
    u_l = lossbook.sequence_logps(rejected_logits, rejected_ids, rejected_mask, average=True)
    return -torch.nn.functional.logsigmoid(beta * (u_w - u_l) + simpo_gamma)
"""),
        ("the margin not divided by beta (TRL's gamma / beta written gamma)", """
def my_simpo_from_logits(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                         beta, simpo_gamma):
    u_w = lossbook.sequence_logps(chosen_logits, chosen_ids, chosen_mask, average=True)
    u_l = lossbook.sequence_logps(rejected_logits, rejected_ids, rejected_mask, average=True)
    return -torch.nn.functional.logsigmoid(beta * (u_w - u_l - simpo_gamma))
"""),
        ("the mask not shifted with the targets", """
def my_simpo_from_logits(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                         beta, simpo_gamma):
    def avg(logits, ids, mask):
        lp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        m = mask[:, :-1].float()
        return (lp * m).sum(-1) / m.sum(-1).clamp(min=1)
    u_w, u_l = avg(chosen_logits, chosen_ids, chosen_mask), avg(rejected_logits, rejected_ids, rejected_mask)
    return cpo_loss(u_w, u_l, beta=beta, loss_type="simpo", simpo_gamma=simpo_gamma)[0]
"""),
        ("the rejected completion's average detached", """
def my_simpo_from_logits(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                         beta, simpo_gamma):
    u_w = lossbook.sequence_logps(chosen_logits, chosen_ids, chosen_mask, average=True)
    u_l = lossbook.sequence_logps(rejected_logits, rejected_ids, rejected_mask, average=True).detach()
    return cpo_loss(u_w, u_l, beta=beta, loss_type="simpo", simpo_gamma=simpo_gamma)[0]
"""),
        ("the reference pipeline called", """
def my_simpo_from_logits(**case):
    return demo.simpo_from_logits(**case)
"""),
    ],
    "ex2": [
        ("the undesirable loss written like the desirable one (one minus the sigmoid)", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = 1 - torch.sigmoid(beta * (policy_chosen_logps - ref_chosen_logps))
    rejected = 1 - torch.sigmoid(beta * (policy_rejected_logps - ref_rejected_logps))
    return torch.cat([chosen, rejected])
"""),
        ("undesirable first, then desirable (TRL's order reversed)", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = 1 - torch.sigmoid(beta * (policy_chosen_logps - ref_chosen_logps))
    rejected = torch.sigmoid(beta * (policy_rejected_logps - ref_rejected_logps))
    return torch.cat([rejected, chosen])
"""),
        ("the reference left out: the log-probs, not the log-ratios", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = 1 - torch.sigmoid(beta * policy_chosen_logps)
    rejected = torch.sigmoid(beta * policy_rejected_logps)
    return torch.cat([chosen, rejected])
"""),
        ("the mean of each side, not the per-example losses", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = 1 - torch.sigmoid(beta * (policy_chosen_logps - ref_chosen_logps))
    rejected = torch.sigmoid(beta * (policy_rejected_logps - ref_rejected_logps))
    return torch.stack([chosen.mean(), rejected.mean()])
"""),
        ("kto_loss called with the apo_zero_unpaired type (passed the check before review)", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return kto_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                    torch.zeros(()), beta=beta, loss_type="apo_zero_unpaired")[0]
"""),
        ("kto_loss's kto type at z0 = 0, the same values (passed the check before review)", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return kto_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                    torch.zeros(()), beta=beta)[0]
"""),
        ("the rendered kto branch called with kl = 0 (passed the check before review)", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return torch.cat(lossbook.kto.kto_branch_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                                  ref_rejected_logps, 0.0, beta))
"""),
        ("lossbook's apo_zero_unpaired branch called (passed the check before review)", """
def my_apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return torch.cat(lossbook.kto.LOSS_FUNCTIONS["apo_zero_unpaired"](
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, None, beta))
"""),
    ],
    "ex3": [
        ("the start's answer: d forgotten", "answer_3 = w_U * n_U / n_D"),
        ("the sigmoid's slope without its 4 (sigma(1 - sigma) is 1/4 at 0)",
         "answer_3 = rf.sigmoid(beta * d) * (1 - rf.sigmoid(beta * d)) * w_U * n_U / n_D"),
        ("the sigmoid for its slope", "answer_3 = 4 * rf.sigmoid(beta * d) * w_U * n_U / n_D"),
        ("beta forgotten in the sigmoid",
         "answer_3 = 4 * rf.sigmoid(d) * (1 - rf.sigmoid(d)) * w_U * n_U / n_D"),
        ("the counts inverted", "answer_3 = 4 * rf.sigmoid(beta * d) * (1 - rf.sigmoid(beta * d)) * w_U * n_D / n_U"),
        ("a constant: the value at one point (passed the old check)", "answer_3 = sp.Rational(7, 6)"),
        ("the upper end of the paper's range, 4/3 of the balance",
         "answer_3 = sp.Rational(16, 3) * rf.sigmoid(beta * d) * (1 - rf.sigmoid(beta * d)) * w_U * n_U / n_D"),
    ],
}
