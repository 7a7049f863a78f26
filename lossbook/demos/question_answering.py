"""Chapter 06's demo: a synthetic span-extraction task, a tiny convolutional reader, SQuAD v2 scoring, the head map.

The task (no download): a question ``Q_k`` about a document of filler words in which keys ``k`` appear
as a marker token ``K_k`` followed by its answer, a run of 1-``max_answer`` value tokens closed by a full
stop.  The gold span is the run after ``K_k``; a third of the questions ask about a key the document does
not hold (no answer, as in SQuAD v2).  As in real QA pipelines the document is longer than the model's
window: ``make_span_questions`` cuts it into overlapping windows ``[CLS] Q_k [SEP] context...`` as the
Hugging Face examples do (``run_qa.py``'s ``prepare_train_features``: ``max_length``, ``doc_stride``),
so many windows do not hold the answer.  ``window_labels`` gives them their training labels: the
recipe's ``[CLS]`` position 0 for start and end ("no answer in this window"), or positions past the
window, which the loss ignores.  ``predict_answers`` and ``squad_v2_scores`` score each *question* over
its windows, as ``utils_qa.py``'s ``postprocess_qa_predictions`` and the SQuAD v2 metric do.
``make_span_data`` is the one-window version (the document cut once), used by the exercises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SpanVocab",
    "make_span_data",
    "SpanQuestions",
    "make_span_questions",
    "SpanReader",
    "best_spans",
    "window_labels",
    "predict_spans",
    "predict_answers",
    "squad_v2_scores",
    "train_reader",
    "loss_type",
    "question_answering_cases", "check_recipe_positions", "check_start_grad",  # the last two: the exercises
]


@dataclass(frozen=True)
class SpanVocab:
    """Token ids of the synthetic task: specials, then questions, markers, values and filler words."""

    keys: int = 4
    values: int = 12
    fillers: int = 16

    PAD, CLS, SEP, STOP = 0, 1, 2, 3

    def question(self, k: int) -> int:
        return 4 + k

    def marker(self, k: int) -> int:
        return 4 + self.keys + k

    @property
    def first_value(self) -> int:
        return 4 + 2 * self.keys

    @property
    def first_filler(self) -> int:
        return self.first_value + self.values

    @property
    def size(self) -> int:
        return self.first_filler + self.fillers

    def name(self, token: int) -> str:
        """A readable name for a token id (for printing examples)."""
        specials = {self.PAD: "[PAD]", self.CLS: "[CLS]", self.SEP: "[SEP]", self.STOP: "."}
        if token in specials:
            return specials[token]
        if token < 4 + self.keys:
            return f"Q{token - 4}"
        if token < self.first_value:
            return f"K{token - 4 - self.keys}"
        if token < self.first_filler:
            return f"v{token - self.first_value}"
        return f"w{token - self.first_filler}"


def _document(vocab: SpanVocab, document: int, max_answer: int, g: torch.Generator, answerable: bool = True):
    """One question and its document: ``([CLS] Q_k [SEP] doc...)`` as a list of ``document + 3`` ids, and the gold
    ``(start, end)`` in it (inclusive), ``(0, 0)`` when the asked key is not in the document."""
    block = max_answer + 2  # marker + answer + stop
    doc = (vocab.first_filler + torch.randint(0, vocab.fillers, (document,), generator=g)).tolist()
    # non-overlapping slots for the key blocks, in random order
    shift = int(torch.randint(0, block, (1,), generator=g))  # so the window edge cuts blocks anywhere
    slots = torch.randperm((document - shift) // block, generator=g)[: vocab.keys].tolist()
    if not slots:
        raise ValueError(f"document ({document}) is too short for one key block of {block} tokens")
    # ask about a key that was placed (a short document holds fewer blocks than there are keys)
    asked = int(torch.randint(0, len(slots), (1,), generator=g))
    start = end = 0
    for k, slot in enumerate(slots):
        if k == asked and not answerable:
            continue  # the asked key's slot stays filler: no answer in the document
        length = int(torch.randint(1, max_answer + 1, (1,), generator=g))
        at = shift + slot * block + int(torch.randint(0, block - length - 1, (1,), generator=g))
        answer = (vocab.first_value + torch.randint(0, vocab.values, (length,), generator=g)).tolist()
        doc[at : at + length + 2] = [vocab.marker(k), *answer, vocab.STOP]
        if k == asked:
            start, end = 3 + at + 1, 3 + at + length  # +3 for [CLS] Q [SEP]
    return [vocab.CLS, vocab.question(asked), vocab.SEP, *doc], start, end


def make_span_data(
    n: int,
    *,
    seq: int = 32,
    document: int = 36,
    max_answer: int = 3,
    vocab: SpanVocab | None = None,
    generator: torch.Generator | None = None,
):
    """``n`` one-window examples: token ids ``[n, seq]`` and gold ``start, end`` ``[n]`` each (inclusive).

    The document (``document`` tokens after ``[CLS] Q_k [SEP]``) is cut to the window of ``seq`` tokens;
    an answer cut off keeps its document positions, which are >= ``seq``.  Every question is answerable.
    """
    vocab = vocab or SpanVocab()
    if document + 3 < seq:
        raise ValueError(f"document ({document}) + 3 must be at least seq ({seq})")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    ids = torch.empty(n, document + 3, dtype=torch.long)  # [n, full length]
    starts = torch.empty(n, dtype=torch.long)
    ends = torch.empty(n, dtype=torch.long)
    for i in range(n):
        row, starts[i], ends[i] = _document(vocab, document, max_answer, g)
        ids[i] = torch.tensor(row)
    return ids[:, :seq].contiguous(), starts, ends  # [n, seq], [n], [n]


@dataclass(frozen=True)
class SpanQuestions:
    """Questions cut into windows, as ``prepare_train_features`` / ``prepare_validation_features`` do.

    Per window (``w`` of them, each question's windows in a row): ``ids`` [w, seq]; ``question`` [w], the
    question it belongs to; ``offset`` [w], where its context starts in the document (window position
    ``t >= 3`` is document position ``offset + t``); ``starts, ends`` [w], the answer's window positions,
    ``-1`` when the window does not hold the whole answer.  Per question (``n``): ``gold_starts, gold_ends``
    [n], document positions, ``(0, 0)`` for a question without an answer (SQuAD v2's empty answer).
    """

    ids: torch.Tensor
    question: torch.Tensor
    offset: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor
    gold_starts: torch.Tensor
    gold_ends: torch.Tensor

    @property
    def seq(self) -> int:
        return self.ids.shape[1]

    def __len__(self) -> int:
        return len(self.gold_starts)


def make_span_questions(
    n: int,
    *,
    seq: int = 32,
    document: int = 45,
    stride: int = 16,
    unanswerable: float = 1 / 3,
    max_answer: int = 3,
    vocab: SpanVocab | None = None,
    generator: torch.Generator | None = None,
) -> SpanQuestions:
    """``n`` questions, each about a document of ``document`` tokens cut into windows of ``seq`` tokens.

    A window is ``[CLS] Q_k [SEP]`` and ``seq - 3`` context tokens; consecutive windows start ``stride``
    tokens apart, the last one ends with the document (so every answer lies whole in at least one window:
    ``seq - 3 - stride >= max_answer`` tokens overlap).  A share ``unanswerable`` of the questions ask
    about a key the document does not hold.  Returns a :class:`SpanQuestions`.
    """
    vocab = vocab or SpanVocab()
    context = seq - 3
    if document < context or not 0 < stride <= context - max_answer:
        raise ValueError(f"need document ({document}) >= seq - 3 ({context}) and 0 < stride ({stride}) <= "
                         f"seq - 3 - max_answer ({context - max_answer}): every answer whole in some window")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    offsets = [*range(0, document - context, stride), document - context]  # window starts in the context
    rows, question, offset, starts, ends, gold = [], [], [], [], [], []
    for i in range(n):
        answerable = bool(torch.rand((), generator=g) >= unanswerable)
        full, s, e = _document(vocab, document, max_answer, g, answerable)
        gold.append((s, e))
        for o in offsets:
            rows.append(full[:3] + full[3 + o : 3 + o + context])
            inside = answerable and o + 3 <= s and e < o + seq  # the whole answer in this window
            starts.append(s - o if inside else -1)
            ends.append(e - o if inside else -1)
            question.append(i)
            offset.append(o)
    gold_starts, gold_ends = torch.tensor(gold, dtype=torch.long).reshape(n, 2).unbind(-1)
    return SpanQuestions(torch.tensor(rows), torch.tensor(question), torch.tensor(offset), torch.tensor(starts),
                         torch.tensor(ends), gold_starts.contiguous(), gold_ends.contiguous())


class SpanReader(nn.Module):
    """A tiny convolutional reader: token embeddings conditioned on the question, two convolutions,
    a 2-way head.

    Every token sees its own embedding h_t, the question token's embedding q (position 1) and their
    product h_t * q (how well this token matches the question); two 1-d convolutions of ``width``
    tokens let it see its neighbours (the marker before an answer, the full stop after it).
    ``forward(ids [batch, seq]) -> (start_logits [batch, seq], end_logits [batch, seq])``, split
    from one ``[batch, seq, 2]`` projection as ``BertForQuestionAnswering`` does.
    """

    def __init__(self, vocab_size: int, hidden: int = 32, width: int = 9, question_at: int = 1):
        super().__init__()
        self.question_at = question_at
        self.tokens = nn.Embedding(vocab_size, hidden)
        self.conv1 = nn.Conv1d(3 * hidden, hidden, width, padding=width // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, width, padding=width // 2)
        self.qa_outputs = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.tokens(ids)  # [batch, seq, hidden]
        q = h[:, self.question_at : self.question_at + 1].expand_as(h)  # [batch, seq, hidden]
        x = torch.cat([h, q, h * q], dim=-1).transpose(1, 2)  # [batch, 3*hidden, seq]
        x = F.gelu(self.conv1(x))  # [batch, hidden, seq]
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [batch, seq, hidden]
        logits = self.qa_outputs(x)  # [batch, seq, 2]
        start_logits, end_logits = logits.unbind(-1)  # [batch, seq] each
        return start_logits.contiguous(), end_logits.contiguous()


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, max_answer: int = 30) -> torch.Tensor:
    """The span (s, e) with s <= e < s + max_answer that maximises start_logits[s] + end_logits[e].

    The usual SQuAD post-processing, on the whole window.  Returns Long[Tensor, "batch 2"].
    """
    seq = start_logits.shape[-1]
    scores = start_logits.unsqueeze(-1) + end_logits.unsqueeze(-2)  # [batch, seq(start), seq(end)]
    i = torch.arange(seq, device=start_logits.device)
    allowed = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer)  # [seq, seq]
    scores = scores.masked_fill(~allowed, float("-inf"))
    flat = scores.flatten(-2).argmax(-1)  # [batch]
    return torch.stack([flat // seq, flat % seq], dim=-1)  # [batch, 2]


def window_labels(starts, ends, seq: int, no_answer: str = "cls"):
    """Training labels for windows of ``seq`` tokens from the answer's window positions ``starts, ends`` [batch].

    A window holds the whole answer when ``0 <= start`` and ``end < seq`` (``-1``: it does not).  The
    others get, with ``no_answer="cls"`` (the Hugging Face recipe), ``(0, 0)``: the ``[CLS]`` token, "no
    answer here", which the loss trains the model to point at; with ``no_answer="ignore"``, ``(seq, seq)``:
    positions past the window, which ``question_answering_loss``'s clamp ignores, so those windows teach
    nothing (training on the windows with an answer only).  Returns ``(starts, ends)`` [batch] each (new
    tensors).
    """
    if no_answer not in ("cls", "ignore"):
        raise ValueError(f"no_answer must be 'cls' or 'ignore', got {no_answer!r}")
    starts, ends = starts.clone(), ends.clone()
    cut = (starts < 0) | (ends >= seq) | (starts >= seq)  # [batch]
    starts[cut] = ends[cut] = 0 if no_answer == "cls" else seq
    return starts, ends


def predict_spans(start_logits, end_logits, max_answer: int = 30, first: int = 3):
    """Each window's best span and its score, and its null score.

    The best span ``(s, e)`` with ``first <= s <= e < s + max_answer`` (``first``: the first context token;
    the question is not a candidate) maximises ``start_logits[s] + end_logits[e]``; the null score is
    ``start_logits[0] + end_logits[0]``, the ``[CLS]`` token's.  Returns ``(spans [batch, 2], span_score
    [batch], null_score [batch])``.
    """
    masked_s = start_logits.clone()
    masked_s[:, :first] = float("-inf")  # spans start in the context
    spans = best_spans(masked_s, end_logits, max_answer)  # [batch, 2]
    rows = torch.arange(len(spans), device=spans.device)
    span_score = start_logits[rows, spans[:, 0]] + end_logits[rows, spans[:, 1]]  # [batch]
    null_score = start_logits[:, 0] + end_logits[:, 0]  # [batch]
    return spans, span_score, null_score


def predict_answers(start_logits, end_logits, windows: SpanQuestions, max_answer: int = 30,
                    threshold: float = 0.0) -> torch.Tensor:
    """SQuAD v2 post-processing over a question's windows, as ``postprocess_qa_predictions`` does.

    The answer is the best-scoring span over all of a question's windows, in document positions; the
    question's null score is the *smallest* of its windows' null scores (every window must want "no
    answer"); "no answer", ``(0, 0)``, when the null score exceeds the best span's by more than
    ``threshold`` (``null_score_diff_threshold``, 0 by default).  ``start_logits, end_logits``:
    [windows, seq].  Returns Long[Tensor, "questions 2"], document positions.
    """
    spans, span_score, null_score = predict_spans(start_logits, end_logits, max_answer)
    device, n, w = spans.device, len(windows), len(spans)
    question = windows.question.to(device)  # [windows]
    per_question = torch.full((n,), -torch.inf, device=device)  # [n]
    best = per_question.scatter_reduce(0, question, span_score, "amax")  # the best span's score
    null = (-per_question).scatter_reduce(0, question, null_score, "amin")  # the smallest null
    at_best = torch.where(span_score == best[question], torch.arange(w, device=device), w)  # [w]
    window = torch.full((n,), w, device=device).scatter_reduce(0, question, at_best, "amin")  # [n]
    answers = spans[window] + windows.offset.to(device)[window, None]  # [n, 2] document positions
    return torch.where((null - best > threshold).unsqueeze(-1), torch.zeros_like(answers), answers)


def squad_v2_scores(pred, gold_starts, gold_ends) -> dict[str, float]:
    """SQuAD v2's exact match, per question: ``exact`` over all questions, ``HasAns_exact`` over the questions
    with an answer (the gold span), ``NoAns_exact`` over those without (the answer must be "no answer",
    ``(0, 0)``), as the official evaluation script names them.

    ``pred`` [n, 2] from ``predict_answers``; ``gold_starts, gold_ends`` [n] document positions, ``(0, 0)``
    for no answer.  Spans are compared by position (SQuAD compares the normalised text).
    """
    gold_starts, gold_ends = gold_starts.to(pred.device), gold_ends.to(pred.device)
    hit = ((pred[:, 0] == gold_starts) & (pred[:, 1] == gold_ends)).float()  # [n]
    has = gold_ends > 0  # [n]

    def mean(x):
        return float(x.mean()) if x.numel() else float("nan")

    return {"exact": mean(hit), "HasAns_exact": mean(hit[has]), "NoAns_exact": mean(hit[~has])}


def train_reader(
    windows: SpanQuestions,
    starts,
    ends,
    val: SpanQuestions,
    *,
    vocab_size: int,
    loss=None,
    steps: int = 300,
    batch: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    eval_every: int = 25,
    max_answer: int = 3,
    device=None,
    desc: str = "reader",
    progress: bool = True,
):
    """Train a ``SpanReader`` on the windows ``windows.ids`` [w, seq] with training labels ``starts, ends`` [w].

    ``loss`` is ``question_answering_loss`` unless given (a bug zoo loss, say).  Every ``eval_every`` steps
    the validation questions' SQuAD v2 scores are logged (``val_exact``, ``val_HasAns_exact``,
    ``val_NoAns_exact``) and the checkpoint with the best ``val_exact`` (earliest on ties) is returned: the
    test split is never used to choose.  Returns ``(model, history, best_step)``.
    """
    from ..question_answering import question_answering_loss
    from ..train import train

    loss = loss or question_answering_loss
    data_gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SpanReader(vocab_size, hidden=32)
    ids = windows.ids

    def loss_fn(model, x, s, e):
        start_logits, end_logits = model(x)  # [batch, seq] each
        return loss(start_logits, end_logits, s, e)  # []

    def get_batch(step):
        idx = torch.randint(0, len(ids), (batch,), generator=data_gen)
        return ids[idx], starts[idx], ends[idx]

    def validate(model):
        start_logits, end_logits = model(val.ids.to(next(model.parameters()).device))
        pred = predict_answers(start_logits, end_logits, val, max_answer)
        return {f"val_{k}": v for k, v in squad_v2_scores(pred, val.gold_starts, val.gold_ends).items()}

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
        keep_best="val_exact",  # the best validation checkpoint (earliest on ties), loaded back by train
    )
    return model, history, history.best_step


def loss_type(class_name: str, mapping) -> str | None:
    """The key of ``mapping`` that a model class of this name uses, by transformers' rule.

    ``PreTrainedModel.__init__`` takes the class name itself if it is a key, else the first match of
    the keys, tried in the map's order, anywhere in the name (``BertForQuestionAnswering`` ->
    ``"ForQuestionAnswering"``); None when nothing matches (transformers then falls back to
    ``"ForCausalLM"`` with a warning).
    """
    if class_name in mapping:
        return class_name
    found = re.findall("(" + "|".join(mapping) + ")", class_name)
    return found[0] if found else None


def question_answering_cases(seed: int = 0, *, dtype=torch.float32) -> list[dict]:
    """Inputs for ``question_answering_loss``-shaped functions, for ``checks.compare_losses``.

    Batch 1 and length 1, positions ``[batch]`` and ``[batch, 1]``, out-of-window positions (start
    and end kept in different numbers), negative positions.  Every configuration appears twice, once
    with ``start_logits`` first and once with ``end_logits`` first, since ``compare_losses``
    differentiates with respect to a case's first tensor: so both heads' gradients are compared.
    """
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, column in [(6, 9, False), (1, 5, False), (5, 1, False), (4, 7, True), (8, 12, False)]:
        start_logits = (3 * torch.randn(batch, seq, generator=g)).to(dtype)
        end_logits = (3 * torch.randn(batch, seq, generator=g)).to(dtype)
        starts = torch.randint(0, seq, (batch,), generator=g)
        ends = torch.randint(0, seq, (batch,), generator=g)
        if batch > 1:
            ends[0] = seq + 3  # cut off: ignored for the end head only
            starts[-1] = -2  # negative: clamped to 0 and scored
        if column:
            starts, ends = starts.unsqueeze(-1), ends.unsqueeze(-1)  # [batch, 1]
        case = {
            "start_logits": start_logits,
            "end_logits": end_logits,
            "start_positions": starts,
            "end_positions": ends,
        }
        cases.append(case)
        cases.append({"end_logits": end_logits, **{k: v for k, v in case.items() if k != "end_logits"}})
    return cases


# --- the exercises' checks: each prints a verdict only (never the answer or how far off it is) -----------------


def _print_verdict(text: str, passed: bool) -> None:
    from ..checks import print_verdict

    print_verdict(text, passed)


def check_recipe_positions(fn, name: str = "exercise 1") -> None:
    """Exercise: ``fn(start, end, seq)`` -> ``(start, end)``, the recipe's training positions for a window of
    ``seq`` tokens (ints in, ints out): compared with :func:`window_labels` on 300 windows of the chapter's data
    and the edges (a negative start, an answer ending on the last token, ending one past it, starting past it,
    the ``[CLS]`` answer ``(0, 0)``), for windows of 16 and of 10 tokens."""
    if fn is Ellipsis:
        return _print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
    cases, g = [], torch.Generator().manual_seed(1)
    for seq, document in ((16, 30), (10, 24)):
        _, starts, ends = make_span_data(300 if seq == 16 else 100, seq=seq, document=document, generator=g)
        pairs = list(zip(starts.tolist(), ends.tolist()))
        pairs += [(-1, 2), (seq - 1, seq - 1), (seq - 1, seq), (seq, seq + 1), (0, 0), (2, seq + 4)]
        cases += [(s, e, seq) for s, e in pairs]
    for s, e, seq in cases:
        want = tuple(int(t) for t in window_labels(torch.tensor([s]), torch.tensor([e]), seq))
        try:
            got = tuple(int(t) for t in fn(s, e, seq))
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            return _print_verdict(f"{name}: not yet: your function raised {type(err).__name__}: {err} "
                                  "(it is called as fn(start, end, seq) and must return two ints)", False)
        if got != want:
            return _print_verdict(f"{name}: not yet (some windows get the wrong training positions)", False)
    _print_verdict(f"{name}: correct ({len(cases)} windows of 16 and 10 tokens, the edges included)", True)


def check_start_grad(fn, name: str = "exercise 2") -> None:
    """Exercise: ``fn(start_logits, start_positions)`` -> Float[batch, seq], the gradient of
    ``question_answering_loss`` with respect to ``start_logits``, written without autograd.  Compared (float64,
    atol 1e-9) with autograd through the loss on batches with cut-off answers (ignored), negative positions
    (scored at ``[CLS]``), batch 1 and a window of one token; the answer is called on detached logits."""
    from ..question_answering import question_answering_loss

    if fn is Ellipsis:
        return _print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
    g = torch.Generator().manual_seed(6)
    batches = []
    for batch, seq in ((6, 9), (1, 5), (4, 1), (10, 7), (3, 4)):
        starts = torch.randint(0, seq, (batch,), generator=g)
        if batch > 1:
            starts[0], starts[-1] = seq + 2, -1  # cut off: ignored; negative: scored at [CLS]
        if batch >= 6:
            starts[1] = seq  # one past the last token: ignored too
        batches.append(((3 * torch.randn(batch, seq, generator=g, dtype=torch.float64)), starts))
    for logits, starts in batches:
        leaf = logits.clone().requires_grad_(True)
        end_logits = torch.randn(logits.shape, generator=g, dtype=torch.float64)
        ends = torch.randint(0, logits.shape[1], starts.shape, generator=g)
        question_answering_loss(leaf, end_logits, starts, ends).backward()
        try:
            got = torch.as_tensor(fn(logits.clone(), starts.clone())).detach().to(torch.float64)
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            return _print_verdict(f"{name}: not yet: your function raised {type(err).__name__}: {err} "
                                  "(it is called as fn(start_logits, start_positions))", False)
        if got.shape != leaf.shape:
            return _print_verdict(f"{name}: not yet: return one gradient per logit, shape {list(leaf.shape)} "
                                  f"(got {list(got.shape)})", False)
        if not torch.allclose(got, leaf.grad, rtol=0, atol=1e-9):
            return _print_verdict(f"{name}: not yet (differs from autograd on some batches)", False)
    _print_verdict(f"{name}: correct (equals autograd on {len(batches)} batches, cut-off and negative "
                   "positions included)", True)
