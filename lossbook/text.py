"""The texts the language-model chapters train on, shipped with the package (nothing is downloaded).

``nursery_rhymes``: traditional English nursery rhymes (public domain), about 6.7 kB, short and repetitive
enough that a two-layer character model learns visible structure in under a minute on a CPU.
"""

from __future__ import annotations

from importlib import resources

import torch

from ._checks import check_integer, check_rank, shape_str

__all__ = ["CORPORA", "load_text", "CharTokenizer", "random_windows"]

CORPORA = {"nursery_rhymes": "nursery_rhymes.txt"}


def load_text(name: str = "nursery_rhymes") -> str:
    """The shipped text ``name`` (one of ``CORPORA``)."""
    if name not in CORPORA:
        raise ValueError(f"name must be one of {sorted(CORPORA)}, got {name!r}")
    return resources.files("lossbook").joinpath("corpus", CORPORA[name]).read_text(encoding="utf-8")


class CharTokenizer:
    """One token per character, plus special tokens in front (``<pad>``, ``<mask>`` by default).

    ``vocab[i]`` is the string of token ``i``; ``pad_id`` and ``mask_id`` name the specials; the ids of the
    characters follow, in sorted order, so the vocabulary depends only on the text.
    """

    def __init__(self, text: str, specials: tuple[str, ...] = ("<pad>", "<mask>")):
        if not text:
            raise ValueError("text must be non-empty to build a vocabulary")
        self.specials = tuple(specials)
        self.vocab = [*self.specials, *sorted(set(text))]
        self.stoi = {s: i for i, s in enumerate(self.vocab)}
        self.special_ids = tuple(range(len(self.specials)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.stoi["<pad>"]

    @property
    def mask_id(self) -> int:
        return self.stoi["<mask>"]

    def encode(self, text: str) -> torch.Tensor:
        """Long[Tensor, "chars"]; an unknown character is an error naming it."""
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"text has characters outside the vocabulary: {unknown}")
        return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def decode(self, ids, specials: bool = True) -> str:
        """The text of ``ids`` (a 1-D tensor or a list); specials shown as their names unless ``specials=False``."""
        if torch.is_tensor(ids):
            check_integer("ids", ids, "token ids")
            check_rank("ids", ids, (1,), "1-D [tokens]")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids holds {i}, outside [0, {self.vocab_size})")
            if i in self.special_ids and not specials:
                continue
            out.append(self.vocab[i])
        return "".join(out)


def random_windows(ids: torch.Tensor, batch_size: int, length: int, generator: torch.Generator | None = None):
    """``batch_size`` random windows of ``length`` consecutive tokens of ``ids``: Long[Tensor, "batch length"].

    For a causal LM the window is both the input and the labels (the loss shifts the labels itself).
    """
    check_integer("ids", ids, "token ids")
    check_rank("ids", ids, (1,), "1-D [tokens]")
    if not 0 < length <= ids.numel():
        raise ValueError(f"length must be in [1, {ids.numel()}] for ids of shape {shape_str(ids)}, got {length}")
    starts = torch.randint(0, ids.numel() - length + 1, (batch_size,), generator=generator)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])
