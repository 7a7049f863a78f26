"""Input checks shared by every loss: clear errors that name the argument and its shape."""

from __future__ import annotations

import torch

__all__ = ["shape_str", "check_tensor", "check_float", "check_integer", "check_rank"]


def shape_str(t: torch.Tensor) -> str:
    """``[2, 3, 5]`` for a tensor of that shape."""
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def check_tensor(name: str, t) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_float(name: str, t) -> torch.Tensor:
    check_tensor(name, t)
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (logits), got dtype {t.dtype} with shape {shape_str(t)}"
        )
    return t


def check_integer(name: str, t, what: str = "class indices") -> torch.Tensor:
    check_tensor(name, t)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer {what} (torch.long), got dtype {t.dtype} with shape {shape_str(t)}; "
            "float labels usually mean a .float() too many or probabilities passed where indices belong"
        )
    return t


def check_rank(name: str, t: torch.Tensor, ranks: tuple[int, ...], dims: str) -> torch.Tensor:
    if t.dim() not in ranks:
        raise ValueError(f"{name} must be {dims}, got shape {shape_str(t)} ({t.dim()} dims)")
    return t

