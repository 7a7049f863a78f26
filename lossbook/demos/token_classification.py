"""Chapter 05's demo: a toy named-entity task, a sub-word tokenizer, label alignment and a tiny tagger.

Nothing is downloaded: sentences are generated from small word lists with
person and location spans, tagged with BIO tags; words are split into pieces
of at most 3 characters (continuations marked ``##``, as in WordPiece), and
``align_labels`` puts each word's tag on its first piece and ``-100`` on
continuations, special tokens and padding, or, with ``label_all_tokens``,
labels every piece and turns ``B-`` into ``I-`` on continuation pieces (the
Hugging Face course's ``align_labels_with_tokens`` and ``run_ner.py``'s
``b_to_i_label``).  ``bio_entities`` and ``entity_f1`` score entities, as
seqeval does; ``decode_entities`` reads a tagger's predictions at first pieces
or at every piece.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from ..checks import print_verdict

__all__ = [
    "TAGS",
    "B_TO_I",
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
    "bio_entities",
    "entity_f1",
    "decode_entities",
    "word_majority_tagger",
    "train_tagger",
    "check_aligner",
    "check_entity_decoder",
    "check_word_tags",
    "check_logit_gradient",
]

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
B_TO_I = [0, 2, 2, 4, 4]  # tag id -> the tag a continuation piece gets: B-X -> I-X, the rest unchanged
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


def align_labels(
    word_labels,
    word_ids,
    label_all_tokens: bool = False,
    ignore_index: int = IGNORE_INDEX,
    b_to_i=B_TO_I,
) -> list[int]:
    """One label per token from one label per word (Hugging Face's ``tokenize_and_align_labels``).

    A token with word id ``None`` (special token, padding) gets ``ignore_index``;
    the first piece of a word gets the word's label; a continuation piece gets
    ``ignore_index``, or, when ``label_all_tokens``, ``b_to_i[label]``: the
    word's label with ``B-X`` turned into ``I-X`` (``B_TO_I``), so that BIO
    decoding over the pieces still reads one entity per word span.  This is
    what ``run_ner.py`` (``b_to_i_label``) and the Hugging Face course's
    ``align_labels_with_tokens`` do.  ``b_to_i=None`` copies the word's label
    verbatim, ``B-`` included: the mistake chapter 05 trains, since BIO
    decoding reads every ``B-`` piece as the start of another entity.
    """
    words = 1 + max((w for w in word_ids if w is not None), default=-1)
    if len(word_labels) != words:
        raise ValueError(f"word_labels has {len(word_labels)} labels for the {words} words "
                         f"that word_ids number")
    labels, previous = [], None
    for word_id in word_ids:
        if word_id is None:
            labels.append(ignore_index)
        elif word_id != previous:
            labels.append(int(word_labels[word_id]))
        elif not label_all_tokens:
            labels.append(ignore_index)
        else:
            label = int(word_labels[word_id])
            labels.append(label if b_to_i is None else int(b_to_i[label]))
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


def encode_batch(
    sentences, tokenizer: SubwordTokenizer, *, label_all_tokens: bool = False, max_length=None, b_to_i=B_TO_I
):
    """Tokenize, align and pad a list of ``(words, tags)`` (``label_all_tokens``, ``b_to_i``: see ``align_labels``).

    Returns ``input_ids``, ``labels``, ``word_ids`` (``-1`` for special tokens
    and padding) and ``attention_mask``, each Long[Tensor, "batch seq"];
    ``seq`` is the longest sentence, or ``max_length`` (longer ones are cut).
    """
    rows = []
    for words, tags in sentences:
        pieces, word_ids = tokenizer(words)
        rows.append((tokenizer.ids(pieces), align_labels(tags, word_ids, label_all_tokens, b_to_i=b_to_i), word_ids))
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


# ---- entities: what NER is scored on ------------------------------------------------------------------------------


def bio_entities(tags, names=TAGS) -> list[tuple[str, int, int]]:
    """The entities of one BIO sequence as ``(type, first, last)`` (inclusive indices), in order.

    ``tags`` are tag ids (indices into ``names``) or tag strings.  The conlleval
    rules, which seqeval's default mode follows: an entity starts at ``B-X``, or
    at ``I-X`` after ``O`` or after an entity of another type, and continues over
    the ``I-X`` that follow.  So ``B-PER B-PER`` is two people, ``B-PER I-PER``
    one, and ``O I-LOC`` one place.
    """
    strings = [t if isinstance(t, str) else names[int(t)] for t in tags]
    entities, kind, first = [], None, None
    for i, tag in enumerate([*strings, "O"]):
        prefix, this = (tag[:2], tag[2:]) if tag != "O" else ("O", None)
        continues = prefix == "I-" and this == kind
        if kind is not None and not continues:
            entities.append((kind, first, i - 1))
            kind = None
        if prefix in ("B-", "I-") and not continues:
            kind, first = this, i
    return entities


def entity_f1(gold, predicted) -> dict[str, float]:
    """Micro precision, recall and F1 over entities, as seqeval micro-averages them.

    ``gold`` and ``predicted`` are lists (one per sentence) of entity lists
    such as ``bio_entities`` returns.  An entity counts as found only if its
    type and both ends match.  A predicted entity repeated (which happens once
    the fragments of a word's pieces are mapped back to word spans) counts as
    found once and as a false positive each further time, as its distinct
    pieces would in seqeval run over the pieces.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} sentences, predicted {len(predicted)}")
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, predicted):
        remaining = list(g)
        for entity in p:
            if entity in remaining:
                remaining.remove(entity)
                tp += 1
        n_gold, n_pred = n_gold + len(g), n_pred + len(p)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def decode_entities(pred, word_ids, reading: str = "first") -> list[list[tuple[str, int, int]]]:
    """Entities per sentence, as word spans, from predicted tag ids ``pred`` [batch, seq].

    ``word_ids`` [batch, seq] is ``encode_batch``'s (``-1`` for special tokens and padding).
    ``reading="first"``: the tag of each word's first piece, BIO-decoded over the words (what
    first-piece training supports; the pipeline's ``aggregation_strategy="first"``).
    ``reading="every"``: BIO-decoded over every piece of the sentence, each entity then mapped to the
    words its first and last pieces belong to (what training on every piece supports, and how
    ``run_ner.py`` scores a ``label_all_tokens`` model: seqeval over every labelled piece).
    """
    if reading not in ("first", "every"):
        raise ValueError(f"reading must be 'first' or 'every', got {reading!r}")
    out = []
    for tags, wids in zip(pred.tolist(), word_ids.tolist()):
        pieces = [(t, w) for t, w in zip(tags, wids) if w >= 0]
        if reading == "first":
            word_tags = [t for i, (t, w) in enumerate(pieces) if i == 0 or w != pieces[i - 1][1]]
            out.append(bio_entities(word_tags))
        else:
            found = bio_entities([t for t, _ in pieces])
            out.append([(kind, pieces[a][1], pieces[b][1]) for kind, a, b in found])
    return out


