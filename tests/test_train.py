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


def test_keep_best_restores_the_weights_of_the_best_validation_step():
    seed_everything(0)
    model = MLP(2, 8, 2)
    scores = iter([0.2, 0.9, 0.5, 0.1])
    snapshots = {}

    def eval_fn(m):
        value = next(scores)
        snapshots[value] = [p.detach().clone() for p in m.parameters()]
        return {"val_accuracy": value}

    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    history = train(model, lambda m, xb, yb: fixed_cross_entropy(m(xb), yb), lambda step: (x, y), steps=4,
                    lr=0.1, device=torch.device("cpu"), eval_fn=eval_fn, eval_every=1, progress=False,
                    keep_best="val_accuracy")
    assert history.best_step == 2
    for got, kept in zip(model.parameters(), snapshots[0.9]):
        torch.testing.assert_close(got.detach(), kept)
    assert not all(torch.equal(a.detach(), b) for a, b in zip(model.parameters(), snapshots[0.1]))


def test_keep_best_minimizes_and_refuses_a_missing_metric():
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    loss_fn = lambda m, xb, yb: fixed_cross_entropy(m(xb), yb)  # noqa: E731
    scores = iter([3.0, 1.0, 2.0])
    history = train(MLP(2, 8, 2), loss_fn, lambda step: (x, y), steps=3, device=torch.device("cpu"),
                    eval_fn=lambda m: {"val_loss": next(scores)}, eval_every=1, progress=False,
                    keep_best="val_loss", maximize=False)
    assert history.best_step == 2
    with pytest.raises(ValueError, match="keep_best='val_loss' needs an eval_fn"):
        train(MLP(2, 8, 2), loss_fn, lambda step: (x, y), steps=1, progress=False, keep_best="val_loss")
    with pytest.raises(KeyError, match="keep_best='val_loss' is not among"):
        train(MLP(2, 8, 2), loss_fn, lambda step: (x, y), steps=1, device=torch.device("cpu"),
              eval_fn=lambda m: {"acc": 1.0}, progress=False, keep_best="val_loss")
    assert train(MLP(2, 8, 2), loss_fn, lambda step: (x, y), steps=1, progress=False).best_step is None
