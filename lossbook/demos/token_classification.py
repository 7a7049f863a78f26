"""Chapter 05's demo: a toy named-entity task, a sub-word tokenizer, label alignment and a tiny tagger.

Nothing is downloaded: sentences are generated from small word lists with
person and location spans, tagged with BIO tags; words are split into pieces
of at most 3 characters (continuations marked ``##``, as in WordPiece), and
``align_labels`` puts each word's tag on its first piece and ``-100`` on
continuations, special tokens and padding (the Hugging Face token
classification recipe).
"""

from __future__ import annotations

import random

import torch
from torch import nn

__all__ = [
    "TAGS",
    "AMBIGUOUS",
    "IGNORE_INDEX",
    "SPECIALS",
    "split_word",
    "SubwordTokenizer",
    "align_labels",
    "make_tagged_sentences",
    "all_words",
    "encode_batch",
    "TokenTagger",
    "per_tag_accuracy",
]

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IGNORE_INDEX = -100
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0..3

AMBIGUOUS = ["Jordan", "Florence", "Sydney", "Georgia", "Austin", "Victoria"]  # a first name and a place
FIRST_NAMES = ["Ada", "Alan", "Grace", "Marie", "Nikola", "Rosalind", "Emmy", "Srinivasa", *AMBIGUOUS]
LAST_NAMES = ["Lovelace", "Turing", "Hopper", "Curie", "Tesla", "Franklin", "Noether", "Ramanujan"]
CITIES = ["Paris", "Lima", "Oslo", "Nairobi", "Kyoto", "Montevideo", "Quebec", "Reykjavik", *AMBIGUOUS]
CITY_PAIRS = [["New", "York"], ["Buenos", "Aires"], ["Hong", "Kong"], ["Rio", "Branco"], ["San", "Diego"]]
TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} moved from {LOC} to {LOC} .",
    "yesterday {PER} met {PER} in {LOC} .",
    "the train to {LOC} was late , said {PER} .",
    "{PER} wrote to {PER} about the weather in {LOC} .",
    "in {LOC} nobody knows {PER} .",
    "{LOC} is far from {LOC} .",
    "we visited {LOC} with {PER} last summer .",
]


def split_word(word: str, max_piece: int = 3) -> list[str]:
    """``"Lovelace"`` -> ``["Lov", "##ela", "##ce"]``: pieces of at most ``max_piece`` characters."""
    if not word:
        raise ValueError("split_word got an empty word")
    pieces = [word[i : i + max_piece] for i in range(0, len(word), max_piece)]
    return [pieces[0]] + ["##" + p for p in pieces[1:]]


class SubwordTokenizer:
    """A deterministic toy WordPiece: fixed-size pieces, a vocabulary built from the words it is shown.

    ``tokenizer(words)`` returns ``(pieces, word_ids)`` with ``[CLS]`` first and
    ``[SEP]`` last (word id ``None``), like a Hugging Face fast tokenizer's
    ``tokens()`` and ``word_ids()``.
    """

    def __init__(self, words, max_piece: int = 3):
        self.max_piece = max_piece
        pieces = sorted({p for w in words for p in split_word(w, max_piece)})
        self.vocab = {p: i for i, p in enumerate(SPECIALS + pieces)}
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, words, add_special_tokens: bool = True) -> tuple[list[str], list[int | None]]:
        pieces, word_ids = [], []
        for i, word in enumerate(words):
            for piece in split_word(word, self.max_piece):
                pieces.append(piece)
                word_ids.append(i)
        if add_special_tokens:
            pieces, word_ids = ["[CLS]", *pieces, "[SEP]"], [None, *word_ids, None]
        return pieces, word_ids

    def ids(self, pieces) -> list[int]:
        return [self.vocab.get(p, self.unk_id) for p in pieces]


