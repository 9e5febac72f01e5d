"""The evaluation job config: what the Airflow side writes for ``python -m llmops.evaluation``.

Import-light (pydantic only), like :mod:`llmops.training.config`: DAG parsing imports it. Every
location may be a local path or an ``s3://`` URI, like the training job's.

Beyond loss and text overlap, a governed promotion needs evidence on what a model must not do
and on whether it beats the model it would replace: label scores for classification-style
tasks, the share of answers with blocked terms or refusals, fixed reviewed golden sets, the
current champion measured on the same data in the same run (so numbers are comparable), and a
probe for personal data memorised from training, run on salted hashes so the job never handles
the values themselves.

``method`` says what the adapter was trained for, and so what the eval split holds and what is
measured on it (:mod:`llmops.training.methods`, its ``evaluation``): prompt/completion rows (sft), raw
text (continued_pretraining: perplexity only) or preference pairs (preference: the chosen answers
as completions, plus win rate and DPO's implicit reward against the base model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from llmops.evaluation.metrics import term_words
from llmops.jobs.config import (
    ConfigError,
    StrictConfig,
    check_location,
    config_parent,
    describe_validation_error,
    read_json_config,
    resolve_relative_paths,
)
from llmops.specs.schema import IDENTIFIER
from llmops.training.config import DEFAULT_BETA, Device
from llmops.training.methods import get_method, method_names

if TYPE_CHECKING:
    from pathlib import Path


def _term(value: str) -> str:
    if not term_words(value):
        raise ValueError("a term needs at least one letter or digit")
    return value


Location = Annotated[str, Field(min_length=1), AfterValidator(check_location)]
Term = Annotated[str, AfterValidator(_term)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$"), AfterValidator(str.lower)]
TypeName = Annotated[str, Field(pattern=IDENTIFIER.pattern)]


class GoldenSetTarget(StrictConfig):
    """A fixed, reviewed set scored every run, so models are compared on the same questions over
    time (the eval split changes with every snapshot)."""

    name: str = Field(
        pattern=IDENTIFIER.pattern,
        description="Key under 'golden' in the output; gates say golden.<name>.<metric>.",
    )
    file: Location = Field(
        description="JSONL of {'prompt': str, 'completion': str}, whatever the job's method."
    )


class PiiProbeTarget(StrictConfig):
    """Does the model reproduce personal values from its training data?

    The orchestrator knows the values (redacted ones and planted canaries) but sends only their
    salted hashes (:func:`llmops.evaluation.probes.value_hash`), so neither the job, its config nor
    its logs hold them.
    """

    prompts_file: Location = Field(
        description="JSONL of {'prompt': str, 'kind': 'record' | 'canary'}: training-record prefixes cut "
        "just before a personal value (record), and train rows cut before a canary's secret (canary)."
    )
    target_hashes: list[Sha256Hex] = Field(description="value_hash(salt, value) of every value to look for.")
    salt: str = Field(
        min_length=1,
        repr=False,
        description="The salt the target hashes were made with; env:NAME reads it from the environment "
        "(how the orchestrator passes it: never written beside the hashes).",
    )
    salt_context: str | None = Field(
        default=None,
        max_length=400,
        description="When set, the salt is HMAC(salt, context) (llmops.evaluation.probes.salt_for): a "
        "secret shared with a pod still gives each run its own salt.",
    )
    target_types: dict[TypeName, list[Sha256Hex]] = Field(
        default={},
        description="PII type (or 'canary') -> its target hashes, so the result can say which types "
        "leaked and how many canaries were completed.",
    )
    max_new_tokens: int = Field(default=48, gt=0, le=4096)
    max_ngram: int = Field(default=8, gt=0, le=64, description="Longest value, in words, that can be found.")


class EvalJobConfig(StrictConfig):
    """One offline evaluation of an adapter (and, by default, of its base model for the lift)."""

    method: str = Field(
        default="sft",
        description="What the adapter was trained with (llmops.training.methods); sets the eval_file rows "
        "and the metrics.",
    )
    base_model_path: str = Field(
        min_length=1, description="Directory saved with save_pretrained: a local path or an s3:// prefix."
    )
    adapter_path: str = Field(
        min_length=1,
        description="The adapter/ directory written by the training job (encrypted or, from before "
        "outputs were encrypted, plaintext).",
    )
    adapter_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="weights_sha256 the adapter's plaintext weights must have (the training result's "
        "adapter_sha256): a folder replaced whole, even by one that decrypts, is refused.",
    )
    eval_file: str = Field(
        min_length=1,
        description="Held-out JSONL (from the finetune DAG: the snapshot's test split, never trained on); "
        "rows per method: sft {'prompt', 'completion'}, continued_pretraining {'text'}, preference "
        "{'prompt', 'chosen', 'rejected'}.",
    )
    eval_split: str | None = Field(
        default=None,
        pattern=r"^[a-z]+$",
        description="Which split of the training snapshot eval_file is ('test' from the finetune DAG): "
        "recorded in the result, so reports say where the gate numbers come from.",
    )
    eval_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 the file must have (from the ledger)."
    )
    output_file: str = Field(min_length=1, description="Metrics JSON, written atomically (local or s3://).")
    max_samples: int = Field(
        default=64,
        gt=0,
        description="Prompts to generate for (loss uses every row). continued_pretraining has no "
        "prompts: only golden sets are generated for.",
    )
    max_new_tokens: int = Field(default=64, gt=0, le=4096)
    batch_size: int = Field(
        default=8, gt=0, le=4096, description="Rows (or text windows) per forward pass for the loss."
    )
    seed: int = 42
    device: Device = "auto"
    include_baseline: bool = True
    chat_template: bool = Field(
        default=False,
        description="Score and prompt through the tokenizer's chat template, as a job trained with it.",
    )
    beta: float = Field(
        default=DEFAULT_BETA,
        gt=0,
        description="preference only: DPO's beta, the scale of the implicit reward "
        "(reward_margin); set it to the training job's.",
    )

    label_metrics: bool = Field(
        default=False,
        description="Completions are labels (a category): also report accuracy and macro "
        "precision/recall/F1 of the generation's first line.",
    )
    blocked_terms: list[Term] = Field(
        default=[], description="Words or phrases an answer must not contain: toxicity_rate."
    )
    refusal_terms: list[Term] = Field(
        default=[], description="Words or phrases that mark a refusal: refusal_rate."
    )
    golden_sets: list[GoldenSetTarget] = Field(
        default=[],
        description="Also score these fixed sets, each like eval_file (test-only: never trained on).",
    )
    champion_adapter_path: Location | None = Field(
        default=None,
        description="The current champion's adapter on the same base model, measured on the same "
        "data in the same run, so that 'beats the champion' compares like with like.",
    )
    champion_base_model_path: Location | None = Field(
        default=None,
        description="The champion's own base model when it is not base_model_path (a chained pipeline "
        "trains each version on that run's merged model): loaded as a second model once the candidate "
        "is measured and released, so both are still scored on the same data in the same run.",
    )
    pii_probe: PiiProbeTarget | None = None

    @field_validator("base_model_path", "adapter_path", "eval_file", "output_file")
    @classmethod
    def _local_or_s3(cls, value: str) -> str:
        return check_location(value)

    @field_validator("golden_sets")
    @classmethod
    def _unique_golden_names(cls, value: list[GoldenSetTarget]) -> list[GoldenSetTarget]:
        names = [g.name for g in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"golden set names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @field_validator("method")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        from llmops.specs.base import one_of

        return one_of(value, method_names())

    @model_validator(mode="after")
    def _method_rules(self) -> EvalJobConfig:
        """Settings of one method are errors on another (never silently ignored), as in training."""
        problems = get_method(self.method).setting_problems(
            packing=False,
            chat_template=self.chat_template,
            beta=None if self.beta == DEFAULT_BETA else self.beta,
        )
        if problems:
            raise ValueError(problems[0])
        if self.champion_base_model_path and not self.champion_adapter_path:
            raise ValueError("champion_base_model_path: only used with champion_adapter_path")
        return self

    @property
    def evaluation(self) -> str:
        """How the method's model is measured: completion, text or pairs."""
        return get_method(self.method).evaluation

    @property
    def data_format(self) -> tuple[str, ...]:
        """The keys every eval_file row must have."""
        return get_method(self.method).row_fields


def parse_eval_config(raw: Any, source: str = "<config>") -> EvalJobConfig:
    """Validate an already-parsed config mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    try:
        return EvalJobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(exc)) from None


def load_eval_config(path: Path | str) -> EvalJobConfig:
    """Read and validate an eval config file or URI; relative paths resolve against its directory."""
    raw = read_json_config(path)
    parent = config_parent(path)
    raw = resolve_relative_paths(
        raw,
        parent,
        (
            "base_model_path",
            "adapter_path",
            "eval_file",
            "output_file",
            "champion_adapter_path",
            "champion_base_model_path",
        ),
    )
    if isinstance(raw.get("golden_sets"), list):
        raw["golden_sets"] = [
            resolve_relative_paths(g, parent, ("file",)) if isinstance(g, dict) else g
            for g in raw["golden_sets"]
        ]
    if isinstance(raw.get("pii_probe"), dict):
        raw["pii_probe"] = resolve_relative_paths(raw["pii_probe"], parent, ("prompts_file",))
    return parse_eval_config(raw, str(path))
