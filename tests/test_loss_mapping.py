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
        return SimpleNamespace(num_labels=num_labels, problem_type=None)  # fresh: both write problem_type

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
        # as the models call them (modeling_layers.py): keywords, the unpooled logits too, and the config
        "ForSequenceClassification": [
            (z0, lambda z, y=y: seqcls(logits=tag_logits, labels=y, pooled_logits=z, config=cfg(z.shape[-1])),
             lambda z, y=y: hf_seqcls(logits=tag_logits, labels=y, pooled_logits=z, config=cfg(z.shape[-1])))
            for y, z0 in ((single, pooled), (multi, pooled), (regression, pooled[:, :1]))
        ],
        "ForTokenClassification": [
            (tag_logits, lambda z: tok(z, tags, cfg(classes)), lambda z: hf_tok(z, tags, cfg(classes))),
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


# ----- issue 29: lossbook's map inside real transformers models (tiny, random, built from configs) -----


def test_the_functions_keep_their_signatures_and_the_entries_take_the_config():
    import inspect

    from lossbook import sequence_classification_loss, token_classification_loss
    from lossbook.loss_mapping import sequence_classification_entry, token_classification_entry

    assert list(inspect.signature(sequence_classification_loss).parameters) == [
        "labels", "pooled_logits", "num_labels", "problem_type", "kwargs"]
    assert list(inspect.signature(token_classification_loss).parameters)[:3] == ["logits", "labels", "num_labels"]
    assert LOSS_MAPPING["ForSequenceClassification"] is sequence_classification_entry
    assert LOSS_MAPPING["ForTokenClassification"] is token_classification_entry
    for entry in (sequence_classification_entry, token_classification_entry):
        assert "config" in inspect.signature(entry).parameters


def _tiny(name: str, **config):
    """A tiny randomly initialised transformers model (seeded), nothing downloaded."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    family = name.split("For")[0].removesuffix("LMHeadModel")
    if family == "Llama":
        cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, **config)
    elif family == "GPT2":
        cfg = transformers.GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=16, **config)
    elif family == "ModernBert":
        cfg = transformers.ModernBertConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                            cls_token_id=1, sep_token_id=2, **config)
    elif family == "GPTNeoX":
        cfg = transformers.GPTNeoXConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, pad_token_id=0, **config)
    else:
        cfg = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, **config)
    return getattr(transformers, name)(cfg)


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 32, (3, 7), generator=g)  # [batch, seq] token ids, no padding
    lm = x.clone()
    lm[0, :3] = -100  # a prompt that is not scored
    mlm = torch.full_like(x, -100)
    mlm[:, 2], mlm[1, 5] = x[:, 2], x[1, 5]  # four masked positions
    tags = torch.randint(0, 4, (3, 7), generator=g)
    tags[1, 4:] = -100
    qa = {"start_positions": torch.tensor([1, 9, -1]), "end_positions": torch.tensor([3, 2, 5])}
    return x, {
        "lm": {"labels": lm}, "mlm": {"labels": mlm}, "qa": qa, "tags": {"labels": tags},
        "regression": {"labels": torch.randn(3, generator=g)},
        "single": {"labels": torch.tensor([0, 2, 1])},
        "multi": {"labels": torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])},
    }


# (model class, its config's extra fields, the labels, whether its forward passes num_items_in_batch on)
HEADS = [
    ("LlamaForCausalLM", {}, "lm", True),
    ("LlamaForQuestionAnswering", {}, "qa", True),
    ("LlamaForTokenClassification", {"num_labels": 4}, "tags", False),
    ("LlamaForSequenceClassification", {"num_labels": 1}, "regression", False),
    ("LlamaForSequenceClassification", {"num_labels": 3}, "single", False),
    ("LlamaForSequenceClassification", {"num_labels": 3}, "multi", False),
    ("ModernBertForMaskedLM", {}, "mlm", True),
    ("GPT2LMHeadModel", {}, "lm", True),  # no "For" in the name: the ForCausalLM fallback
    ("GPTNeoXForCausalLM", {}, "lm", True),
    ("GPTNeoXForSequenceClassification", {"num_labels": 3}, "single", False),
    ("GPTNeoXForTokenClassification", {"num_labels": 4}, "tags", False),
    ("GPTNeoXForQuestionAnswering", {}, "qa", False),
]


MODEL_CASES = [(*h[:3], False) for h in HEADS] + [(*h[:3], True) for h in HEADS if h[3]]


@pytest.mark.parametrize("name,config,labels,with_count", MODEL_CASES,
                         ids=[f"{c[0]}-{c[2]}" + ("-num_items_in_batch" * c[3]) for c in MODEL_CASES])
def test_a_real_model_with_lossbooks_map_gives_upstreams_loss_and_gradients(name, config, labels, with_count):
    import copy

    from lossbook.loss_mapping import use_lossbook_losses

    x, targets = _inputs()
    kwargs = dict(targets[labels], **({"num_items_in_batch": torch.tensor(5)} if with_count else {}))
    upstream = _tiny(name, **config).eval()
    ours = use_lossbook_losses(copy.deepcopy(upstream))
    assert ours.loss_function is LOSS_MAPPING[upstream.loss_type or "ForCausalLM"]
    calls = []
    chosen = ours.loss_function
    ours.loss_function = lambda *a, **k: calls.append(k) or chosen(*a, **k)
    results = []
    for model in (upstream, ours):
        out = model(input_ids=x, **kwargs)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (our_loss, our_grads) = results
    assert len(calls) == 1  # the model really called lossbook's entry
    if with_count:
        assert "num_items_in_batch" in calls[0]
    assert our_loss.dtype == loss.dtype and torch.isfinite(loss)
    torch.testing.assert_close(our_loss, loss, atol=0, rtol=0)
    assert grads.keys() == our_grads.keys() and grads
    for key in grads:
        torch.testing.assert_close(our_grads[key], grads[key], atol=0, rtol=0)
    if "SequenceClassification" in name:  # upstream writes the inferred problem type to the config; so does ours
        assert ours.config.problem_type == upstream.config.problem_type is not None


def test_the_problem_type_is_written_back_as_upstream_but_only_for_labels_the_loss_accepts():
    from lossbook.loss_mapping import sequence_classification_entry

    config = SimpleNamespace(num_labels=3, problem_type=None)
    logits = torch.randn(2, 3)
    with pytest.raises(ValueError, match="one torch.float32 label per row"):  # float class ids: refused
        sequence_classification_entry(torch.tensor([0.0, 2.0]), logits, config)
    assert config.problem_type is None
    sequence_classification_entry(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), logits, config)
    assert config.problem_type == "multi_label_classification"  # the first accepted batch decides, as upstream
    with pytest.raises(TypeError, match="multi-label labels must be floating-point"):
        sequence_classification_entry(torch.tensor([0, 2]), logits, config)  # upstream raises too, from torch


def test_use_lossbook_losses_refuses_heads_that_never_consult_the_map():
    """BERT's heads, T5 and BART compute their loss inline: the helper says so instead of changing nothing."""
    from lossbook.loss_mapping import use_lossbook_losses

    transformers = pytest.importorskip("transformers")
    for name in ("BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
                 "BertForQuestionAnswering"):
        model = _tiny(name)
        assert model.loss_type in LOSS_MAPPING  # the right key, never consulted
        with pytest.raises(ValueError, match=f"{name}.forward computes its loss inline"):
            use_lossbook_losses(model)
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=24, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2, decoder_start_token_id=0))
    with pytest.raises(ValueError, match="computes its loss inline"):
        use_lossbook_losses(t5)
    bart = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=24, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=16))
    with pytest.raises(ValueError, match="computes its loss inline"):
        use_lossbook_losses(bart)
    # and the inline losses really are computed without the map: a spy on loss_function is never called
    x = torch.randint(1, 24, (2, 6), generator=torch.Generator().manual_seed(0))
    calls = []
    bart.loss_function = lambda *a, **k: calls.append(1)
    with torch.no_grad():
        assert bart(input_ids=x, labels=x).loss is not None and not calls