def align_labels(word_labels, word_ids, label_all_tokens: bool = False, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """One label per token from one label per word (the Hugging Face ``tokenize_and_align_labels`` recipe).

    A token with word id ``None`` (special token, padding) gets ``ignore_index``;
    the first piece of a word gets the word's label; a continuation piece gets
    ``ignore_index``, or the word's label again when ``label_all_tokens``.
    """
    words = 1 + max((w for w in word_ids if w is not None), default=-1)
    if len(word_labels) != words:
        raise ValueError(f"word_labels has {len(word_labels)} labels for the {words} words that word_ids number")
    labels, previous = [], None
    for word_id in word_ids:
        if word_id is None:
            labels.append(ignore_index)
        elif word_id != previous:
            labels.append(int(word_labels[word_id]))
        else:
            labels.append(int(word_labels[word_id]) if label_all_tokens else ignore_index)
        previous = word_id
    return labels


def make_tagged_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[int]]]:
    """``n`` sentences as ``(words, tag ids)`` with BIO tags over person and location spans.

    The words of ``AMBIGUOUS`` ("Jordan", "Florence", ...) are both a first
    name and a place, so the tagger must read the context, not just the word.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for slot in rng.choice(TEMPLATES).split():
            if slot == "{PER}":
                span = [rng.choice(FIRST_NAMES)] + ([rng.choice(LAST_NAMES)] if rng.random() < 0.6 else [])
                kind = "PER"
            elif slot == "{LOC}":
                span = list(rng.choice(CITY_PAIRS)) if rng.random() < 0.3 else [rng.choice(CITIES)]
                kind = "LOC"
            else:
                words.append(slot)
                tags.append(TAGS.index("O"))
                continue
            words += span
            tags += [TAGS.index(f"B-{kind}")] + [TAGS.index(f"I-{kind}")] * (len(span) - 1)
        out.append((words, tags))
    return out


def all_words() -> list[str]:
    """Every word the generator can produce (the tokenizer's vocabulary source)."""
    template_words = {w for t in TEMPLATES for w in t.split() if not w.startswith("{")}
    return sorted(
        template_words | set(FIRST_NAMES) | set(LAST_NAMES) | set(CITIES) | {w for p in CITY_PAIRS for w in p}
    )


def encode_batch(sentences, tokenizer: SubwordTokenizer, *, label_all_tokens: bool = False, max_length=None):
    """Tokenize, align and pad a list of ``(words, tags)``.

    Returns ``input_ids``, ``labels``, ``word_ids`` (``-1`` for special tokens
    and padding) and ``attention_mask``, each Long[Tensor, "batch seq"];
    ``seq`` is the longest sentence, or ``max_length`` (longer ones are cut).
    """
    rows = []
    for words, tags in sentences:
        pieces, word_ids = tokenizer(words)
        rows.append((tokenizer.ids(pieces), align_labels(tags, word_ids, label_all_tokens), word_ids))
    seq = max_length or max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), seq), tokenizer.pad_id)  # [batch, seq]
    labels = torch.full((len(rows), seq), IGNORE_INDEX)  # [batch, seq]: padding is ignored
    word_index = torch.full((len(rows), seq), -1)  # [batch, seq]
    mask = torch.zeros((len(rows), seq), dtype=torch.long)  # [batch, seq]
    for b, (ids, labs, wids) in enumerate(rows):
        k = min(len(ids), seq)
        input_ids[b, :k] = torch.tensor(ids[:k])
        labels[b, :k] = torch.tensor(labs[:k])
        word_index[b, :k] = torch.tensor([-1 if w is None else w for w in wids[:k]])
        mask[b, :k] = 1
    return {"input_ids": input_ids, "labels": labels, "word_ids": word_index, "attention_mask": mask}


class TokenTagger(nn.Module):
    """Embedding -> two 1-D convolutions (each token sees 4 pieces either side) -> linear.

    ``[batch, seq]`` piece ids to ``[batch, seq, tags]`` logits.  Convolutions
    rather than a recurrent net: a handful of large matrix products per step,
    which is what a 2-core CPU does fast.
    """

    def __init__(self, vocab_size: int, num_tags: int, dim: int = 32, hidden: int = 64, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.conv1 = nn.Conv1d(dim, hidden, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=5, padding=2)
        self.head = nn.Linear(hidden, num_tags)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).transpose(1, 2)  # [batch, dim, seq]
        x = torch.relu(self.conv1(x))  # [batch, hidden, seq]
        x = torch.relu(self.conv2(x))  # [batch, hidden, seq]
        return self.head(x.transpose(1, 2))  # [batch, seq, tags]


@torch.no_grad()
def per_tag_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_tags: int, ignore_index: int = IGNORE_INDEX):
    """Accuracy per gold tag over the labelled tokens (first pieces), and overall.

    Returns ``(per_tag, overall)``: a Float[Tensor, "tags"] (NaN for a tag
    that never occurs) and a float.
    """
    pred = logits.argmax(-1)  # [batch, seq]
    keep = labels != ignore_index  # [batch, seq]
    gold, hit = labels[keep], (pred[keep] == labels[keep]).float()  # [kept] each
    per_tag = torch.full((num_tags,), float("nan"))
    for tag in range(num_tags):
        of_tag = gold == tag
        if of_tag.any():
            per_tag[tag] = hit[of_tag].mean().cpu()
    return per_tag, float(hit.mean()) if hit.numel() else float("nan")
