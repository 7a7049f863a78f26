"""Chapter 03's demo: a tiny character-level encoder learns to fill in masked characters of nursery rhymes.

The held-out set is made of whole rhymes the model never sees in training (every ``held_out_every``-th
rhyme), masked once with a fixed seed, so the reported accuracy is on unseen text and never changes
between evaluations.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..checks import print_verdict
from ..masked_lm import Masking, mask_tokens
from ..selection import KeepBest  # re-exported: chapter 03's demo selects its checkpoint with it
from ..text import CharTokenizer, load_text, random_windows

__all__ = ["RhymeSplit", "split_rhymes", "RhymeSplits", "split_rhymes_three_way", "mlm_batch", "EvalSet",
           "make_eval_set", "masked_accuracy", "shown_fates", "accuracy_by_fate", "majority_baseline",
           "context_count_baseline", "unigram_entropy", "KeepBest", "check_mask_share", "check_expected_scored",
           "check_whole_word_labels", "check_input_fates", "eval_fates", "fill_masks", "loss_cases", "masking_cases",
           "transformers_collator"]


class RhymeSplit(NamedTuple):
    tokenizer: CharTokenizer
    train_ids: torch.Tensor  # Long[Tensor, "chars"]
    held_out_ids: torch.Tensor  # Long[Tensor, "chars"]
    held_out_rhymes: list[str]


def split_rhymes(held_out_every: int = 6, offset: int = 3, name: str = "nursery_rhymes") -> RhymeSplit:
    """Split the shipped text into rhymes (blank-line separated); every ``held_out_every``-th one is held out.

    The tokenizer is built on the whole text, so both halves share one vocabulary.
    """
    text = load_text(name)
    rhymes = text.strip().split("\n\n")
    held = [r for i, r in enumerate(rhymes) if i % held_out_every == offset]
    kept = [r for i, r in enumerate(rhymes) if i % held_out_every != offset]
    tok = CharTokenizer(text)
    return RhymeSplit(tok, tok.encode("\n\n".join(kept)), tok.encode("\n\n".join(held)), held)


class RhymeSplits(NamedTuple):
    tokenizer: CharTokenizer
    train_ids: torch.Tensor  # Long[Tensor, "chars"]
    validation_ids: torch.Tensor  # Long[Tensor, "chars"]
    test_ids: torch.Tensor  # Long[Tensor, "chars"]


def split_rhymes_three_way(every: int = 6, validation_offset: int = 0, test_offset: int = 3,
                           name: str = "nursery_rhymes") -> RhymeSplits:
    """Whole rhymes for training, validation (model selection) and test (the report), never shared.

    Rhyme ``i`` goes to validation when ``i % every == validation_offset``, to test when
    ``i % every == test_offset`` (the held-out rhymes of :func:`split_rhymes`), to training otherwise.
    """
    if validation_offset == test_offset:
        raise ValueError(f"validation_offset and test_offset must differ, got {validation_offset} for both")
    text = load_text(name)
    rhymes = text.strip().split("\n\n")
    tok = CharTokenizer(text)

    def join(keep) -> torch.Tensor:
        return tok.encode("\n\n".join(r for i, r in enumerate(rhymes) if keep(i % every)))

    return RhymeSplits(tok, join(lambda k: k not in (validation_offset, test_offset)),
                       join(lambda k: k == validation_offset), join(lambda k: k == test_offset))


def mlm_batch(ids: torch.Tensor, tokenizer: CharTokenizer, batch_size: int, length: int,
              generator: torch.Generator, mlm_probability: float = 0.15, score_every_position: bool = False):
    """``batch_size`` random windows of ``ids``, masked: ``(inputs, labels)``, each Long[Tensor, "batch length"].

    ``score_every_position=True`` is the bug of :func:`lossbook.bugzoo.masked_lm.scores_every_position`, for
    the chapter's demo: the same masked inputs, but the labels are the original ids at *every* position
    (never ``-100``), so most scored positions show their answer in the input.
    """
    windows = random_windows(ids, batch_size, length, generator)  # [batch, length]
    inputs, labels = mask_tokens(windows, tokenizer.mask_id, tokenizer.vocab_size, mlm_probability,
                                 special_ids=tokenizer.special_ids, generator=generator)
    if score_every_position:
        labels = windows.clone()  # [batch, length]: the bug, every position scored
    return inputs, labels


class EvalSet(NamedTuple):
    inputs: torch.Tensor  # Long[Tensor, "windows length"]
    labels: torch.Tensor  # Long[Tensor, "windows length"]
    masking: Masking
    mask_token_id: int


def make_eval_set(ids: torch.Tensor, tokenizer: CharTokenizer, length: int, repeats: int = 8, seed: int = 123,
                  mlm_probability: float = 0.15) -> EvalSet:
    """Cut ``ids`` into consecutive windows of ``length``, repeat them ``repeats`` times, mask them once (seeded).

    Repeats give every held-out character several chances to be selected, so the accuracy rests on
    about ``repeats * mlm_probability * len(ids)`` scored characters.
    """
    n = ids.numel() // length
    windows = ids[: n * length].view(n, length).repeat(repeats, 1)  # [repeats * n, length]
    generator = torch.Generator().manual_seed(seed)
    inputs, labels, masking = mask_tokens(windows, tokenizer.mask_id, tokenizer.vocab_size, mlm_probability,
                                          special_ids=tokenizer.special_ids, generator=generator,
                                          return_masking=True)
    return EvalSet(inputs, labels, masking, tokenizer.mask_id)


@torch.no_grad()
def masked_accuracy(model, eval_set: EvalSet, where: str = "<mask>", batch_size: int = 256) -> float:
    """Share of the scored characters the model's argmax gets right.

    ``where="<mask>"``: only positions whose input is the mask token (the fill-in task, nothing visible);
    ``where="scored"``: every position with a label (the random and unchanged ones too).
    """
    keep = {"<mask>": eval_set.masking.replaced, "scored": eval_set.masking.selected}[where]  # [windows, length]
    preds = _predictions(model, eval_set, batch_size)  # [windows, length]
    return float((preds[keep] == eval_set.labels[keep]).float().mean())


@torch.no_grad()
def _predictions(model, eval_set: EvalSet, batch_size: int) -> torch.Tensor:
    """The model's argmax at every position of ``eval_set.inputs`` [windows, length], in eval mode (restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds = torch.cat([model(chunk.to(device)).argmax(-1).cpu()  # [chunk, length]
                       for chunk in eval_set.inputs.split(batch_size)])
    model.train(was_training)
    return preds


