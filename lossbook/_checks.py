"""Input checks shared by every loss: clear errors that name the argument and its shape."""

from __future__ import annotations

import contextvars
import itertools
import math
import numbers

import torch

__all__ = [
    "shape_str",
    "check_tensor",
    "check_float",
    "check_integer",
    "check_rank",
    "check_in_range",
    "check_vocab_size",
    "check_position_labels",
    "check_ignore_index",
    "check_count",
    "check_label_values",
    "named_label_errors",
    "SMALL",
]


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
    if t.dtype is torch.long:  # the common case, decided without three dtype queries
        return t
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


def check_in_range(name: str, target: torch.Tensor, classes: int, ignore_index: int, what: str = "class index",
                   shape_of: torch.Tensor | None = None) -> None:
    """Every value of ``target`` in ``[0, classes)`` or equal to ``ignore_index``; the error names the bad one.

    Cheap on purpose (it runs on every call of a loss on an accelerator): the ignored positions are set to 0 (a
    valid class) in one elementwise pass (skipped when ``ignore_index`` is itself a class), the minimum and maximum
    are found in one reduction and read together: one host-device synchronisation on an accelerator, no
    boolean-index copy (which would synchronise too).  A small CPU tensor is read into Python instead (a few
    microseconds, where three tensor operations would cost tens).  ``shape_of``: the tensor whose shape the message
    shows (default ``target``), when ``target`` is a slice of what the caller passed.
    """
    if target.numel() == 0 or target.device.type == "meta":  # a meta tensor has a shape and no values
        return
    shown = target if shape_of is None else shape_of
    if target.device.type == "cpu" and target.numel() <= SMALL:
        values = target.tolist()  # nested lists: cheaper than a reshape on a tensor this small
        for _ in range(target.dim() - 1):
            values = list(itertools.chain.from_iterable(values))
        if target.dim() == 0:
            values = [values]
        bad = [v for v in values if v != ignore_index and not 0 <= v < classes]
        if bad:
            low = min(bad)
            _out_of_range(name, shown, classes, ignore_index, what, low if low < 0 else max(bad))
        return
    if classes < 1:  # no class is valid, so 0 cannot stand in for an ignored position
        kept = target[target != ignore_index]
        if kept.numel():
            _out_of_range(name, shown, classes, ignore_index, what, int(kept.min()))
        return
    if not 0 <= ignore_index < classes:  # an ignored position would look out of range: count it as class 0
        target = target.masked_fill(target == ignore_index, 0)
    low, high = torch.aminmax(target)
    if target.device.type == "cpu":
        low, high = low.item(), high.item()  # no device to wait for: two cheap reads
    else:
        low, high = torch.stack((low, high)).tolist()  # one synchronisation
    if low < 0 or high >= classes:
        _out_of_range(name, shown, classes, ignore_index, what, low if low < 0 else high)


SMALL = 128  # up to this many CPU values, a Python scan beats three small tensor kernels

# True inside a loss's named_label_errors: that loss has checked (or will explain) the label values, so the
# losses it calls neither check them again nor rename the error
_CALLER_OWNS_LABELS = contextvars.ContextVar("lossbook_caller_owns_labels", default=False)


def check_label_values(name: str, labels: torch.Tensor, classes: int, ignore_index: int,
                       what: str = "class index") -> None:
    """Every value of ``labels`` in ``[0, classes)`` or ``ignore_index``, checked before the loss where that
    must be: on an accelerator an out-of-range target is a device-side assert that poisons the process, so
    the values are read there (one synchronisation, :func:`check_in_range`).  On the CPU nothing is read here:
    PyTorch's cross-entropy kernel checks every scored label during the loss, and the loss's
    :class:`named_label_errors` turns its ``IndexError`` into lossbook's message.  Inside another loss's
    ``named_label_errors`` (a loss calling a loss) the outer one has checked them."""
    if labels.is_cpu or _CALLER_OWNS_LABELS.get():
        return
    check_in_range(name, labels, classes, ignore_index, what)


