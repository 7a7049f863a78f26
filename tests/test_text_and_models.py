"""The shipped text, the character tokenizer and the tiny transformer used by the language-model chapters."""

import pytest
import torch

from lossbook.models import TinyTransformer, generate
from lossbook.text import CORPORA, CharTokenizer, load_text, random_windows


def test_shipped_text_is_there_without_network():
    text = load_text("nursery_rhymes")
    assert len(text) > 5000 and "Humpty Dumpty" in text
    assert set(CORPORA) == {"nursery_rhymes"}
    with pytest.raises(ValueError, match="name must be one of"):
        load_text("shakespeare")


def test_tokenizer_round_trip_and_specials():
    text = load_text()
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert tok.decode(ids) == text
    assert (tok.pad_id, tok.mask_id) == (0, 1) and tok.vocab_size == len(set(text)) + 2
    assert int(ids.min()) >= 2  # characters never take a special id
    with_specials = torch.tensor([tok.mask_id, *tok.encode("ab").tolist(), tok.pad_id])
    assert tok.decode(with_specials) == "<mask>ab<pad>"
    assert tok.decode(with_specials, specials=False) == "ab"
    assert CharTokenizer("ba").vocab == CharTokenizer("ab").vocab  # depends on the characters only


def test_tokenizer_errors_name_the_problem():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['z'\]"):
        tok.encode("az")
    with pytest.raises(ValueError, match=r"ids holds 9, outside \[0, 5\)"):
        tok.decode([9])
    with pytest.raises(ValueError, match=r"ids must be 1-D \[tokens\], got shape \[1, 2\]"):
        tok.decode(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")


def test_random_windows_are_slices_of_the_text():
    ids = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    w = random_windows(ids, 8, 10, g)
    assert w.shape == (8, 10)
    assert torch.equal(w - w[:, :1], torch.arange(10).expand(8, 10))  # consecutive
    assert torch.equal(w, random_windows(ids, 8, 10, torch.Generator().manual_seed(0)))  # seeded
    assert random_windows(ids, 3, 100).shape == (3, 100)
    with pytest.raises(ValueError, match=r"length must be in \[1, 100\] for ids of shape \[100\], got 101"):
        random_windows(ids, 2, 101)


@pytest.mark.parametrize("causal", [True, False])
def test_tiny_transformer_shapes_and_causality(causal):
    torch.manual_seed(0)
    model = TinyTransformer(11, d_model=16, n_heads=2, n_layers=2, max_len=8, causal=causal).eval()
    x = torch.randint(0, 11, (3, 6))
    logits = model(x)
    assert logits.shape == (3, 6, 11)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 11  # change the last token only
    changed = (model(y) - logits).abs().amax(dim=(0, 2)) > 1e-6
    # a causal model's earlier positions cannot see the last token; an encoder's all can
    assert changed.tolist() == ([False] * 5 + [True] if causal else [True] * 6)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_mask_hides_padding(causal):
    torch.manual_seed(0)
    model = TinyTransformer(11, d_model=16, n_heads=2, n_layers=1, max_len=8, causal=causal).eval()
    x = torch.randint(1, 11, (1, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    a = model(x, attention_mask=mask)
    x2 = x.clone()
    x2[0, 4:] = 0  # different padding tokens
    b = model(x2, attention_mask=mask)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    torch.testing.assert_close(a[:, :4], model(x[:, :4]))


def test_tiny_transformer_errors():
    model = TinyTransformer(11, d_model=16, n_heads=2, n_layers=1, max_len=4)
    with pytest.raises(ValueError, match=r"input_ids has 5 positions \(shape \[1, 5\]\), more than max_len=4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, seq\], got shape \[4\]"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \[1, 3\], got \[1, 2\]"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="multiple of n_heads"):
        TinyTransformer(11, d_model=10, n_heads=3)


def test_generate_is_seeded_greedy_is_argmax_and_needs_causal():
    torch.manual_seed(0)
    model = TinyTransformer(11, d_model=16, n_heads=2, n_layers=1, max_len=8)
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 12, 1.0, torch.Generator().manual_seed(1))
    b = generate(model, prompt, 12, 1.0, torch.Generator().manual_seed(1))
    assert a.shape == (15,) and torch.equal(a, b) and torch.equal(a[:3], prompt)
    greedy = generate(model, prompt, 1, 0.0)
    assert greedy[-1] == model(prompt[None])[0, -1].argmax()
    assert model.training  # restored
    with pytest.raises(ValueError, match="causal"):
        generate(TinyTransformer(11, 16, 2, 1, 8, causal=False), prompt, 1)
