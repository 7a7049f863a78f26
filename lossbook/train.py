"""A small training loop: device handling, a tqdm progress bar, and a history of metrics."""

from __future__ import annotations

from collections import defaultdict

import torch
from tqdm.auto import tqdm

from .device import pick_device

__all__ = ["History", "train"]


class History:
    """Metrics logged by step: ``history["train_loss"]`` is a list of ``(step, value)``."""

    def __init__(self):
        self.records: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.best_step: int | None = None  # set by train(keep_best=...): the step whose weights were kept

    def log(self, step: int, **values: float) -> None:
        for key, value in values.items():
            self.records[key].append((step, float(value)))

    def __getitem__(self, key: str) -> list[tuple[int, float]]:
        if key not in self.records:
            raise KeyError(f"no metric {key!r} in history; have {sorted(self.records)}")
        return self.records[key]

    def last(self, key: str) -> float:
        return self[key][-1][1]

    def keys(self):
        return self.records.keys()


def train(
    model: torch.nn.Module,
    loss_fn,
    get_batch,
    *,
    steps: int,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    device: torch.device | None = None,
    eval_fn=None,
    eval_every: int = 50,
    progress: bool = True,
    desc: str = "training",
    keep_best: str | None = None,
    maximize: bool = True,
) -> History:
    """Train ``model`` for ``steps`` AdamW steps and return its :class:`History`.

    ``get_batch(step)`` returns a tuple of tensors (moved to the device here);
    ``loss_fn(model, *batch)`` returns a scalar loss; ``eval_fn(model)`` (run
    under ``torch.no_grad`` every ``eval_every`` steps and at the end) returns
    a dict of metrics, logged next to ``train_loss``.

    Model selection: ``keep_best="val_accuracy"`` (a key of ``eval_fn``'s dict, computed on a
    *validation* split) keeps a copy of the weights at the best evaluation (the largest value, or the
    smallest with ``maximize=False``; the earliest on ties) and loads them back at the end;
    ``history.best_step`` says which step that was.  Report the test split only after this choice.
    """
    if keep_best is not None and eval_fn is None:
        raise ValueError(f"keep_best={keep_best!r} needs an eval_fn that returns it")
    best_value, best_state = None, None
    device = device or pick_device()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = History()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        model.train()
        batch = tuple(t.to(device) for t in get_batch(step))
        loss = loss_fn(model, *batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.log(step, train_loss=loss.item())
        if eval_fn is not None and (step % eval_every == 0 or step == steps):
            model.eval()
            with torch.no_grad():
                metrics = eval_fn(model)
            history.log(step, **metrics)
            if keep_best is not None:
                if keep_best not in metrics:
                    raise KeyError(f"keep_best={keep_best!r} is not among eval_fn's metrics {sorted(metrics)}")
                value = float(metrics[keep_best])
                if best_value is None or (value > best_value if maximize else value < best_value):
                    best_value, history.best_step = value, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
