"""``LOSS_MAPPING``: the head name -> loss function map for the text heads (chapter 06).

Upstream: transformers ``transformers.loss.loss_utils.LOSS_MAPPING``, which a model consults through
its ``loss_type`` (derived from the class name suffix, e.g. ``BertForMaskedLM`` -> ``"ForMaskedLM"``)
*if* its ``forward`` calls ``self.loss_function`` (Llama does).  Many heads compute their loss inline
instead and never look at the map: BERT's heads, T5, BART (chapter 06 shows which).
lossbook keeps the text heads only; the vision, audio and detection heads are out of the book's scope.
Each value takes the arguments a transformers model passes to ``self.loss_function``: the language-model
and question-answering losses as they are, the two classification losses through the entries below,
which read ``num_labels`` and ``problem_type`` from the model's ``config``.  :func:`use_lossbook_losses`
puts the map into a model.
"""

from __future__ import annotations

import inspect
from types import MappingProxyType

from .causal_lm import causal_lm_loss
from .masked_lm import masked_lm_loss
from .question_answering import question_answering_loss
from .sequence_classification import infer_problem_type, sequence_classification_loss
from .token_classification import token_classification_loss

__all__ = ["LOSS_MAPPING", "sequence_classification_entry", "token_classification_entry", "use_lossbook_losses"]


def sequence_classification_entry(labels, pooled_logits, config, **kwargs):
    """:func:`sequence_classification_loss` called as ``ForSequenceClassificationLoss`` is: the
    model passes ``labels=``, ``pooled_logits=``, ``config=`` and its unpooled ``logits=`` (ignored,
    as upstream).  A problem type inferred from the labels is written to ``config`` once the loss
    has accepted them, as upstream writes it: later batches keep it, ``save_pretrained`` stores it,
    and the text-classification pipeline reads it (sigmoid for multi-label, softmax otherwise).
    """
    problem_type = config.problem_type
    if problem_type is None:
        problem_type = infer_problem_type(config.num_labels, labels)
    loss = sequence_classification_loss(labels, pooled_logits, config.num_labels, problem_type,
                                        **kwargs)
    config.problem_type = problem_type
    return loss


def token_classification_entry(logits, labels, config, **kwargs):
    """:func:`token_classification_loss` called as ``ForTokenClassification`` is:
    ``(logits, labels, config)``, ``config.num_labels`` the number of tags."""
    return token_classification_loss(logits, labels, config.num_labels, **kwargs)


LOSS_MAPPING = MappingProxyType(
    {
        "ForCausalLM": causal_lm_loss,
        "ForMaskedLM": masked_lm_loss,
        "ForQuestionAnswering": question_answering_loss,
        "ForSequenceClassification": sequence_classification_entry,
        "ForTokenClassification": token_classification_entry,
        # as upstream (ForCausalLMLoss): the decoder-only multimodal ...ForConditionalGeneration models (LLaVA)
        # call it through model.loss_function.  T5 and BART do not: they compute a plain cross-entropy
        # inline, on decoder labels that are not shifted (the decoder's inputs are the labels shifted
        # right), so causal_lm_loss on their logits would be off by one; masked_lm_loss is theirs.
        "ForConditionalGeneration": causal_lm_loss,
    }
)


def use_lossbook_losses(model):
    """Make a transformers ``model`` compute its loss with lossbook; returns ``model``.

    ``model.loss_function`` becomes ``LOSS_MAPPING[model.loss_type]`` (``"ForCausalLM"`` when the
    class name matches no key: upstream's fallback), so one line,
    ``model = use_lossbook_losses(LlamaForCausalLM(config))``, trains it with lossbook's losses.
    Refused, with the reason, for a ``loss_type`` lossbook has no loss for (vision, audio,
    detection) and for a model whose ``forward`` never calls ``self.loss_function`` (BERT's heads,
    T5 and BART compute their loss inline): there the map would be set and silently never used.
    """
    loss_type = getattr(model, "loss_type", None) or "ForCausalLM"
    if loss_type not in LOSS_MAPPING:
        raise ValueError(f"{type(model).__name__} has loss_type {loss_type!r}; lossbook's "
                         f"LOSS_MAPPING holds the text heads only: {', '.join(LOSS_MAPPING)}")
    if "self.loss_function(" not in inspect.getsource(type(model).forward):
        raise ValueError(f"{type(model).__name__}.forward computes its loss inline and never calls "
                         "self.loss_function: lossbook's loss would not be used (chapter 06)")
    model.loss_function = LOSS_MAPPING[loss_type]
    return model
