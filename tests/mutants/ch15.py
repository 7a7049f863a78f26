"""Wrong answers to chapter 15's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("the mixture's weights swapped: m = beta p_s + (1 - beta) p_t", """
def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits / temperature, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    if beta == 0:
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif beta == 1:
        div = (log_s.exp() * (log_s - log_t)).sum(-1)
    else:
        log_m = torch.logaddexp(log_s + torch.log(torch.tensor(beta)), log_t + torch.log1p(torch.tensor(-beta)))
        div = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)
    kept = labels != -100
    return div[kept].sum() / kept.sum().clamp(min=1)
"""),
        ("forward and reverse swapped at the two ends", """
def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits / temperature, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    if beta == 1:
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif beta == 0:
        div = (log_s.exp() * (log_s - log_t)).sum(-1)
    else:
        log_m = torch.logaddexp(log_t + torch.log(torch.tensor(beta)), log_s + torch.log1p(torch.tensor(-beta)))
        div = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)
    kept = labels != -100
    return div[kept].sum() / kept.sum().clamp(min=1)
"""),
        ("the padding counted: the mean over every position", """
def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits / temperature, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    if beta == 0:
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif beta == 1:
        div = (log_s.exp() * (log_s - log_t)).sum(-1)
    else:
        log_m = torch.logaddexp(log_t + torch.log(torch.tensor(beta)), log_s + torch.log1p(torch.tensor(-beta)))
        div = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)
    return div.mean()
"""),
        ("the temperature on the teacher only", """
def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    if beta == 0:
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif beta == 1:
        div = (log_s.exp() * (log_s - log_t)).sum(-1)
    else:
        log_m = torch.logaddexp(log_t + torch.log(torch.tensor(beta)), log_s + torch.log1p(torch.tensor(-beta)))
        div = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)
    kept = labels != -100
    return div[kept].sum() / kept.sum().clamp(min=1)
"""),
        ("a mean over the vocabulary instead of a sum", """
def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits / temperature, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    if beta == 0:
        div = (log_t.exp() * (log_t - log_s)).mean(-1)
    elif beta == 1:
        div = (log_s.exp() * (log_s - log_t)).mean(-1)
    else:
        log_m = torch.logaddexp(log_t + torch.log(torch.tensor(beta)), log_s + torch.log1p(torch.tensor(-beta)))
        div = beta * (log_t.exp() * (log_t - log_m)).mean(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).mean(-1)
    kept = labels != -100
    return div[kept].sum() / kept.sum().clamp(min=1)
"""),
        ("a wrapper around lossbook.distillation's per-entry divergences", """
from lossbook.distillation import LOSS_FUNCTIONS, divergence_kind

def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits / temperature, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    div = LOSS_FUNCTIONS[divergence_kind(beta)](log_s, log_t, beta).sum(-1)
    kept = labels != -100
    return div[kept].sum() / kept.sum().clamp(min=1)
"""),
        ("the JSD formula at the ends too: zero at beta 0 and 1", """
def my_distillation_loss(student_logits, teacher_logits, labels, beta, temperature):
    log_s = torch.log_softmax(student_logits / temperature, -1)
    log_t = torch.log_softmax(teacher_logits / temperature, -1)
    log_m = (beta * log_t.exp() + (1 - beta) * log_s.exp()).log()
    div = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)
    kept = labels != -100
    return div[kept].sum() / kept.sum().clamp(min=1)
"""),
    ],
    "ex2": [
        ("the T^2 factor missing", """
def my_hinton_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = distillation_loss(student_logits, teacher_logits.detach(), labels, beta=0.0, temperature=temperature)
    hard = torch.nn.functional.cross_entropy(student_logits.flatten(0, -2), labels.flatten(), ignore_index=-100)
    return alpha * soft + (1 - alpha) * hard
"""),
        ("T instead of T^2", """
def my_hinton_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = distillation_loss(student_logits, teacher_logits.detach(), labels, beta=0.0, temperature=temperature)
    hard = torch.nn.functional.cross_entropy(student_logits.flatten(0, -2), labels.flatten(), ignore_index=-100)
    return alpha * temperature * soft + (1 - alpha) * hard
"""),
        ("alpha on the hard term", """
def my_hinton_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = distillation_loss(student_logits, teacher_logits.detach(), labels, beta=0.0, temperature=temperature)
    hard = torch.nn.functional.cross_entropy(student_logits.flatten(0, -2), labels.flatten(), ignore_index=-100)
    return (1 - alpha) * temperature**2 * soft + alpha * hard
"""),
        ("the teacher not detached: the gradient reaches it", """
def my_hinton_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = distillation_loss(student_logits, teacher_logits, labels, beta=0.0, temperature=temperature)
    hard = torch.nn.functional.cross_entropy(student_logits.flatten(0, -2), labels.flatten(), ignore_index=-100)
    return alpha * temperature**2 * soft + (1 - alpha) * hard
"""),
        ("the hard loss at temperature T too", """
def my_hinton_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = distillation_loss(student_logits, teacher_logits.detach(), labels, beta=0.0, temperature=temperature)
    hard = torch.nn.functional.cross_entropy((student_logits / temperature).flatten(0, -2), labels.flatten(),
                                             ignore_index=-100)
    return alpha * temperature**2 * soft + (1 - alpha) * hard
"""),
        ("the soft term detached: no gradient from the teacher's distribution", """
def my_hinton_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = distillation_loss(student_logits.detach(), teacher_logits.detach(), labels, beta=0.0,
                             temperature=temperature)
    hard = torch.nn.functional.cross_entropy(student_logits.flatten(0, -2), labels.flatten(), ignore_index=-100)
    return alpha * temperature**2 * soft + (1 - alpha) * hard
"""),
    ],
    "ex3": [
        ("the forward KL's limit (section 1's): beta (1 - beta) missing", """
answer_3 = ((zs[0] - zt[0]) - sum(a - b for a, b in zip(zs, zt)) / 3) / 3
"""),
        ("beta instead of beta (1 - beta)", """
answer_3 = ((zs[0] - zt[0]) - sum(a - b for a, b in zip(zs, zt)) / 3) / 6
"""),
        ("the logit difference not centred", """
answer_3 = (zs[0] - zt[0]) / 12
"""),
        ("centred but without the 1/K", """
answer_3 = ((zs[0] - zt[0]) - sum(a - b for a, b in zip(zs, zt)) / 3) / 4
"""),
        ("the sign flipped", """
answer_3 = ((zt[0] - zs[0]) - sum(b - a for a, b in zip(zs, zt)) / 3) / 12
"""),
        ("the limit of the gradient without T^2: zero", """
answer_3 = sp.Integer(0)
"""),
    ],
}
