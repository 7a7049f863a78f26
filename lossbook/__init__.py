"""lossbook: the companion package of an interactive book on the loss functions that train language models.

One import gives a chapter everything it uses::

    import lossbook
    from lossbook import fixed_cross_entropy, pick_device, seed_everything
"""

from . import (
    accumulation,
    bugzoo,
    checks,
    data,
    demos,
    derivations,
    distributed,
    models,
    numerics,
    plotting,
    train,
    widgets,
)
from .causal_lm import causal_lm_loss
from .cross_entropy import fixed_cross_entropy
from .device import pick_device, seed_everything
from .dpo import dpo_loss, sequence_logps
from .loss_mapping import LOSS_MAPPING
from .masked_lm import masked_lm_loss
from .question_answering import question_answering_loss
from .reward import pairwise_accuracy, pairwise_reward_loss, preference_probs
from .reward_laplace import RewardLaplace
from .sequence_classification import sequence_classification_loss
from .show import show_source
from .token_classification import token_classification_loss

__version__ = "0.1.0"

__all__ = [
    "accumulation",
    "bugzoo",
    "checks",
    "data",
    "demos",
    "derivations",
    "distributed",
    "models",
    "numerics",
    "plotting",
    "train",
    "widgets",
    "fixed_cross_entropy",
    "causal_lm_loss",
    "masked_lm_loss",
    "sequence_classification_loss",
    "token_classification_loss",
    "question_answering_loss",
    "RewardLaplace",
    "LOSS_MAPPING",
    "pairwise_reward_loss",
    "preference_probs",
    "pairwise_accuracy",
    "sequence_logps",
    "dpo_loss",
    "pick_device",
    "seed_everything",
    "show_source",
]
