"""Wrong answers to chapter 01's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("diag(p), the near miss", """
z3 = d.logit_symbols(3)
my_hessian = sp.diag(*d.softmax(z3))
"""),
        ("-p p^T without the diagonal", """
z3 = d.logit_symbols(3)
p3 = sp.Matrix(d.softmax(z3))
my_hessian = -p3 * p3.T
"""),
        ("the gradient, not the Hessian", """
z3 = d.logit_symbols(3)
my_hessian = sp.Matrix([sp.diff(d.cross_entropy(z3, 1), zi) for zi in z3])
"""),
        ("a constant matrix", """
my_hessian = sp.eye(3) / 3
"""),
    ],
    "ex2": [
        ("the reference itself", "my_smoothed_cross_entropy = fixed_cross_entropy"),
        ("no smoothing at all", """
def my_smoothed_cross_entropy(source, target, ignore_index=-100, label_smoothing=0.0):
    keep = target != ignore_index
    log_p = torch.log_softmax(source[keep], dim=-1)
    return -log_p.gather(-1, target[keep].unsqueeze(-1)).sum() / keep.sum()
"""),
        ("the smoothing term detached", """
def my_smoothed_cross_entropy(source, target, ignore_index=-100, label_smoothing=0.0):
    keep = target != ignore_index
    log_p = torch.log_softmax(source[keep], dim=-1)
    nll = -log_p.gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
    uniform = -log_p.detach().mean(-1)
    eps = label_smoothing
    return ((1 - eps) * nll + eps * uniform).sum() / keep.sum()
"""),
        ("divided by every item, ignored ones too", """
def my_smoothed_cross_entropy(source, target, ignore_index=-100, label_smoothing=0.0):
    keep = target != ignore_index
    log_p = torch.log_softmax(source[keep], dim=-1)
    nll = -log_p.gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
    eps = label_smoothing
    return ((1 - eps) * nll - eps * log_p.mean(-1)).sum() / len(target)
"""),
        ("the whole weight eps on the uniform part, none taken from the target", """
def my_smoothed_cross_entropy(source, target, ignore_index=-100, label_smoothing=0.0):
    keep = target != ignore_index
    log_p = torch.log_softmax(source[keep], dim=-1)
    nll = -log_p.gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
    return (nll - label_smoothing * log_p.mean(-1)).sum() / keep.sum()
"""),
    ],
    "ex3": [
        ("the mean of means: each micro-batch's mean divided by their number", """
def my_accumulate(model, micro_batches):
    for inputs, labels in micro_batches:
        logits = model(inputs)
        loss = fixed_cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        (loss / len(micro_batches)).backward()
"""),
        ("each micro-batch's own mean, summed", """
def my_accumulate(model, micro_batches):
    for inputs, labels in micro_batches:
        logits = model(inputs)
        fixed_cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1)).backward()
"""),
        ("the padding counted in the denominator", """
def my_accumulate(model, micro_batches):
    total = sum(labels.numel() for _, labels in micro_batches)
    for inputs, labels in micro_batches:
        logits = model(inputs)
        loss = fixed_cross_entropy(
            logits.view(-1, logits.shape[-1]), labels.view(-1), num_items_in_batch=total
        )
        loss.backward()
"""),
    ],
}
