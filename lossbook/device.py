"""Devices and seeds: the two things every chapter sets up first.

See notebooks/00_how_to_read_this_book.ipynb.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["demo_seed", "pick_device", "pin_threads", "seed_everything"]

_KNOWN = ("cuda", "mps", "cpu")


def pick_device() -> torch.device:
    """The device a chapter runs on: cuda, then mps, then cpu.

    The environment variable ``LOSSBOOK_DEVICE`` overrides the choice
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``); asking for a device this
    machine does not have is an error, not a silent fallback.
    """
    wanted = os.environ.get("LOSSBOOK_DEVICE", "").strip()
    if wanted:
        kind = wanted.split(":")[0]
        if kind not in _KNOWN:
            raise ValueError(f"LOSSBOOK_DEVICE={wanted!r}: expected one of {_KNOWN} "
                             "(optionally 'cuda:N')")
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"LOSSBOOK_DEVICE={wanted!r} but torch.cuda.is_available() is False")
        if kind == "mps" and not _mps_available():
            raise RuntimeError(f"LOSSBOOK_DEVICE={wanted!r} but the MPS backend is not available")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (every device) and return a CPU generator.

    The returned ``torch.Generator`` is for code that wants its own stream of
    random numbers (data sets, masks) independent of the global one.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def demo_seed() -> int:
    """The seed of a chapter's training demos: 0, the one the stored outputs were made with, unless the
    environment variable ``LOSSBOOK_SEED`` names another non-negative integer.

    A chapter adds it to the seeds of its initial weights and batch order (``seed_everything(SEED)``,
    ``manual_seed(1 + SEED)``), never to its data, so ``LOSSBOOK_SEED=1 jupyter lab`` re-trains the same
    lesson from another start; ``scripts/seeds.py`` runs every chapter that way and reports whether each
    demo's asserts (the gap between the mistake and the fix) still hold.
    """
    raw = os.environ.get("LOSSBOOK_SEED", "").strip()
    if not raw:
        return 0
    try:
        seed = int(raw)
    except ValueError:
        raise ValueError(f"LOSSBOOK_SEED={raw!r}: expected a non-negative integer") from None
    if seed < 0:
        raise ValueError(f"LOSSBOOK_SEED={raw!r}: expected a non-negative integer")
    return seed


def pin_threads(threads: int | None = None) -> int:
    """Pin the number of CPU threads torch uses, in one place for every chapter.

    A book's training cells are small: on a shared 2-core machine torch's default (one thread per core)
    made chapter 02's training 5-10x slower under load than one thread did, and no faster when quiet.
    So the default is **1**; the environment variable ``LOSSBOOK_THREADS`` (a positive integer) or the
    ``threads`` argument overrides it.  Returns the count now in force (``torch.get_num_threads()``).
    """
    if threads is None:
        raw = os.environ.get("LOSSBOOK_THREADS", "").strip()
        if raw:
            try:
                threads = int(raw)
            except ValueError:
                raise ValueError(f"LOSSBOOK_THREADS={raw!r}: expected a positive integer") from None
            if threads < 1:
                raise ValueError(f"LOSSBOOK_THREADS={raw!r}: expected a positive integer")
        else:
            threads = 1
    elif not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    torch.set_num_threads(threads)
    return torch.get_num_threads()
