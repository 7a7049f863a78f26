"""lossbook.LOSS_MAPPING against transformers' LOSS_MAPPING: the same text heads, the same losses."""

from types import SimpleNamespace

import pytest
import torch

from lossbook import LOSS_MAPPING
from lossbook.demos.question_answering import loss_type

TEXT_HEADS = {
    "ForCausalLM",
    "ForMaskedLM",
    "ForQuestionAnswering",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForConditionalGeneration",
}
NOT_TEXT = ("Image", "Video", "Audio")  # classification heads of other modalities reuse the sequence loss


def _upstream_text_heads(hf):
    """Upstream's generic keys ("For...") whose loss is one of the five text losses, other modalities left out."""
    text_losses = {
        hf.ForCausalLMLoss,
        hf.ForMaskedLMLoss,
        hf.ForQuestionAnsweringLoss,
        hf.ForSequenceClassificationLoss,
        hf.ForTokenClassification,
    }
    return {
        key
        for key, fn in hf.LOSS_MAPPING.items()
        if key.startswith("For") and fn in text_losses and not any(m in key for m in NOT_TEXT)
    }


def test_same_keys_as_upstream_text_heads(hf_loss_utils):
    upstream = _upstream_text_heads(hf_loss_utils)
    assert set(LOSS_MAPPING) == upstream == TEXT_HEADS
    assert set(LOSS_MAPPING) <= set(hf_loss_utils.LOSS_MAPPING)
    assert list(LOSS_MAPPING) == [k for k in hf_loss_utils.LOSS_MAPPING if k in LOSS_MAPPING]  # upstream's order


def test_mapping_is_read_only():
    with pytest.raises(TypeError):
        LOSS_MAPPING["ForCausalLM"] = None


def _cases(seed: int):
    """head -> list of (logits, lossbook call, upstream call); both calls take the logits leaf."""
    g = torch.Generator().manual_seed(seed)
    batch, seq, vocab, classes = 3, 6, 11, 4
    lm_logits = torch.randn(batch, seq, vocab, generator=g)  # [batch, seq, vocab]
    lm_labels = torch.randint(0, vocab, (batch, seq), generator=g)
    lm_labels[0, :2] = -100
    start_logits = torch.randn(batch, seq, generator=g)
    end_logits = torch.randn(batch, seq, generator=g)
    starts, ends = torch.tensor([0, 2, seq + 1]), torch.tensor([[1], [-1], [seq - 1]])
    pooled = torch.randn(batch, classes, generator=g)  # [batch, classes]
    single = torch.randint(0, classes, (batch,), generator=g)
    multi = torch.randint(0, 2, (batch, classes), generator=g).float()
    regression = torch.randn(batch, 1, generator=g)
    tag_logits = torch.randn(batch, seq, classes, generator=g)  # [batch, seq, classes]
    tags = torch.randint(0, classes, (batch, seq), generator=g)
    tags[1, 3:] = -100

    def cfg(num_labels):
        return SimpleNamespace(num_labels=num_labels, problem_type=None)  # fresh: upstream writes problem_type

    def lm(key):
        ours, hf = LOSS_MAPPING[key], HF[key]
        return [
            (lm_logits, lambda z: ours(z, lm_labels, vocab_size=vocab), lambda z: hf(z, lm_labels, vocab_size=vocab)),
            (lm_logits, lambda z: ours(z, lm_labels, vocab, num_items_in_batch=9),
             lambda z: hf(z, lm_labels, vocab, num_items_in_batch=9)),
        ]  # fmt: skip

    qa, hf_qa = LOSS_MAPPING["ForQuestionAnswering"], HF["ForQuestionAnswering"]
    seqcls, hf_seqcls = LOSS_MAPPING["ForSequenceClassification"], HF["ForSequenceClassification"]
    tok, hf_tok = LOSS_MAPPING["ForTokenClassification"], HF["ForTokenClassification"]
    return {
        "ForCausalLM": lm("ForCausalLM"),
        "ForConditionalGeneration": lm("ForConditionalGeneration"),
        "ForMaskedLM": lm("ForMaskedLM"),
        "ForQuestionAnswering": [
            (start_logits, lambda z: qa(z, end_logits, starts, ends), lambda z: hf_qa(z, end_logits, starts, ends)),
            (end_logits, lambda z: qa(start_logits, z, starts, ends), lambda z: hf_qa(start_logits, z, starts, ends)),
        ],
        "ForSequenceClassification": [
            (pooled, lambda z: seqcls(single, z, classes), lambda z: hf_seqcls(single, z, cfg(classes))),
            (pooled, lambda z: seqcls(multi, z, classes), lambda z: hf_seqcls(multi, z, cfg(classes))),
            (pooled[:, :1], lambda z: seqcls(regression, z, 1), lambda z: hf_seqcls(regression, z, cfg(1))),
        ],
        "ForTokenClassification": [
            (tag_logits, lambda z: tok(z, tags, classes), lambda z: hf_tok(z, tags, cfg(classes))),
        ],
    }


