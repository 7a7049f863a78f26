"""Wrong answers to chapter 00's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("no shift: exp overflows in float16", """
def my_logsumexp(z):
    return torch.log(torch.exp(z).sum(-1))
"""),
        ("shifted, but the max is not added back", """
def my_logsumexp(z):
    m = z.amax(-1, keepdim=True)
    return torch.log(torch.exp(z - m).sum(-1))
"""),
        ("a mean instead of a sum", """
def my_logsumexp(z):
    m = z.amax(-1, keepdim=True)
    return (m + torch.log(torch.exp(z - m).mean(-1, keepdim=True))).squeeze(-1)
"""),
        ("the max, not the log-sum-exp", """
def my_logsumexp(z):
    return z.amax(-1)
"""),
    ],
    "ex2": [
        ("log of softmax: -inf where softmax underflows", """
def my_log_softmax(z):
    return torch.log(torch.softmax(z, -1))
"""),
        ("minus the max instead of the log-sum-exp", """
def my_log_softmax(z):
    return z - z.amax(-1, keepdim=True)
"""),
        ("the log-sum-exp not broadcast over the classes", """
def my_log_softmax(z):
    return z - my_logsumexp(z)
"""),
    ],
}