def shown_fates(masking: Masking, input_ids: torch.Tensor, mask_token_id: int) -> dict[str, torch.Tensor]:
    """The scored positions split by what the corrupted input shows there (Bool[Tensor, "batch seq"] each).

    ``"<mask>"``: the mask token (``replaced``, or a random draw that hit the mask token); ``"wrong"``: a token
    other than the original (a random draw of another token); ``"right"``: the original token (``unchanged``, or a
    random draw that hit the original).  Computed from the :class:`Masking` and the original ``input_ids``.
    """
    drawn = masking.random_ids if masking.random_ids is not None else torch.full_like(input_ids, -1)
    drew_mask = masking.randomized & (drawn == mask_token_id)
    drew_original = masking.randomized & (drawn == input_ids)
    return {"<mask>": masking.replaced | drew_mask,
            "wrong": masking.randomized & ~drew_mask & ~drew_original,
            "right": masking.unchanged | drew_original}


def eval_fates(eval_set: EvalSet) -> dict[str, torch.Tensor]:
    """:func:`shown_fates` of an :class:`EvalSet`: its scored positions by what their input shows."""
    original = torch.where(eval_set.labels != -100, eval_set.labels, eval_set.inputs)  # [windows, length]
    return shown_fates(eval_set.masking, original, eval_set.mask_token_id)


