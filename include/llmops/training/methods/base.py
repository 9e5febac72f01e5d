"""What a training method is, and the registry every layer reads it from.

A method owns: the training dataset it builds (snapshot dataset name and the fields of each row),
how one curated record becomes one row (``render``, which also enforces the method's row contract),
the Great Expectations suite those rows must pass, the spec fields it needs, how its model is
evaluated (``evaluation``: generated answers against ``completion``, perplexity on ``text``, or
preference ``pairs``) and the trainer the job runs (``"module:function"``, imported by the job only:
everything else here is light enough for the spec loader).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

Evaluation = Literal["completion", "text", "pairs"]
#: Spec fields that belong to a method (each method names the ones it needs).
METHOD_SPEC_FIELDS = (
    "prompt_template",
    "completion_column",
    "text_columns",
    "chosen_column",
    "rejected_column",
)


def text_of(value: Any) -> str:
    """A curated value as text (None and NaN are empty)."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


@dataclass(frozen=True)
class TrainingMethod:
    """One way to train an adapter."""

    name: str
    title: str
    dataset: str  # the training snapshots' dataset name
    row_fields: tuple[str, ...]  # the keys of every row of train.jsonl / eval.jsonl
    suite: str  # great_expectations/expectations/<suite>.json, run on the rows
    spec_fields: tuple[str, ...]  # the MethodData fields it needs (others are refused)
    render: Callable[[Any, dict[str, str]], tuple[dict[str, str] | None, str | None]] = field(compare=False)
    trainer: str  # "module:function(config) -> result", run by the training job
    evaluation: Evaluation = "completion"
    # Why rows may not be packed / rendered as a conversation (None: they may), for error messages.
    packing_refusal: str | None = None
    chat_refusal: str | None = None
    uses_beta: bool = False  # takes the DPO-family strength `beta`
    description: str = ""

    @property
    def packing(self) -> bool:
        return self.packing_refusal is None

    @property
    def chat_template(self) -> bool:
        return self.chat_refusal is None

    def setting_problems(self, *, packing: bool, chat_template: bool, beta: float | None) -> list[str]:
        """Settings of a job or spec this method refuses, as "field: why" lines."""
        problems = []
        if beta is not None and not self.uses_beta:
            users = " / ".join(f"'{m.name}'" for m in REGISTRY.values() if m.uses_beta)
            problems.append(f"beta: only used by method {users}, but method is {self.name!r}")
        if packing and self.packing_refusal:
            problems.append(f"packing: {self.name} {self.packing_refusal}; remove packing")
        if chat_template and self.chat_refusal:
            problems.append(f"chat_template: {self.name} {self.chat_refusal}; set chat_template: false")
        return problems

    @property
    def generates_answers(self) -> bool:
        """Whether its evaluation generates answers (generation metrics apply)."""
        return self.evaluation != "text"

    def load_trainer(self) -> Callable[[Any], dict[str, Any]]:
        module, _, function = self.trainer.partition(":")
        return getattr(importlib.import_module(module), function)


REGISTRY: dict[str, TrainingMethod] = {}


def register_method(method: TrainingMethod) -> TrainingMethod:
    """Add a method; its name, dataset name and spec fields are checked."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", method.name):
        raise ValueError(f"training method {method.name!r}: lowercase letters, digits and '_' only")
    if method.name in REGISTRY and REGISTRY[method.name] != method:
        raise ValueError(f"training method {method.name!r} is already registered")
    unknown = sorted(set(method.spec_fields) - set(METHOD_SPEC_FIELDS))
    if unknown:
        raise ValueError(f"training method {method.name!r}: unknown spec field(s) {', '.join(unknown)}")
    if ":" not in method.trainer:
        raise ValueError(f"training method {method.name!r}: trainer must be 'module:function'")
    taken = {m.dataset: m.name for m in REGISTRY.values() if m.name != method.name}
    if method.dataset in taken:
        raise ValueError(
            f"training method {method.name!r}: dataset {method.dataset!r} is {taken[method.dataset]}'s"
        )
    REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    REGISTRY.pop(name, None)


def get_method(name: str) -> TrainingMethod:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r}; known: {', '.join(REGISTRY)}") from None


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)
