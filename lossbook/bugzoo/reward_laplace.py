"""Chapter 08's bug zoo: plausible, wrong Bayesian reward models, each failing ``check_reward_laplace``.

Each exhibit is ``RewardLaplace`` with one thing done the tempting way; ``check_reward_laplace(cls)`` runs one
scenario on it (a reward model with a bias in its head, fitted, trained further, fitted again) and compares the
predictive means, variances and log marginal likelihood with a reference built independently by autograd
(``reference_laplace``). lossbook passes; every exhibit fails. Never use them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..reward_laplace import RewardLaplace

__all__ = [
    "BiasInPosterior",
    "StaleModelCopy",
    "ProbitAsReward",
    "Float32Determinant",
    "reference_laplace",
    "check_reward_laplace",
    "RewardLaplaceCheck",
]


class BiasInPosterior(RewardLaplace):
    """BUG: the head's bias put in the posterior. Bradley-Terry sees only r_1 - r_0, so the bias gets zero
    curvature and keeps its prior variance 1/lambda: every prediction's variance is inflated by that constant,
    which says nothing about the input (laplace-torch does this; ``RewardLaplace(bias="include")`` too)."""

    def __init__(self, model, **kwargs):
        super().__init__(model, bias="include", **kwargs)


class StaleModelCopy(RewardLaplace):
    """BUG: a copy of the model taken once, at construction (laplace-torch's ``LLLaplace``
    deep-copies the model in ``__init__``). Train the model further and fit again: the curvature,
    theta_MAP and the predictive means all still belong to the old copy."""

    def __init__(self, model, **kwargs):
        super().__init__(copy.deepcopy(model), **kwargs)


class ProbitAsReward(RewardLaplace):
    """BUG: the classification-style predictive used as the reward: the probit approximation
    sigmoid(mean / sqrt(1 + pi var / 8)) (laplace-torch's default ``link_approx`` for classification) returned
    in place of the reward's mean. It is a probability in (0, 1), not a reward, and squashes the ranking."""

    def __call__(self, x):
        mean, var = super().__call__(x)
        return torch.sigmoid(mean / torch.sqrt(1 + math.pi * var / 8)), var


class Float32Determinant(RewardLaplace):
    """BUG: the log-determinant as ``log(det(H + lambda I))`` in float32. The determinant is a
    product of ``hidden`` eigenvalues, each at least lambda: in ``check_reward_laplace``'s scenario
    (96 features, lambda 2) it is about 1e48 (log det 110.3, computed in float64), past float32's
    largest number 3.4e38, so ``det`` returns inf and the log marginal likelihood -inf (float64's
    1.8e308 goes the same way with a few hundred features). lossbook takes 2 sum log diag(cholesky)
    in float64."""

    def log_marginal_likelihood(self, prior_precision=None):
        self._check_fitted()
        lam = self.prior_precision if prior_precision is None else prior_precision
        lam = self._as_precision(lam).float()
        H, theta = self.H.float(), self.theta_map.float()
        log_det = torch.linalg.det(H + lam * torch.eye(H.shape[0])).log()
        return -self.loss.float() - 0.5 * (log_det - H.shape[0] * lam.log() + lam * (theta @ theta))


# ---------------------------------------------------------------------------------------------- the check
def reference_laplace(model, x_pairs, y, x, prior_precision: float):
    """An independent reference by autograd (torch.func), the head's bias held fixed:
    H = the Hessian of the summed 2-way cross-entropy in the head's weight, the log marginal likelihood from it,
    and mean, var = model(x), J Sigma J^T with J = d model(x) / d weight. Returns ``(mean, var, lml)``, float64."""
    model = copy.deepcopy(model).double().eval()
    names = [n for n, p in model.named_parameters()]
    weight_name = [n for n in names if n.endswith("weight")][-1]  # the head's weight: the last Linear's
    params = {n: p.detach() for n, p in model.named_parameters()}
    w0 = params[weight_name]

    def call(w, inputs):
        return torch.func.functional_call(model, {**params, weight_name: w}, (inputs,))

    def loss(w):
        return F.cross_entropy(call(w, x_pairs.double()), y, reduction="sum")

    P = w0.numel()
    H = torch.func.hessian(loss)(w0).reshape(P, P)
    lam = torch.tensor(float(prior_precision), dtype=torch.float64)
    post = H + lam * torch.eye(P, dtype=torch.float64)
    theta = w0.reshape(-1)
    lml = -loss(w0) - 0.5 * (torch.logdet(post) - P * lam.log() + lam * theta @ theta)
    J = torch.func.jacrev(lambda w: call(w, x.double()).reshape(-1))(w0).reshape(-1, P)  # [batch, P]
    var = torch.einsum("np,pq,nq->n", J, torch.linalg.inv(post), J)
    return call(w0, x.double()).reshape(-1).detach(), var.detach(), lml.detach()


@dataclass
class RewardLaplaceCheck:
    name: str
    mean_error: float  # max |error| of the predictive means, relative to the largest |mean|
    var_error: float  # max |error| of the predictive variances, relative to the largest variance
    lml_error: float  # relative error of the log marginal likelihood
    rtol: float

    @property
    def passed(self) -> bool:
        return max(self.mean_error, self.var_error, self.lml_error) <= self.rtol

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return (
            f"{mark}  {self.name:<20} mean {self._agrees(self.mean_error)}, variance {self._agrees(self.var_error)}, "
            f"log marginal likelihood {self._agrees(self.lml_error)} (rtol {self.rtol:g})"
        )

    def _agrees(self, error: float) -> str:
        # a verdict, not the error: a bug's relative error depends on the trained model, so its digits move with
        # the CPU's kernels (the numbers stay on the fields)
        return "agrees" if error <= self.rtol else ("not finite" if not math.isfinite(error) else "differs")

    __repr__ = __str__


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    if a.shape != b.shape or not bool(torch.isfinite(a).all()):
        return math.inf
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check_reward_laplace(cls=RewardLaplace, *, rtol: float = 1e-6, seed: int = 0) -> RewardLaplaceCheck:
    """The scenario: a float64 reward model with ``hidden`` 96 and a bias in its head, trained on 400 pairs;
    ``la = cls(model)``; ``la.fit``; the model is trained 50 steps more; ``la.fit`` again; lambda = 2; predict
    on 40 inputs near and far. Compared with ``reference_laplace`` on the model as it is now."""
    from ..demos.reward_laplace import PairRewardModel, make_preferences, points_at_radius

    g = torch.Generator().manual_seed(seed)
    x_pairs, y = make_preferences(400, beta=2.0, generator=g)
    x = torch.cat([torch.randn(20, 2, generator=g), points_at_radius(20, 6.0, generator=g)])  # [40, 2]
    torch.manual_seed(seed)
    model = PairRewardModel(hidden=96, bias=True).double()
    x_pairs, x = x_pairs.double(), x.double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def steps(n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x_pairs), y).backward()
            opt.step()

    steps(100)
    la = cls(model)
    la.fit(x_pairs, y)
    steps(50)  # the model moves on ...
    la.fit(x_pairs, y)  # ... and the approximation is fitted again
    la.prior_precision = 2.0
    mean, var = la(x)
    ref_mean, ref_var, ref_lml = reference_laplace(model, x_pairs, y, x, 2.0)
    return RewardLaplaceCheck(
        getattr(cls, "__name__", "candidate"),
        _rel(mean, ref_mean),
        _rel(var, ref_var),
        _rel(la.log_marginal_likelihood(), ref_lml),
        rtol,
    )