class named_label_errors:  # noqa: N801 (used as ``with named_label_errors(...):``, like a function)
    """``with named_label_errors("labels", labels, vocab, ignore_index, "token id"):`` around a loss's call of
    PyTorch's cross-entropy: an out-of-range label raises lossbook's ``ValueError`` naming the argument, the
    value and the shape of ``labels`` (the caller's tensor), instead of PyTorch's "Target 7 is out of bounds".

    This is the one place of the CPU label check: PyTorch's kernel finds the bad label at no extra cost, and
    only then are the labels re-read, for the message.  When losses nest (``causal_lm_loss`` calls
    ``per_position_cross_entropy``, which calls ``fixed_cross_entropy``), the outermost names the error with
    its own argument and shape; the inner ones pass it through.
    """

    __slots__ = ("_args", "_token")

    def __init__(self, name: str, labels: torch.Tensor, classes: int, ignore_index: int,
                 what: str = "class index"):
        self._args = (name, labels, classes, ignore_index, what)

    def __enter__(self):
        self._token = None if _CALLER_OWNS_LABELS.get() else _CALLER_OWNS_LABELS.set(True)
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if self._token is None:  # an outer loss names the error
            return False
        _CALLER_OWNS_LABELS.reset(self._token)
        if kind is not None and issubclass(kind, IndexError):  # PyTorch's "Target 7 is out of bounds."
            try:
                check_in_range(*self._args)
            except ValueError as clear:
                raise clear from None
        return False  # no bad label found: PyTorch's own error goes on


def _out_of_range(name, target, classes, ignore_index, what, bad) -> None:
    raise ValueError(
        f"{name} holds {what} {bad}, outside [0, {classes}) for logits with {classes} classes "
        f"(shape {shape_str(target)}); the only other value allowed is ignore_index={ignore_index}"
    )


def check_vocab_size(vocab_size, logits: torch.Tensor) -> None:
    """``vocab_size`` (None, or an int equal to the logits' last dim): upstream's ``view(-1, vocab_size)``
    would silently regroup the logits into rows of the wrong length."""
    if vocab_size is None:
        return
    if not isinstance(vocab_size, numbers.Integral) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    vocab = logits.shape[-1]
    if vocab_size != vocab:
        raise ValueError(
            f"vocab_size={vocab_size} disagrees with logits of shape {shape_str(logits)} "
            f"(last dim {vocab}); view(-1, {vocab_size}) would regroup the logits into wrong rows"
        )


def check_position_labels(name: str, labels, logits: torch.Tensor, ignore_index, what: str = "token id") -> None:
    """One integer label per position of ``logits`` [..., classes]: shape ``logits.shape[:-1]``, each value a
    class of the last dim or ``ignore_index`` (an int; the values as :func:`check_label_values` checks them)."""
    check_integer(name, labels, f"{what}s")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{name} must have shape {list(logits.shape[:-1])} (logits {shape_str(logits)} without the last "
            f"dim: one {what} or ignore_index per position), got {shape_str(labels)}"
        )
    check_label_values(name, labels, logits.shape[-1], check_ignore_index(ignore_index), what)


def check_ignore_index(ignore_index, name: str = "ignore_index") -> int:
    """An ``int`` (Python or numpy integer, not bool): the label value that marks an ignored position."""
    if type(ignore_index) is int:  # the common case, without the slower abstract-class check below
        return ignore_index
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{name} must be an int (the label value of ignored positions, usually -100), "
                        f"got {type(ignore_index).__name__}")
    return int(ignore_index)


def check_count(name: str, n):
    """A positive, finite count (an ``int``, a finite float, or a one-element tensor) used as a denominator.

    Python numbers and CPU tensors are checked in full: NaN, infinite, zero and negative counts are errors (a
    zero count means nothing in the whole batch is scored: the loss would be 0/0).  A tensor on an accelerator
    is checked from its metadata only (one element, a real dtype): reading its value would force the host to
    wait for the device, so its value is left as it is (a bad count there gives a wrong loss, not an error).
    """
    if type(n) is int:  # the common case first, without the slower abstract-class checks below
        if n <= 0:
            _check_count_value(name, n)
        return n
    if torch.is_tensor(n):
        if n.numel() != 1:
            raise ValueError(f"{name} must be a single count, got a tensor of shape {shape_str(n)}; a vector would "
                             "silently broadcast the loss")
        if n.dtype == torch.bool or n.is_complex():
            raise TypeError(f"{name} must be a count (an integer or floating tensor), got dtype {n.dtype}")
        if n.device.type == "cpu":
            _check_count_value(name, n.item())
        return n
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"{name} must be an int or a one-element tensor, got {type(n).__name__}")
    _check_count_value(name, n)
    return n


def _check_count_value(name: str, value) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite count, got {value}; it is the number of scored items "
                         "in the whole (accumulated) batch, the denominator of the loss")
