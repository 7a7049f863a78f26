"""Wrong answers to chapter 03's exercises: each must fail the exercise's visible check (tests/test_exercises.py)."""

MUTANTS = {
    "ex1": [
        ("the right m rounded to two decimals", """
answer_1 = 0.70
"""),
        ("the right m rounded to four decimals", """
answer_1 = 0.7018
"""),
        ("1 - m: the share of random and unchanged, not of <mask>", """
answer_1 = sp.Rational(17, 57)
"""),
        ("Bayes the wrong way round: P(visible | scored) = 1/20", """
m_sym = sp.Symbol("m", nonnegative=True)
f = dm.masking_outcomes(sp.Rational(15, 100), m_sym, (1 - m_sym) / 2)
visible_if_scored = (f["random"] + f["unchanged"]) / f["selected"]
answer_1 = [s for s in sp.solve(sp.Eq(visible_if_scored, sp.Rational(1, 20)), m_sym) if 0 <= s <= 1][0]
"""),
    ],
    "ex2": [
        ("token-level masking: every picked letter, words ignored", """
def my_whole_word_labels(input_ids, letter_ids, pick):
    letter = torch.isin(input_ids, torch.tensor(letter_ids))
    return torch.where(letter & pick, input_ids, torch.full_like(input_ids, -100))
"""),
        ("only the first letter of a selected word scored", """
def my_whole_word_labels(input_ids, letter_ids, pick):
    letter = torch.isin(input_ids, torch.tensor(letter_ids))
    first = letter.clone()
    first[:, 1:] &= ~letter[:, :-1]
    return torch.where(first & pick, input_ids, torch.full_like(input_ids, -100))
"""),
        ("the batch flattened: a word runs on from the end of one row into the next", """
def my_whole_word_labels(input_ids, letter_ids, pick):
    ids, picks = input_ids.reshape(-1), pick.reshape(-1)
    letter = torch.isin(ids, torch.tensor(letter_ids))
    selected = torch.zeros_like(letter)
    for t in range(len(ids)):
        starts = letter[t] and (t == 0 or not letter[t - 1])
        selected[t] = letter[t] and (picks[t] if starts else (t > 0 and selected[t - 1]))
    return torch.where(selected, ids, torch.full_like(ids, -100)).view(input_ids.shape)
"""),
        ("the selection not stopped at the end of the word: spaces and punctuation scored", """
def my_whole_word_labels(input_ids, letter_ids, pick):
    letter = torch.isin(input_ids, torch.tensor(letter_ids))
    first = letter.clone()
    first[:, 1:] &= ~letter[:, :-1]
    selected = torch.zeros_like(letter)
    for t in range(input_ids.shape[1]):
        before = selected[:, t - 1] if t > 0 else torch.zeros_like(letter[:, 0])
        selected[:, t] = torch.where(first[:, t], pick[:, t], before)
    return torch.where(selected, input_ids, torch.full_like(input_ids, -100))
"""),
        ("a word selected when any of its letters is picked", """
def my_whole_word_labels(input_ids, letter_ids, pick):
    letter = torch.isin(input_ids, torch.tensor(letter_ids))
    first = letter.clone()
    first[:, 1:] &= ~letter[:, :-1]
    word = first.long().cumsum(dim=1)
    out = torch.full_like(input_ids, -100)
    for b in range(input_ids.shape[0]):
        for w in word[b][letter[b]].unique():
            here = letter[b] & (word[b] == w)
            if (pick[b] & here).any():
                out[b][here] = input_ids[b][here]
    return out
"""),
    ],
    "ex3": [
        ("the -100 labels clamped to 0 and scored as class 0", """
def my_masked_lm_loss(logits, labels):
    log_p = torch.log_softmax(logits.float(), dim=-1)
    picked = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked.mean()
"""),
        ("divided by every position, ignored ones too", """
def my_masked_lm_loss(logits, labels):
    keep = labels != -100
    log_p = torch.log_softmax(logits.float()[keep], dim=-1)
    picked = log_p.gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
    return -picked.sum() / labels.numel()
"""),
        ("the mean of each row's mean", """
def my_masked_lm_loss(logits, labels):
    rows = []
    for z, y in zip(logits.float(), labels):
        keep = y != -100
        if keep.any():
            log_p = torch.log_softmax(z[keep], dim=-1)
            rows.append(-log_p.gather(-1, y[keep].unsqueeze(-1)).mean())
    return torch.stack(rows).mean()
"""),
        ("log_softmax over the sequence, not the vocabulary", """
def my_masked_lm_loss(logits, labels):
    keep = labels != -100
    log_p = torch.log_softmax(logits.float(), dim=1)[keep]
    picked = log_p.gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
    return -picked.sum() / keep.sum()
"""),
    ],
    "ex4": [
        ("every scored input unlike its label is wrong: a <mask> counted twice", """
def input_fates(inputs, labels, mask_token_id):
    scored = labels != -100
    return scored & (inputs == mask_token_id), scored & (inputs != labels), scored & (inputs == labels)
"""),
        ("the unscored positions not left out: every -100 label reads as a wrong input", """
def input_fates(inputs, labels, mask_token_id):
    shows_mask = inputs == mask_token_id
    shows_right = inputs == labels
    return shows_mask, ~shows_mask & ~shows_right, shows_right
"""),
        ("right = neither <mask> nor wrong, over every position", """
def input_fates(inputs, labels, mask_token_id):
    scored = labels != -100
    shows_mask = scored & (inputs == mask_token_id)
    shows_wrong = scored & ~shows_mask & (inputs != labels)
    return shows_mask, shows_wrong, ~shows_mask & ~shows_wrong
"""),
        ("0/1 integers instead of booleans", """
def input_fates(inputs, labels, mask_token_id):
    scored = labels != -100
    shows_mask = scored & (inputs == mask_token_id)
    shows_right = scored & (inputs == labels)
    return shows_mask.long(), (scored & ~shows_mask & ~shows_right).long(), shows_right.long()
"""),
    ],
}
