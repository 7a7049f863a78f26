"""Half precision against upstream: lossbook reduces in float32 and rounds once, upstream sums in float16."""

import math

import torch

HALF = (torch.float16, torch.bfloat16)


def ulp(value: torch.Tensor) -> float:
    """The spacing of ``value``'s dtype at ``value``: one unit in the last place."""
    v = abs(float(value))
    if v == 0 or not math.isfinite(v):
        return 0.0
    info = torch.finfo(value.dtype)
    return info.eps * 2.0 ** math.floor(math.log2(max(v, info.tiny)))


def assert_loss_close(ours: torch.Tensor, theirs: torch.Tensor, tol: float, ulps: int = 1) -> None:
    """float32/64: within ``tol``; half precision: within ``ulps`` units in the last place of upstream's value
    (lossbook rounds the float32 mean once, upstream rounds a float16 sum and then the quotient)."""
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if ours.dtype in HALF:
        if math.isnan(float(theirs)):
            assert math.isnan(float(ours))
            return
        assert abs(float(ours) - float(theirs)) <= ulps * ulp(theirs), (float(ours), float(theirs))
    else:
        torch.testing.assert_close(ours, theirs, atol=tol, rtol=tol, equal_nan=True)