@torch.no_grad()
def accuracy_by_fate(model, eval_set: EvalSet, batch_size: int = 256) -> dict[str, float]:
    """Held-out accuracy split by what the input shows at the scored position (one forward pass).

    ``"<mask>"``, ``"wrong"``, ``"right"`` (see :func:`shown_fates`): share of those positions whose argmax is
    the original token; ``"wrong: copies it"``: share of the ``"wrong"`` positions whose argmax is the wrong
    token the input shows, i.e. how often the model believes a corrupted input.
    """
    preds = _predictions(model, eval_set, batch_size)  # [windows, length]
    labels = eval_set.labels
    fates = eval_fates(eval_set)
    out = {name: float((preds[keep] == labels[keep]).float().mean()) for name, keep in fates.items()}
    wrong = fates["wrong"]
    out["wrong: copies it"] = float((preds[wrong] == eval_set.inputs[wrong]).float().mean())
    return out


def context_count_baseline(train_ids: torch.Tensor, eval_set: EvalSet, where: str = "<mask>") -> float:
    """Accuracy of a count model that sees one character on each side (no network), at the ``where`` positions.

    ``where``: ``"<mask>"`` or ``"wrong"`` (the positions whose input shows a wrong token, :func:`shown_fates`);
    the model never reads the position's own input, so a wrong token there cannot mislead it.

    For a masked position with input neighbours ``(left, right)``, it answers the character that most often
    sits between ``left`` and ``right`` in the training text; if that pair never occurs, the most frequent
    character after ``left``, then before ``right``, then overall.  The honest baseline for a character
    model that fills in blanks: what counting local context alone achieves.
    """
    from collections import Counter, defaultdict

    ids = train_ids.tolist()
    between, after, before = defaultdict(Counter), defaultdict(Counter), defaultdict(Counter)
    for a, b, c in zip(ids, ids[1:], ids[2:]):
        between[(a, c)][b] += 1
    for a, b in zip(ids, ids[1:]):
        after[a][b] += 1
        before[b][a] += 1
    overall = Counter(ids).most_common(1)[0][0]

    def guess(left, right):
        for table, key in ((between, (left, right)), (after, left), (before, right)):
            if key in table:
                return table[key].most_common(1)[0][0]
        return overall

    if where not in ("<mask>", "wrong"):
        raise ValueError(f"where must be '<mask>' or 'wrong', got {where!r}")
    inputs, labels, keep = eval_set.inputs.tolist(), eval_set.labels, eval_fates(eval_set)[where]
    hits = total = 0
    for row, t in keep.nonzero().tolist():
        left = inputs[row][t - 1] if t > 0 else None
        right = inputs[row][t + 1] if t + 1 < len(inputs[row]) else None
        hits += guess(left, right) == int(labels[row, t])
        total += 1
    return hits / total


def unigram_entropy(train_ids: torch.Tensor) -> float:
    """Entropy (nats) of the training characters' frequencies: the loss of a model that knows only them.

    A model that predicts the unigram distribution q everywhere has cross-entropy H(q, q) = H(q) on text
    drawn like the training text; any other context-free prediction p pays H(q, p) = H(q) + KL(q || p).
    """
    counts = torch.bincount(train_ids).double()
    q = counts[counts > 0] / counts.sum()
    return float(-(q * q.log()).sum())


def majority_baseline(train_ids: torch.Tensor, eval_set: EvalSet, where: str = "<mask>") -> tuple[int, float]:
    """The most frequent training token and its accuracy on ``eval_set``: what a model that ignores context gets."""
    keep = {"<mask>": eval_set.masking.replaced, "scored": eval_set.masking.selected}[where]
    majority = int(torch.bincount(train_ids).argmax())
    return majority, float((eval_set.labels[keep] == majority).float().mean())


@torch.no_grad()
def fill_masks(model, tokenizer: CharTokenizer, text: str, positions, k: int = 3):
    """Replace the characters of ``text`` at ``positions`` by <mask>; the model's top-``k`` guesses for each.

    Returns ``(masked_text, rows)``, each row ``(position, true_char, [(char, probability), ...])``.
    """
    ids = tokenizer.encode(text)  # [seq]
    inputs = ids.clone()
    inputs[list(positions)] = tokenizer.mask_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs = model(inputs[None].to(device))[0].float().softmax(-1).cpu()  # [seq, vocab]
    model.train(was_training)
    rows = []
    for pos in positions:
        top = probs[pos].topk(k)
        rows.append((pos, text[pos], [(tokenizer.vocab[i], float(p)) for p, i in zip(top.values, top.indices)]))
    masked_text = "".join("_" if i in set(positions) else c for i, c in enumerate(text))
    return masked_text, rows