def word_majority_tagger(sentences):
    """The baseline: each word's most frequent tag in ``sentences`` (ties: the lower tag id; unseen: ``O``).

    Returns a function ``tag(words) -> tag ids``: a count-based tagger that never reads the context.
    """
    counts: dict[str, list[int]] = {}
    for words, tags in sentences:
        for w, t in zip(words, tags):
            counts.setdefault(w, [0] * len(TAGS))[t] += 1
    best = {w: max(range(len(TAGS)), key=lambda k: (c[k], -k)) for w, c in counts.items()}
    return lambda words: [best.get(w, 0) for w in words]


def train_tagger(
    train_enc,
    val_enc,
    val_gold,
    *,
    vocab_size: int,
    reading: str,
    steps: int = 150,
    batch: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    eval_every: int = 25,
    device=None,
    desc: str = "tagger",
    progress: bool = True,
):
    """Train a ``TokenTagger(vocab_size, tags)`` with ``token_classification_loss`` on
    ``train_enc`` (from ``encode_batch``).

    Every ``eval_every`` steps the validation entity F1 (``val_enc`` decoded with ``reading``,
    against ``val_gold``) is logged as ``val_f1``; the returned model is the checkpoint with the
    best validation F1 (the earliest on ties): model selection never sees the test split.
    Returns ``(model, history, best_step)``.
    """
    from ..token_classification import token_classification_loss
    from ..train import train

    data_gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    num_tags = len(TAGS)
    model = TokenTagger(vocab_size, num_tags)

    def loss_fn(model, input_ids, labels):
        # logits [batch, seq, tags], labels [batch, seq]
        return token_classification_loss(model(input_ids), labels, num_tags)

    def get_batch(step):
        idx = torch.randint(0, len(train_enc["input_ids"]), (batch,), generator=data_gen)
        return train_enc["input_ids"][idx], train_enc["labels"][idx]

    def validate(model):
        pred = model(val_enc["input_ids"].to(next(model.parameters()).device)).argmax(-1).cpu()
        f1 = entity_f1(val_gold, decode_entities(pred, val_enc["word_ids"], reading))["f1"]
        return {"val_f1": f1}

    history = train(
        model,
        loss_fn,
        get_batch,
        steps=steps,
        lr=lr,
        device=device,
        eval_fn=validate,
        eval_every=eval_every,
        progress=progress,
        desc=desc,
        keep_best="val_f1",  # the best validation checkpoint (earliest on ties), loaded back
    )
    return model, history, history.best_step


