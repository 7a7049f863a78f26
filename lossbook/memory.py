"""Deterministic peak-memory measurement on any device: a tensor-allocation tracker.

Chapter: notebooks/11_memory.ipynb; also used by tests/test_chunked_cross_entropy.py and benchmarks/.

:class:`StorageTracker` is a ``TorchDispatchMode``: every ATen operation run inside it passes through
``__torch_dispatch__``, which records the storages of the tensors the operation returns.  A new storage is
counted once, from the moment an operation returns it until Python frees it (a weak reference's callback);
views and in-place results share their input's storage and add nothing.  ``peak`` is the largest number of
bytes of tensor storage alive at once among the tensors created inside the ``with`` block (tensors created
before it are not counted).  It sees what PyTorch allocates as tensors, on the CPU too, and the number is the
same on every run: unlike a wall-clock time or ``torch.cuda.max_memory_allocated``, it does not depend on the
allocator's caching or on other processes.  On the ``meta`` device (shapes without data) it measures what a
run at any size would allocate, in milliseconds.
It does not see scratch memory a kernel allocates internally (e.g. a matmul's packing buffers).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["StorageTracker", "tracked_peak"]


class StorageTracker(TorchDispatchMode):
    """Counts the bytes of live tensor storage created inside the ``with`` block.

    ``current``: bytes alive now; ``peak``: the largest ``current`` seen; ``allocations``: storages
    counted. ``largest``: the bytes of the largest single storage created (e.g. a ``[tokens,
    vocab]`` logits tensor).
    """

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self.allocations = 0
        self.largest = 0
        self._refs: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat = tree_flatten((args, kwargs))[0]
        inputs = {t.untyped_storage()._cdata for t in flat if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        return out

    def _track(self, t: torch.Tensor, inputs: set) -> None:
        storage = t.untyped_storage()
        if storage._cdata in inputs:
            return  # a view or an in-place result: no new memory (nor a tensor made before)
        key = id(storage)
        ref = self._refs.get(key)
        if ref is not None and ref() is storage:
            return  # already counted
        nbytes = storage.nbytes()
        on_free = lambda _ref, key=key, nbytes=nbytes: self._free(key, nbytes, _ref)
        self._refs[key] = weakref.ref(storage, on_free)
        self.allocations += 1
        self.largest = max(self.largest, nbytes)
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def _free(self, key: int, nbytes: int, ref) -> None:
        if self._refs.get(key) is ref:
            del self._refs[key]
        self.current -= nbytes


def tracked_peak(fn, *args, **kwargs) -> tuple[int, object]:
    """``(peak bytes, result)`` of ``fn(*args, **kwargs)`` under a :class:`StorageTracker`."""
    with StorageTracker() as tracker:
        result = fn(*args, **kwargs)
    return tracker.peak, result