def loss_cases(seed: int = 0, dtype=torch.float32) -> list[dict]:
    """Inputs for ``masked_lm_loss``-shaped functions: ``logits`` [batch, seq, vocab], ``labels`` [batch, seq].

    15% of the labels kept (as after masking), batch 1, length 1, one row with no kept label, logits near +-100.
    """
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab in [(2, 7, 11), (1, 1, 5), (1, 16, 3), (4, 9, 29)]:
        logits = (3 * torch.randn(batch, seq, vocab, generator=g)).to(dtype)
        labels = torch.randint(0, vocab, (batch, seq), generator=g)
        labels[torch.rand(batch, seq, generator=g) > 0.15] = -100
        labels.view(-1)[0] = int(torch.randint(0, vocab, (1,), generator=g))  # at least one kept label
        if batch > 1:
            labels[-1] = -100  # a row with nothing to score
        cases.append({"logits": logits, "labels": labels})
    extreme = torch.tensor([[[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0]]], dtype=dtype)  # [1, 2, 3]
    cases.append({"logits": extreme, "labels": torch.tensor([[1, 0]])})
    return cases


def masking_cases(tokenizer: CharTokenizer, seed: int = 0, batch: int = 4, length: int = 48) -> list[dict]:
    """Cases for :func:`lossbook.masked_lm.mask_then_score`-shaped objectives: rhyme windows with padding.

    Each case: ``logits`` [batch, length, vocab] (seeded), ``input_ids`` (windows of the rhymes, rows
    padded with ``<pad>`` at the end by different amounts), a masking ``seed`` and the tokenizer's ids.
    """
    g = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(load_text("nursery_rhymes"))
    cases = []
    for case in range(3):
        input_ids = random_windows(ids, batch, length, g)  # [batch, length]
        for row in range(batch):
            input_ids[row, length - 4 * row:] = tokenizer.pad_id  # row r ends in 4r pads
        logits = 3 * torch.randn(batch, length, tokenizer.vocab_size, generator=g)  # [batch, length, vocab]
        cases.append({"logits": logits, "input_ids": input_ids, "seed": seed * 10 + case,
                      "mask_token_id": tokenizer.mask_id, "vocab_size": tokenizer.vocab_size,
                      "special_ids": tokenizer.special_ids})
    return cases


def transformers_collator(tokenizer: CharTokenizer, seed: int | None = None, **kwargs):
    """transformers' own ``DataCollatorForLanguageModeling`` over ``tokenizer``'s vocabulary (built in memory).

    A ``PreTrainedTokenizerFast`` with a word-level model whose vocabulary is ``tokenizer.vocab`` and whose
    pad and mask tokens are ``<pad>`` and ``<mask>``: the upstream reference for :func:`mask_tokens`, with
    no download.  ``kwargs`` go to the collator (``mlm_probability``, ``mask_replace_prob``, ...).
    Needs transformers and tokenizers (the ``upstream`` extra).
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(tokenizer.vocab)}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<pad>")),
                                   pad_token="<pad>", mask_token="<mask>")
    return DataCollatorForLanguageModeling(fast, seed=seed, **kwargs)


# --- the exercises' checks: each prints a verdict only, computed without the answer's formula -------------------


def _verdict(name: str, ok: bool, detail: str = "") -> None:
    print_verdict(f"{name}: {'correct' if ok else 'not yet'}{detail}", ok)


def check_mask_share(answer, name: str = "exercise 1") -> None:
    """Exercise: the share ``m`` of <mask> (p = 0.15, the rest split evenly between random and unchanged)
    for which a visible token is scored 1 time in 20.  Checked by the Bayes computation of
    :func:`lossbook.derivations.masked_lm.visible_position_odds` at the reader's ``m``."""
    import sympy as sp

    from ..derivations.masked_lm import visible_position_odds

    if answer is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your answer)", False)
        return
    m = sp.nsimplify(answer) if isinstance(answer, float) else sp.sympify(answer)
    if not (m.is_number and 0 <= m <= 1):
        _verdict(name, False, ": m must be a number in [0, 1]")
        return
    odds = visible_position_odds(sp.Rational(15, 100), m, (1 - m) / 2)["scored"]
    _verdict(name, abs(float(odds) - 1 / 20) < 1e-9, " (P(scored | visible) at your m vs 1/20)")


