"""``LOSS_MAPPING``: the head name -> loss function map for the text heads (chapter 06).

Upstream: transformers ``transformers.loss.loss_utils.LOSS_MAPPING``, which a model consults through
its ``loss_type`` (derived from the class name suffix, e.g. ``BertForMaskedLM`` -> ``"ForMaskedLM"``).
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
        # encoder-decoder text models (T5, BART) score their decoder like a causal LM
        "ForConditionalGeneration": causal_lm_loss,
    }
)
