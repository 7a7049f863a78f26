"""Chapter 08's demo material: a small pairwise reward model, preference data from a known true reward, and the
uncertainty-penalised best-of-n experiment. Nothing is downloaded: the data are generated here.

The true reward ``true_reward(x) = x_0 - 1/2 relu(|x| - radius)^2`` is linear (higher x_0 is better) inside the
region the preferences come from (inputs ~ N(0, I)), and falls off quadratically beyond ``radius``. A reward model
fitted on the in-distribution pairs learns "higher x_0 is better" and, with ReLU features, extrapolates it far
away, where the true reward is low: the setting of reward hacking, which the posterior variance can flag.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..train import train

__all__ = [
    "PairRewardModel",
    "true_reward",
    "make_preferences",
    "pair_accuracy",
    "train_reward_model",
    "points_at_radius",
    "best_of_n",
]


class PairRewardModel(nn.Module):
    """Seed 003's ``SimpleRewardModel``, generalised: MLP features ``phi(x)`` then ``nn.Linear(hidden, 1)``.

    ``[pairs, 2, dim] -> [pairs, 2]`` (the two items' rewards, the logits of a 2-way softmax) while training;
    ``[batch, dim] -> [batch, 1]`` when scoring single items, as laplace-torch's ``reward_modeling`` expects.
    ``activation``: "relu" (features grow with |x|) or "tanh" (features saturate).
    """

    def __init__(self, dim: int = 2, hidden: int = 64, *, activation: str = "relu", bias: bool = False):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.net = nn.Sequential(nn.Linear(dim, hidden), act(), nn.Linear(hidden, hidden), act())
        self.head = nn.Linear(hidden, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            pairs, two, dim = x.shape
            return self.head(self.net(x.reshape(pairs * two, dim))).reshape(pairs, two)  # [pairs, 2]
        return self.head(self.net(x))  # [batch, 1]


def true_reward(x: torch.Tensor, radius: float = 2.5) -> torch.Tensor:
    """``x_0 - 1/2 relu(|x| - radius)^2``, ``[..., dim] -> [...]``: linear where the data are, bad far away."""
    return x[..., 0] - 0.5 * F.relu(x.norm(dim=-1) - radius) ** 2


def make_preferences(n: int, dim: int = 2, *, beta: float = 3.0, generator: torch.Generator | None = None):
    """``n`` pairs of N(0, I) inputs ``[n, 2, dim]`` and labels ``[n]``: item 1 preferred with probability
    sigmoid(beta (r*(x_1) - r*(x_0))), the Bradley-Terry model of the true reward r*."""
    x = torch.randn(n, 2, dim, generator=generator)  # [n, 2, dim]
    r = true_reward(x)  # [n, 2]
    p1 = torch.sigmoid(beta * (r[:, 1] - r[:, 0]))  # [n]
    y = (torch.rand(n, generator=generator) < p1).long()  # [n]
    return x, y


def pair_accuracy(model: nn.Module, x_pairs: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of pairs where the model's higher reward is the preferred item."""
    with torch.no_grad():
        return (model(x_pairs).argmax(-1) == y).double().mean().item()


def train_reward_model(
    model: nn.Module,
    x_pairs: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    batch: int = 256,
    seed: int = 0,
    progress: bool = True,
    desc: str = "reward model",
):
    """Train with the 2-way softmax cross-entropy over (r_0, r_1) (seed 003; chapter 07's Bradley-Terry loss in
    another form) on mini-batches, AdamW, on the CPU. Returns lossbook.train's History."""
    g = torch.Generator().manual_seed(seed)

    def get_batch(step):
        idx = torch.randint(len(y), (batch,), generator=g)
        return x_pairs[idx], y[idx]

    return train(
        model,
        lambda m, xb, yb: F.cross_entropy(m(xb), yb),
        get_batch,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        device=torch.device("cpu"),
        progress=progress,
        desc=desc,
    )


def points_at_radius(n: int, radius, dim: int = 2, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points ``[n, dim]`` in uniformly random directions at distance ``radius`` (a float or ``[n]``)."""
    u = torch.randn(n, dim, generator=generator)
    u = u / u.norm(dim=-1, keepdim=True)
    return u * torch.as_tensor(radius, dtype=u.dtype).reshape(-1, 1)


def best_of_n(
    la,
    *,
    trials: int = 300,
    n: int = 16,
    n_far: int = 4,
    far: tuple[float, float] = (4.0, 7.0),
    ks=(0.0, 1.0),
    dim: int = 2,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Best-of-n with some candidates off-distribution. Each trial draws ``n - n_far`` candidates from N(0, I) and
    ``n_far`` at a distance in ``far``; picks the one with the highest ``mean - k * std`` of the Laplace predictive
    reward ``la`` (k = 0: by the mean alone); records the true reward of the pick. Returns the average true reward
    for each k (``"k=..."``), for a random pick and for the best candidate (the oracle), and the fraction of
    picks that were off-distribution (``"far k=..."``)."""
    near = torch.randn(trials, n - n_far, dim, generator=generator)
    radius = far[0] + (far[1] - far[0]) * torch.rand(trials * n_far, generator=generator)
    away = points_at_radius(trials * n_far, radius, dim, generator=generator).reshape(trials, n_far, dim)
    cand = torch.cat([near, away], dim=1)  # [trials, n, dim]
    dtype = next(la.model.parameters()).dtype
    mean, var = la(cand.reshape(trials * n, dim).to(dtype))
    mean, std = mean.reshape(trials, n).double(), var.reshape(trials, n).double().sqrt()  # [trials, n]
    truth = true_reward(cand).double()  # [trials, n]
    out = {}
    for k in ks:
        pick = (mean - k * std).argmax(dim=1)  # [trials]
        out[f"k={k:g}"] = truth.gather(1, pick[:, None]).mean().item()
        out[f"far k={k:g}"] = (pick >= n - n_far).double().mean().item()
    out["random"] = truth.mean().item()
    out["oracle"] = truth.max(dim=1).values.mean().item()
    return out