def _scored_batches():
    tok = CharTokenizer(load_text("nursery_rhymes"))
    g = torch.Generator().manual_seed(7)
    batches = []
    for rows, length, pads, special_ids in ((3, 20, (0, 5, 12), tok.special_ids), (2, 9, (1, 9), tok.special_ids),
                                            (4, 16, (0, 0, 3, 3), ())):
        ids = torch.randint(2, tok.vocab_size, (rows, length), generator=g)  # [rows, length]
        for row, n in enumerate(pads):
            if n:
                ids[row, length - n:] = tok.pad_id
        batches.append((ids, special_ids))
    return tok, batches


def check_expected_scored(fn, name: str = "exercise 2", draws: int = 4000) -> None:
    """Exercise: ``fn(input_ids, special_ids, mlm_probability)`` -> the expected number of scored positions.

    Checked against the average over ``draws`` seeded maskings by :func:`mask_tokens` (within 4 standard
    errors), for three batches (padding of several lengths; one where nothing is special) and two values of p.
    """
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    tok, batches = _scored_batches()
    for ids, special_ids in batches:
        for p in (0.15, 0.4):
            g = torch.Generator().manual_seed(0)
            _, labels = mask_tokens(ids.repeat(draws, 1), tok.mask_id, tok.vocab_size, p, special_ids, g)
            counts = (labels != -100).view(draws, *ids.shape).sum(dim=(1, 2)).double()  # [draws]
            se = float(counts.std()) / draws**0.5
            try:
                got = float(fn(ids, special_ids, p))
            except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
                _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
                return
            if abs(got - float(counts.mean())) > 4 * se + 1e-9:
                _verdict(name, False, f" (off by more than 4 standard errors of {draws} maskings)")
                return
    _verdict(name, True, f" (within 4 standard errors of {draws} maskings, 6 settings)")


def _whole_word_reference(ids: list[int], letters: set[int], pick: list[bool]) -> list[int]:
    """One row of whole-word labels, written as a loop over characters (the check's own computation)."""
    out, chosen, previous_letter = [], False, False
    for token, picked in zip(ids, pick):
        is_letter = token in letters
        if is_letter and not previous_letter:  # the first letter of a word decides for the whole word
            chosen = picked
        out.append(token if is_letter and chosen else -100)
        previous_letter = is_letter
    return out