def test_use_lossbook_losses_refuses_a_loss_type_it_has_no_loss_for():
    from lossbook.loss_mapping import use_lossbook_losses

    model = SimpleNamespace(loss_type="ForImageClassification")
    with pytest.raises(ValueError, match="text heads only"):
        use_lossbook_losses(model)


def test_a_trainer_run_with_gradient_accumulation_equals_the_default_run(tmp_path):
    """Chapter 01's lesson end to end: Trainer passes the accumulated batch's token count (num_items_in_batch)
    to the model, the model to lossbook's causal_lm_loss; the logged losses and final weights equal the default's."""
    transformers = pytest.importorskip("transformers")
    from lossbook.loss_mapping import use_lossbook_losses

    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(12):  # sequences of 3 to 8 real tokens, right-padded: micro-batches of uneven token counts
        n = int(torch.randint(3, 9, (1,), generator=g))
        ids = torch.randint(1, 32, (8,), generator=g)
        ids[n:] = 0
        labels = torch.where(ids == 0, -100, ids)
        rows.append({"input_ids": ids, "labels": labels, "attention_mask": (ids != 0).long()})

    def train(lossbook: bool):
        model = _tiny("LlamaForCausalLM")
        counts = []
        if lossbook:
            use_lossbook_losses(model)
            chosen = model.loss_function
            model.loss_function = lambda *a, **k: counts.append(k.get("num_items_in_batch")) or chosen(*a, **k)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / str(lossbook)), per_device_train_batch_size=2, gradient_accumulation_steps=3,
            max_steps=2, learning_rate=1e-2, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
            seed=0, disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h], model, counts

    losses, model, _ = train(False)
    our_losses, our_model, counts = train(True)
    assert len(counts) == 6 and all(torch.is_tensor(c) for c in counts)  # 2 steps x 3 micro-batches, shared count
    assert our_losses == losses and len(losses) == 2
    for (name, p), q in zip(model.named_parameters(), our_model.parameters()):
        torch.testing.assert_close(q, p, atol=0, rtol=0, msg=name)
