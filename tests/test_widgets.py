"""The explorers show what lossbook computes, before and after a slider moves."""

import pytest
import torch

from lossbook import fixed_cross_entropy
from lossbook.widgets import LogitExplorer, ShapeTracer


def test_logit_explorer_follows_sliders():
    ex = LogitExplorer(logits=(2.0, 1.0, 0.1, -1.0), target=0)
    ex.sliders[3].value = 4.0
    ex.target.value = 2
    z = torch.tensor([[2.0, 1.0, 0.1, 4.0]], dtype=torch.float64)
    expected = fixed_cross_entropy(z, torch.tensor([2])).item()
    assert ex.loss == pytest.approx(expected, rel=1e-12)
    grad = torch.tensor(ex.grad, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(torch.tensor(2), 4).double()
    torch.testing.assert_close(grad, z.softmax(-1)[0] - onehot)
    assert f">{expected:.4f}<" in ex.html.value
    assert sum(ex.probs) == pytest.approx(1.0)


def test_logit_explorer_names_must_match():
    with pytest.raises(ValueError, match="names has 2 entries for 3 logits"):
        LogitExplorer(logits=(0.0, 1.0, 2.0), names=["a", "b"])


def test_shape_tracer_shapes_and_loss():
    tr = ShapeTracer(batch=2, seq=5, vocab=8, padding=1)
    tr.vocab.value = 11
    tr.batch.value = 3
    logits, labels = tr.tensors()
    assert dict(tr.steps)["logits.view(-1, vocab)"] == [15, 11]
    kept = int((labels != -100).sum())
    assert kept == 15 - (1 + 2 + 3)
    assert dict(tr.steps)["log_softmax(logits)[mask].gather(labels)"] == [kept]
    assert tr.loss == pytest.approx(fixed_cross_entropy(logits.view(-1, 11), labels.view(-1)).item())
    assert f"{kept} of 15 kept" in tr.html.value


def test_shape_tracer_all_padding_says_why_it_is_nan():
    tr = ShapeTracer(batch=1, seq=2, vocab=3, padding=5)
    assert "0/0" in tr.html.value
