"""lossbook: the companion package of an interactive book on the loss functions that train language models.

One import gives a chapter everything it uses::

    import lossbook
    from lossbook import fixed_cross_entropy, pick_device, seed_everything
"""

from importlib import import_module as _import_module
from os import environ as _environ

from .causal_lm import causal_lm_loss
from .chunked import chunked_cross_entropy
from .cross_entropy import fixed_cross_entropy
from .device import demo_seed, pick_device, pin_threads, seed_everything
from .distillation import chunked_distillation_loss, distillation_loss
from .dpo import dpo_loss, sequence_logps
from .kto import kto_loss
from .loss_mapping import LOSS_MAPPING, use_lossbook_losses
from .masked_lm import masked_lm_loss
from .policy_gradient import group_advantages, policy_gradient_loss
from .question_answering import question_answering_loss
from .reference_free import cpo_loss, orpo_loss
from .reward import pairwise_accuracy, pairwise_reward_loss, preference_probs
from .sequence_classification import sequence_classification_loss
from .spin import spin_loss
from .token_classification import token_classification_loss

if _environ.get("LOSSBOOK_TRACE_DIR"):  # tests only: which lines ran (lossbook/_trace.py)
    from ._trace import install as _install_trace

    _install_trace()

# The teaching layers (sympy, matplotlib, ipywidgets, tqdm, IPython) load on first use (PEP 562), so a
# training script that imports lossbook for a loss pays for torch alone (tests/test_import_cost.py).
_LAZY_MODULES = frozenset({
    "accumulation",
    "bugzoo",
    "checks",
    "data",
    "demos",
    "derivations",
    "distributed",
    "memory",
    "models",
    "numerics",
    "plotting",
    "selection",
    "spread",
    "train",
    "widgets",
})
_LAZY_NAMES = {"RewardLaplace": "reward_laplace", "show_source": "show"}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return _import_module(f".{name}", __name__)  # also sets the attribute: later lookups skip this
    if name in _LAZY_NAMES:
        value = getattr(_import_module(f".{_LAZY_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "use_lossbook_losses",
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
    "selection",
    "spread",
    "train",
    "widgets",
    "memory",
    "fixed_cross_entropy",
    "causal_lm_loss",
    "masked_lm_loss",
    "sequence_classification_loss",
    "token_classification_loss",
    "question_answering_loss",
    "chunked_cross_entropy",
    "RewardLaplace",
    "LOSS_MAPPING",
    "pairwise_reward_loss",
    "preference_probs",
    "pairwise_accuracy",
    "sequence_logps",
    "dpo_loss",
    "spin_loss",
    "group_advantages",
    "policy_gradient_loss",
    "distillation_loss",
    "chunked_distillation_loss",
    "kto_loss",
    "cpo_loss",
    "orpo_loss",
    "pick_device",
    "demo_seed",
    "pin_threads",
    "seed_everything",
    "show_source",
]