# ---- exercise checks: print a verdict only ------------------------------------------------------------------------

_CHECK_WORD_IDS = [
    [None, 0, 1, 1, 1, 2, None],
    [None, 0, 0, 0, 1, 2, 2, 3, None, None],
    [None, 0, 1, 2, 3, 3, 4, None],
]


def check_aligner(name: str, fn) -> None:
    """Exercise check: ``fn(word_labels, word_ids)`` must label every piece, ``B-`` turned into ``I-``.

    Runs ``fn`` on generated sentences and a few hand-made word-id patterns and prints only a verdict.
    """
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    tokenizer = SubwordTokenizer(all_words())
    trials = [(tags, tokenizer(words)[1]) for words, tags in make_tagged_sentences(40, seed=11)]
    trials += [
        ([1, 2, 0], _CHECK_WORD_IDS[0]),
        ([3, 4, 0, 1], _CHECK_WORD_IDS[1]),
        ([0, 3, 1, 2, 0], _CHECK_WORD_IDS[2]),
    ]
    wrong = 0
    for tags, word_ids in trials:
        try:
            got = [int(x) for x in fn(list(tags), list(word_ids))]
        except Exception as err:  # noqa: BLE001 - a reader's function may raise anything
            print_verdict(f"{name}: not yet ({type(err).__name__}: {err})", False)
            return
        wrong += got != align_labels(tags, word_ids, label_all_tokens=True)
    verdict = "correct" if wrong == 0 else "not yet"
    print_verdict(f"{name}: {verdict} ({len(trials) - wrong} of {len(trials)} sentences aligned as expected)",
                  wrong == 0)


def check_entity_decoder(name: str, fn) -> None:
    """Exercise check: ``fn(tags)`` (tag strings) must return ``bio_entities``'s ``(type, first, last)`` list."""
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    rng = random.Random(5)
    trials = [[TAGS[t] for t in tags] for _, tags in make_tagged_sentences(30, seed=12)]
    trials += [[rng.choice(TAGS) for _ in range(rng.randint(1, 9))] for _ in range(200)]  # ill-formed BIO too
    wrong = 0
    for tags in trials:
        try:
            got = [tuple(e) for e in fn(list(tags))]
        except Exception as err:  # noqa: BLE001
            print_verdict(f"{name}: not yet ({type(err).__name__}: {err})", False)
            return
        wrong += got != bio_entities(tags)
    verdict = "correct" if wrong == 0 else "not yet"
    print_verdict(f"{name}: {verdict} ({len(trials) - wrong} of {len(trials)} tag sequences decoded as "
                  "expected)", wrong == 0)


def _average_word_tags(logits: torch.Tensor, word_ids) -> list[int]:
    """The check's reference: each word's pieces' softmax probabilities averaged, then the most probable tag."""
    probs = torch.softmax(logits.detach().double(), dim=-1)  # [seq, C]
    words = sorted({w for w in word_ids if w is not None})
    return [int(probs[[i for i, w in enumerate(word_ids) if w == k]].mean(0).argmax()) for k in words]


def _word_tag_trials() -> list[tuple[torch.Tensor, list]]:
    """Sentences with random piece logits, some padded with trailing ``None``; no near-tie of averaged scores."""
    tokenizer = SubwordTokenizer(all_words())
    g = torch.Generator().manual_seed(13)
    patterns = [tokenizer(words)[1] for words, _ in make_tagged_sentences(60, seed=14)]
    patterns += [[None, 0, None], [None, 0, 0, 0, 0, None, None, None], [None, 0, 1, 1, 2, 2, 2, None, None]]
    trials = []
    for i, word_ids in enumerate(patterns):
        word_ids = word_ids + [None] * (i % 3)  # padding after [SEP] in a batch
        while True:
            logits = 3 * torch.randn(len(word_ids), len(TAGS), generator=g)  # [seq, C]
            probs = torch.softmax(logits.double(), -1)
            tops = [probs[[j for j, w in enumerate(word_ids) if w == k]].mean(0).topk(2).values
                    for k in sorted({w for w in word_ids if w is not None})]
            if all(float(t[0] - t[1]) > 1e-3 for t in tops):  # an answer's float32 rounding cannot flip a tag
                break
        trials.append((logits, word_ids))
    return trials