def check_whole_word_labels(fn, name: str = "exercise 2") -> None:
    """Exercise: ``fn(input_ids, letter_ids, pick)`` -> whole-word masking's labels.

    A word is a maximal run of letter ids inside one row; it is selected when ``pick`` is true at its first
    letter, and then every one of its letters keeps its id as the label; everything else is ``-100``.  Checked
    on rhyme windows with padding (random picks at two rates, every position picked, none picked, picks only
    inside words) and on a batch whose words are cut at the row ends.
    """
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    tok = CharTokenizer(load_text("nursery_rhymes"))
    letter_ids = tuple(i for i, s in enumerate(tok.vocab) if s.isalpha())
    letters = set(letter_ids)
    g = torch.Generator().manual_seed(5)
    windows = random_windows(tok.encode(load_text("nursery_rhymes")), 4, 32, g)  # [4, 32]
    for row in range(1, 4):
        windows[row, 32 - 5 * row:] = tok.pad_id  # right padding of several lengths
    cut = tok.encode("Jack and Jill went up th" "he hill to fetch a pail ").view(2, 24)  # "th|he" across rows
    is_letter = torch.isin(windows, torch.tensor(letter_ids))
    first = is_letter & ~torch.cat([torch.zeros(4, 1, dtype=torch.bool), is_letter[:, :-1]], dim=1)
    cases = [(windows, torch.rand(4, 32, generator=g) < p, f"rhyme windows, picks at random (rate {p})")
             for p in (0.3, 0.6)]
    cases += [(windows, torch.ones(4, 32, dtype=torch.bool), "rhyme windows, every position picked"),
              (windows, torch.zeros(4, 32, dtype=torch.bool), "rhyme windows, no position picked"),
              (windows, is_letter & ~first, "rhyme windows, picks only after the first letter of each word"),
              (cut, torch.rand(2, 24, generator=g) < 0.5, "words cut at the end of a row"),
              (cut, torch.ones(2, 24, dtype=torch.bool), "words cut at the end of a row, every position picked")]
    for ids, pick, what in cases:
        want = torch.tensor([_whole_word_reference(r, letters, k) for r, k in zip(ids.tolist(), pick.tolist())])
        try:
            got = torch.as_tensor(fn(ids.clone(), letter_ids, pick.clone()))
        except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
            _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
            return
        if got.shape != want.shape or got.is_floating_point() or not torch.equal(got.long(), want):
            _verdict(name, False, f" (differs from whole-word masking's labels: {what})")
            return
    _verdict(name, True, f" (equal to whole-word masking's labels in {len(cases)} cases)")


def check_input_fates(fn, name: str = "exercise 4") -> None:
    """Exercise: ``fn(inputs, labels, mask_token_id)`` -> ``(shows_mask, shows_wrong, shows_right)``.

    From :func:`mask_tokens`' outputs alone, the scored positions whose corrupted input shows the mask token, a
    wrong token, or the original one (Bool[Tensor, "batch seq"] each; unscored positions in none).  Checked
    against :func:`shown_fates`, computed from the :class:`Masking` that was drawn, on the chapter's vocabulary
    (BERT's 80/10/10 and a random-heavy setting) and on a vocabulary of four, where a random draw often hits the
    mask token or the original.
    """
    if fn is Ellipsis:
        print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
        return
    tok, batches = _scored_batches()
    settings = [(ids, special_ids, tok.mask_id, tok.vocab_size, p, m, r)
                for (ids, special_ids), (p, m, r) in zip(batches, ((0.15, 0.8, 0.1), (0.5, 0.8, 0.1),
                                                                   (0.9, 0.2, 0.6)))]
    tiny = torch.randint(2, 4, (6, 12), generator=torch.Generator().manual_seed(3))  # ids 2, 3; 0 pad, 1 mask
    tiny[::2, -3:] = 0
    settings.append((tiny, (0, 1), 1, 4, 0.9, 0.2, 0.7))
    cases = 0
    for ids, special_ids, mask_id, vocab_size, p, m, r in settings:
        for seed in range(3):
            inputs, labels, masking = mask_tokens(ids, mask_id, vocab_size, p, special_ids,
                                                  torch.Generator().manual_seed(seed), m, r, return_masking=True)
            want = shown_fates(masking, ids, mask_id)
            try:
                got = tuple(fn(inputs.clone(), labels.clone(), mask_id))
            except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
                _verdict(name, False, f": your function raised {type(err).__name__}: {err}")
                return
            cases += 1
            if len(got) != 3:
                _verdict(name, False, f": return three tensors (shows_mask, shows_wrong, shows_right), "
                                      f"got {len(got)}")
                return
            for what, key, g in zip(("shows_mask", "shows_wrong", "shows_right"), ("<mask>", "wrong", "right"), got):
                g = torch.as_tensor(g)
                if g.dtype != torch.bool or g.shape != ids.shape or not torch.equal(g, want[key]):
                    _verdict(name, False, f" ({what} differs from the masking's fates, vocabulary of {vocab_size}, "
                                          f"p = {p}, seed {seed})")
                    return
    _verdict(name, True, f" (equal to the masking's fates, {cases} maskings)")
