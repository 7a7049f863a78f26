"""Model selection for the demos: keep the weights that score best on a validation split.

The chapters report a test split that nothing was chosen on; :class:`KeepBest` is the ``eval_fn`` that does
the choosing on validation data while :func:`lossbook.train.train` runs.
"""

from __future__ import annotations

__all__ = ["KeepBest"]


class KeepBest:
    """An ``eval_fn`` for :func:`lossbook.train.train` that keeps the model state with the best validation score.

    ``KeepBest(metric)`` calls ``metric(model)`` at every evaluation, logs the score under ``name`` and keeps a
    copy of the weights whenever it improves (``mode="max"``: higher is better, e.g. an accuracy;
    ``mode="min"``: lower is better, e.g. a loss).  ``restore(model, eval_every, steps)`` loads the kept
    weights back and returns the training step they come from.
    """

    def __init__(self, metric, name: str = "validation", mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.name, self.mode = metric, name, mode
        self.best, self.best_step, self.state, self.calls = None, None, None, 0

    def _better(self, score: float) -> bool:
        if self.best is None:
            return True
        return score > self.best if self.mode == "max" else score < self.best

    def __call__(self, model) -> dict[str, float]:
        self.calls += 1
        score = float(self.metric(model))
        if self._better(score):
            self.best, self.best_step = score, self.calls
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {self.name: score}

    def restore(self, model, eval_every: int, steps: int) -> int:
        """Load the best weights into ``model``; the training step they come from.

        ``train`` evaluates every ``eval_every`` steps and at the last step, so evaluation k is at step
        ``min(k * eval_every, steps)``.
        """
        if self.state is None:
            raise RuntimeError("KeepBest.restore before any evaluation: pass it to train(eval_fn=...) first")
        model.load_state_dict(self.state)
        return min(self.best_step * eval_every, steps)