def check_word_tags(name: str, fn) -> None:
    """Exercise check: ``fn(logits, word_ids)`` must give one tag per word, the pipeline's ``"average"`` strategy.

    ``logits`` [seq, C] are one sentence's piece logits, ``word_ids`` the tokenizer's (``None`` for special tokens
    and padding).  Runs ``fn`` on generated sentences with random logits and on hand-made word-id patterns; prints
    only a verdict.
    """
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    trials = _word_tag_trials()
    wrong = 0
    for logits, word_ids in trials:
        try:
            got = [int(x) for x in fn(logits.clone(), list(word_ids))]
        except Exception as err:  # noqa: BLE001 - a reader's function may raise anything
            print_verdict(f"{name}: not yet ({type(err).__name__}: {err})", False)
            return
        wrong += got != _average_word_tags(logits, word_ids)
    verdict = "correct" if wrong == 0 else "not yet"
    print_verdict(f"{name}: {verdict} ({len(trials) - wrong} of {len(trials)} sentences tagged as expected)",
                  wrong == 0)


def check_logit_gradient(name: str, fn) -> None:
    """Exercise check: ``fn(logits, labels, num_items_in_batch=None)`` must return the gradient of
    ``token_classification_loss`` with respect to ``logits`` in closed form.

    Runs ``fn`` under ``torch.no_grad()`` on tokenized batches of different lengths (first-piece and every-piece
    labels, with and without a count, as an ``int`` and a tensor) and compares with autograd; prints only a verdict.
    """
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    from ..bugzoo.token_classification import token_classification_cases
    from ..token_classification import token_classification_loss

    tokenizer = SubwordTokenizer(all_words())
    g = torch.Generator().manual_seed(4)
    batches = [(c["logits"], c["labels"]) for c in token_classification_cases(seed=4)]
    every = encode_batch(make_tagged_sentences(3, seed=44), tokenizer, label_all_tokens=True)["labels"]
    batches.append((3 * torch.randn(*every.shape, len(TAGS), generator=g), every))
    batches.append((torch.randn(1, 4, len(TAGS), generator=g), torch.tensor([[-100, 2, -100, 0]])))
    trials = [(z, y, count) for z, y in batches for count in (None, int((y != -100).sum()) + 7)]
    trials.append((batches[0][0], batches[0][1], torch.tensor(50)))
    wrong = 0
    for logits, labels, count in trials:
        leaf = logits.detach().clone().requires_grad_(True)
        token_classification_loss(leaf, labels, logits.shape[-1], num_items_in_batch=count).backward()
        try:
            with torch.no_grad():
                got = fn(logits.detach().clone(), labels.clone(), num_items_in_batch=count)
            got = torch.as_tensor(got, dtype=torch.float64)
        except Exception as err:  # noqa: BLE001 - a reader's function may raise anything
            print_verdict(f"{name}: not yet ({type(err).__name__}: {err})", False)
            return
        wrong += got.shape != leaf.shape or not torch.allclose(got, leaf.grad.double(), rtol=0, atol=1e-6)
    verdict = "correct" if wrong == 0 else "not yet"
    print_verdict(f"{name}: {verdict} ({len(trials) - wrong} of {len(trials)} batches agree with autograd)",
                  wrong == 0)


def first_piece_tags(pred, word_ids, names=TAGS) -> list[list[str]]:
    """Each sentence's word tags as strings, read at each word's first piece: the sequences
    :func:`decode_entities` (``reading="first"``) decodes, in the form seqeval takes."""
    out = []
    for tags, wids in zip(pred.tolist(), word_ids.tolist()):
        pieces = [(t, w) for t, w in zip(tags, wids) if w >= 0]
        out.append([names[t] for i, (t, w) in enumerate(pieces) if i == 0 or w != pieces[i - 1][1]])
    return out
