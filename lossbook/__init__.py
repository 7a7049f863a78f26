"""lossbook: the companion package of an interactive book on the loss functions that train language models.

One import gives a chapter everything it uses::

    import lossbook
    from lossbook import fixed_cross_entropy, pick_device, seed_everything
"""

from . import accumulation, bugzoo, checks, data, derivations, models, numerics, plotting, train, widgets
from .cross_entropy import fixed_cross_entropy
from .device import pick_device, seed_everything
from .show import show_source

__version__ = "0.1.0"

__all__ = [
    "accumulation",
    "bugzoo",
    "checks",
    "data",
    "derivations",
    "models",
    "numerics",
    "plotting",
    "train",
    "widgets",
    "fixed_cross_entropy",
    "pick_device",
    "seed_everything",
    "show_source",
]
