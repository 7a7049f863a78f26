"""``LOSS_MAPPING``: the head name -> loss function map for the text heads (chapter 06).

Upstream: transformers ``transformers.loss.loss_utils.LOSS_MAPPING``, which a model consults through
its ``loss_type`` (derived from the class name suffix, e.g. ``BertForMaskedLM`` -> ``"ForMaskedLM"``)
*if* its ``forward`` calls ``self.loss_function`` (Llama does).  Many heads compute their loss inline
instead and never look at the map: BERT's question-answering head, T5, BART (chapter 06 shows which).
lossbook keeps the text heads only; the vision, audio and detection heads are out of the book's scope.
Each value has lossbook's signature (for sequence and token classification, the config's fields
``num_labels`` and ``problem_type`` are arguments instead of a ``config`` object).
"""

from __future__ import annotations

from types import MappingProxyType

from .causal_lm import causal_lm_loss
from .masked_lm import masked_lm_loss
from .question_answering import question_answering_loss
from .sequence_classification import sequence_classification_loss
from .token_classification import token_classification_loss

__all__ = ["LOSS_MAPPING"]

LOSS_MAPPING = MappingProxyType(
    {
        "ForCausalLM": causal_lm_loss,
        "ForMaskedLM": masked_lm_loss,
        "ForQuestionAnswering": question_answering_loss,
        "ForSequenceClassification": sequence_classification_loss,
        "ForTokenClassification": token_classification_loss,
        # as upstream (ForCausalLMLoss): the decoder-only multimodal ...ForConditionalGeneration models (LLaVA)
        # call it through model.loss_function.  T5 and BART do not: they compute a plain cross-entropy
        # inline, on decoder labels that are not shifted (the decoder's inputs are the labels shifted
        # right), so causal_lm_loss on their logits would be off by one; masked_lm_loss is theirs.
        "ForConditionalGeneration": causal_lm_loss,
    }
)