HF = {}


@pytest.fixture(autouse=True)
def _upstream_map(hf_loss_utils):
    HF.update(hf_loss_utils.LOSS_MAPPING)


@pytest.mark.parametrize("key", sorted(TEXT_HEADS))
@pytest.mark.parametrize("seed", [0, 1])
def test_each_head_matches_upstream_value_and_gradient(key, seed):
    for logits, ours_fn, theirs_fn in _cases(seed)[key]:
        results = []
        for fn in (ours_fn, theirs_fn):
            leaf = logits.detach().clone().requires_grad_(True)
            loss = fn(leaf)
            loss.backward()
            results.append((loss.detach(), leaf.grad))
        (ours, our_grad), (theirs, their_grad) = results
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(our_grad, their_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "class_name,expected",
    [
        ("BertForQuestionAnswering", "ForQuestionAnswering"),
        ("XLNetForQuestionAnsweringSimple", "ForQuestionAnswering"),
        ("LlamaForCausalLM", "ForCausalLM"),
        ("T5ForConditionalGeneration", "ForConditionalGeneration"),
        ("RobertaForMaskedLM", "ForMaskedLM"),
        ("GPT2LMHeadModel", None),
    ],
)
def test_loss_type_rule(hf_loss_utils, class_name, expected):
    assert loss_type(class_name, hf_loss_utils.LOSS_MAPPING) == expected
    assert loss_type(class_name, LOSS_MAPPING) == expected
    # upstream's own keys win over a pattern match; lossbook has no model-specific keys
    assert loss_type("CsmForConditionalGeneration", hf_loss_utils.LOSS_MAPPING) == "CsmForConditionalGeneration"
    assert loss_type("CsmForConditionalGeneration", LOSS_MAPPING) == "ForConditionalGeneration"


def test_loss_type_rule_matches_real_transformers_models(hf_loss_utils):
    """Tiny randomly initialised BERT heads (nothing downloaded): transformers' own loss_type and loss_function."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8, num_labels=3
    )
    for cls in (
        transformers.BertForQuestionAnswering,
        transformers.BertForMaskedLM,
        transformers.BertForSequenceClassification,
        transformers.BertForTokenClassification,
    ):
        model = cls(config)
        assert model.loss_type == loss_type(cls.__name__, hf_loss_utils.LOSS_MAPPING)
        assert model.loss_function is hf_loss_utils.LOSS_MAPPING[model.loss_type]
        assert model.loss_type in LOSS_MAPPING


def test_which_models_really_call_loss_function(hf_loss_utils):
    """Chapter 06's claim, pinned against the installed transformers: BERT's QA head and T5 compute their loss inline
    (T5 on unshifted decoder labels: masked_lm_loss, not causal_lm_loss); Llama and GPT-2 call loss_function."""
    transformers = pytest.importorskip("transformers")
    from lossbook import causal_lm_loss, masked_lm_loss, question_answering_loss

    torch.manual_seed(0)
    v = 24
    bert = transformers.BertForQuestionAnswering(
        transformers.BertConfig(
            vocab_size=v, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
        )
    )
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=v,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
        )
    )
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=v, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2, decoder_start_token_id=0
        )
    )
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(1, v, (2, 7), generator=g), torch.randint(1, v, (2, 5), generator=g)
    calls = {}
    for name, model in (("bert", bert), ("llama", llama), ("t5", t5)):
        model.eval()
        calls[name] = []
        model.loss_function = lambda *a, _f=model.loss_function, _c=calls[name], **k: _c.append(1) or _f(*a, **k)
    with torch.no_grad():
        s, e = torch.tensor([1, 9]), torch.tensor([3, 2])
        out = bert(input_ids=x, start_positions=s, end_positions=e)
        assert out.loss == question_answering_loss(out.start_logits, out.end_logits, s, e) and not calls["bert"]
        out = llama(input_ids=x, labels=x)
        torch.testing.assert_close(out.loss, causal_lm_loss(out.logits, x))
        assert len(calls["llama"]) == 1
        out = t5(input_ids=x, labels=y)
        torch.testing.assert_close(out.loss, masked_lm_loss(out.logits, y))
        assert not calls["t5"] and (out.loss - causal_lm_loss(out.logits, y)).abs() > 1e-3
