"""Training methods: one module per method, all registered here (see :mod:`.base`).

Light to import (no ML library): the spec loader, the training-data step and the job config read
the registry; only the training job imports a method's trainer.
"""

from __future__ import annotations

from llmops.training.methods import continued_pretraining, preference, sft
from llmops.training.methods.base import (
    REGISTRY,
    TrainingMethod,
    get_method,
    method_names,
    register_method,
    text_of,
    unregister_method,
)

for _module in (sft, continued_pretraining, preference):
    register_method(_module.METHOD)

__all__ = [
    "REGISTRY",
    "TrainingMethod",
    "get_method",
    "method_names",
    "register_method",
    "text_of",
    "unregister_method",
]
