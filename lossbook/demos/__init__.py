"""Per-chapter demo material: synthetic data generators, tiny models and metrics, one module per chapter.

Kept apart from the losses so that a loss module holds the loss and nothing else.
"""

from . import (
    causal_lm,
    distributed,
    dpo,
    masked_lm,
    memory,
    question_answering,
    reward,
    reward_laplace,
    sequence_classification,
    spin,
    token_classification,
)

__all__ = [
    "causal_lm",
    "masked_lm",
    "sequence_classification",
    "token_classification",
    "question_answering",
    "reward",
    "reward_laplace",
    "distributed",
    "dpo",
    "spin",
    "memory",
]
