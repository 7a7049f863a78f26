"""The training loop, the synthetic data, the tiny model and the plots."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from lossbook import fixed_cross_entropy, seed_everything
from lossbook.data import make_spirals, train_test_split
from lossbook.models import MLP
from lossbook.plotting import plot_bars, plot_decision_regions, plot_history
from lossbook.train import History, train


def test_spirals_shapes_and_determinism():
    x, y = make_spirals(50, classes=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (200, 2) and y.shape == (200,) and y.dtype == torch.long
    x2, _ = make_spirals(50, classes=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_split_keeps_rows_together():
    a, b = torch.arange(10), torch.arange(10) * 2
    a_tr, a_te, b_tr, b_te = train_test_split(a, b, test_fraction=0.3, generator=torch.Generator().manual_seed(0))
    assert len(a_te) == 3 and torch.equal(b_tr, a_tr * 2) and torch.equal(b_te, a_te * 2)
    with pytest.raises(ValueError, match="disagree on rows"):
        train_test_split(torch.zeros(3), torch.zeros(4))


def test_train_reduces_loss_and_logs_history():
    seed_everything(0)
    x, y = make_spirals(64, generator=torch.Generator().manual_seed(0))
    model = MLP(2, 32, 3)
    loss_fn = lambda m, xb, yb: fixed_cross_entropy(m(xb), yb)
    evals = lambda m: {"acc": (m(x).argmax(-1) == y).float().mean().item()}
    history = train(model, loss_fn, lambda step: (x, y), steps=60, lr=1e-2, eval_fn=evals, eval_every=20,
                    device=torch.device("cpu"), progress=False)
    losses = [v for _, v in history["train_loss"]]
    assert len(losses) == 60 and losses[-1] < 0.8 * losses[0]
    assert [s for s, _ in history["acc"]] == [20, 40, 60]
    with pytest.raises(KeyError, match="no metric 'nope'"):
        history["nope"]


def test_plots_draw_what_they_are_given():
    h = History()
    for step in range(1, 4):
        h.log(step, train_loss=1.0 / step)
    ax = plot_history(h)
    assert list(ax.lines[0].get_ydata()) == [1.0, 0.5, 1.0 / 3]
    ax = plot_bars(["a", "b"], [1e-3, 1e-8], logy=True)
    assert [p.get_height() for p in ax.patches] == [1e-3, 1e-8]
    x, y = make_spirals(10)
    ax = plot_decision_regions(MLP(2, 8, 3), x, y, resolution=20)
    assert len(ax.collections) >= 1
