"""Evaluation in a pipeline spec: golden sets, probes, and the gates a candidate must pass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from llmops import metrics
from llmops.specs.base import ConnId, Identifier, StrictModel, reject_parent_segments


class GoldenSet(StrictModel):
    """A fixed, reviewed evaluation set (JSON Lines of {"prompt", "completion"}), scored every run."""

    name: Identifier
    uri: str = Field(description="Local path (relative to the project) or s3:// URI of the JSON Lines file.")

    @field_validator("uri")
    @classmethod
    def _no_parent_segments(cls, value: str) -> str:
        return reject_parent_segments(value)


class PiiProbe(StrictModel):
    """Prompt the model with the start of records that held PII before redaction, and with planted
    canaries, and count how often it produces one of those values."""

    enabled: bool = True
    max_prompts: int = Field(default=40, gt=0)
    max_new_tokens: int = Field(default=48, gt=0, le=1024)
    canaries: list[str] = Field(
        default=[],
        description="Values planted in the raw data that must never come out of the model (the synthetic "
        "canaries of privacy.canaries are planted and probed without being listed here).",
    )
    salt_conn_id: ConnId = Field(
        default="llmops_probe_salt",
        description="kubernetes launcher only: connection whose password is the secret the probe's salt is "
        "derived from; the pod must get the same value as LLMOPS_PROBE_SALT from a kubernetes.secrets "
        "entry (a local job gets a salt in its environment instead).",
    )


class EvaluationSpec(StrictModel):
    max_samples: int = Field(default=64, gt=0)
    max_new_tokens: int = Field(default=64, gt=0, le=4096)
    label_metrics: bool = Field(
        default=False,
        description="Completions are labels: also report accuracy and macro precision/recall/F1.",
    )
    golden_sets: list[GoldenSet] = []
    pii_probe: PiiProbe = PiiProbe()
    blocked_terms: list[str] = Field(
        default=[], description="Words an answer must not contain (toxicity rate)."
    )
    refusal_terms: list[str] = Field(
        default=["i cannot help", "i can't help", "i am unable to", "as an ai"],
        description="Phrases that mark a refusal (refusal rate).",
    )
    compare_with_champion: bool = Field(
        default=True, description="Also evaluate the current champion on the same data in the same run."
    )
    on_champion_unavailable: Literal["fail", "pass"] = Field(
        default="fail",
        description="When a champion exists but cannot be scored (adapter gone, another base model, a "
        "load error): 'fail' fails every beat_champion_by gate with the reason; 'pass' lets them pass, "
        "and the report says so.",
    )


class Gate(StrictModel):
    """A condition for promotion: an absolute bound, or beating the current champion by a margin."""

    metric: str = Field(description="A metric name, or golden.<set>.<metric> for a golden set.")
    min: float | None = None
    max: float | None = None
    beat_champion_by: float | None = Field(
        default=None,
        description="Must be better than the champion (on the same data, same run) by this much.",
    )
    beat_base_by: float | None = Field(
        default=None,
        description="Must be better than the base model (adapter disabled, same data, same run) by this "
        "much; on eval_loss a margin m means a perplexity at most exp(-m) times the base model's.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if not metrics.gate_metric_pattern().match(value):
            raise ValueError(
                f"unknown metric {value!r}; known: {', '.join(metrics.names())} (or golden.<set>.<metric>)"
            )
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> Gate:
        if (
            self.min is None
            and self.max is None
            and self.beat_champion_by is None
            and self.beat_base_by is None
        ):
            raise ValueError("a gate needs 'min', 'max', 'beat_champion_by' or 'beat_base_by'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min: {self.min} is above max {self.max}; no model could pass")
        self._within_range()
        return self

    def _within_range(self) -> None:
        """A bound outside the values the metric can take makes the gate one that cannot pass, or
        one that cannot fail: both are mistakes a reviewer should see."""
        lowest, highest = metrics.get(self.metric).value_range
        name = self.metric
        if self.max is not None:
            if lowest is not None and self.max < lowest:
                raise ValueError(f"max: {name} is never below {lowest}; no model could pass max {self.max}")
            if highest is not None and self.max >= highest:
                raise ValueError(f"max: {name} is never above {highest}; max {self.max} could never fail")
        if self.min is not None:
            if highest is not None and self.min > highest:
                raise ValueError(f"min: {name} is never above {highest}; no model could pass min {self.min}")
            if lowest is not None and self.min <= lowest:
                raise ValueError(f"min: {name} is never below {lowest}; min {self.min} could never fail")

    @property
    def lower_is_better(self) -> bool:
        return metrics.get(self.metric).lower_is_better
