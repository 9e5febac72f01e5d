"""Runtime pieces shared by the training and evaluation entrypoints.

Device and dtype policy, model loading, the prompt/completion data format and its
tokenisation live here once, so training and evaluation agree on what a "completion token" is
and evaluation numbers are comparable with the trainer's.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: When this job process started (this module is imported first by both entrypoints): a job's
#: wall time, model loading and publishing included, is what its device was held for (cost).
PROCESS_STARTED = time.monotonic()
#: MLflow tag with a job's own outcome (FINISHED or FAILED) on a run the orchestrator keeps open:
#: the orchestrator ends that run with this status when the Airflow run ends.
JOB_STATUS_TAG = "llmops.job_status"


def job_wall_seconds() -> float:
    """Seconds since the job process started."""
    return round(time.monotonic() - PROCESS_STARTED, 3)


class JobInputError(ValueError):
    """An input the job cannot use (missing file, malformed row, unavailable device).

    Distinct from runtime failures so the CLI can exit with the "bad input" status (2).
    """


class DataFileTampered(JobInputError):
    """A data file a job was given differs from the one the ledger recorded."""


def check_data_file(path: Path, expected: str | None, field: str) -> None:
    """Refuse to train or evaluate on a file whose bytes are not the ones recorded when the
    dataset was built (None: the dataset predates the record, nothing to compare)."""
    if expected is None:
        return
    from llmops.jobs.artifacts import file_sha256

    actual = file_sha256(path)
    if actual != expected:
        raise DataFileTampered(
            f"{field}: {path} is not the file recorded for this dataset (sha256 {actual[:12]}..., "
            f"recorded {expected[:12]}...): it was changed after the dataset was built"
        )


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stdout, which the Airflow side streams (a no-op when the host configured logging)."""
    logging.basicConfig(level=level, stream=sys.stdout, format=LOG_FORMAT)
    for noisy in ("urllib3", "filelock", "fsspec", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_libraries() -> None:
    """Disable tqdm bars and chatty info logs of the HF libraries (they garble streamed logs)."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_warning()


_VERSIONED = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")
_OPTIONAL_VERSIONED = ("bitsandbytes", "flash_attn", "optuna", "mlflow")


def library_versions() -> dict[str, str]:
    """Versions that determine numerics and file formats; recorded in every result.

    The core stack always; optional libraries only when they are already imported (so they
    were used), which keeps the record honest without importing anything new.
    """
    import importlib.metadata

    versions = {"python": sys.version.split()[0]}
    for name in _VERSIONED:
        versions[name] = importlib.metadata.version(name)
    for name in _OPTIONAL_VERSIONED:
        if name in sys.modules:
            try:
                versions[name] = importlib.metadata.version(name.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                versions[name] = str(getattr(sys.modules[name], "__version__", "unknown"))
    return versions


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a ``torchrun`` launch (world size 1 without one)."""

    rank: int
    local_rank: int
    world_size: int

    @classmethod
    def from_env(cls) -> DistributedContext:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes outputs, logs to MLflow and talks to Optuna."""
        return self.rank == 0


def check_quantization_support(quantization: str, device: str) -> None:
    """QLoRA needs a CUDA device and bitsandbytes; say which is missing before loading anything."""
    if quantization == "none":
        return
    if device != "cuda":
        raise JobInputError(
            f"quantization: {quantization!r} (QLoRA) needs a CUDA device, but the job runs on {device!r} "
            "(no GPU visible, or device: cpu); use quantization: none on CPU"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise JobInputError(
            f"quantization: {quantization!r} (QLoRA) needs the bitsandbytes package, which is not installed "
            "in this environment (install it in the trainer image, or use quantization: none)"
        )


def resolve_device(requested: str) -> str:
    """Map "auto" to cuda when a GPU is visible, and refuse "cuda" when none is."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise JobInputError("device: 'cuda' was requested but no CUDA device is available")
    if requested not in ("cpu", "cuda"):
        raise JobInputError(f"device: unsupported value {requested!r}")
    return requested


def resolve_dtype(device: str) -> Any:
    """bf16 on GPUs that support it (weights and autocast), fp32 everywhere else."""
    import torch

    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_model_dir(path: str, field: str = "base_model_path") -> Path:
    """A local model directory saved with ``save_pretrained``; remote URIs are not staged here."""
    if path.startswith("s3://"):
        raise JobInputError(
            f"{field}: s3:// URIs are not supported by this entrypoint yet; stage the model to a local "
            f"directory first (got {path!r})"
        )
    model_dir = Path(path)
    if not model_dir.is_dir():
        raise JobInputError(f"{field}: directory not found: {model_dir}")
    if not (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        raise JobInputError(f"{field}: {model_dir} has no config.json (not a save_pretrained directory)")
    return model_dir


def load_tokenizer(path: Path) -> Any:
    """Tokenizer with a pad token (falls back to EOS) and right padding for loss computation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.eos_token is None:
        raise JobInputError(f"tokenizer in {path} has no eos_token; completions could not be terminated")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_base_model(path: Path, device: str, *, quantization: str = "none", local_rank: int = 0) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with the device's dtype and SDPA attention.

    With ``quantization="4bit"`` (QLoRA) the frozen base is loaded as NF4 with double
    quantisation and bf16 compute, straight onto this process's GPU (bitsandbytes weights
    cannot be moved after loading).
    """
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    if quantization == "4bit":
        import torch
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if dtype == torch.bfloat16 else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        kwargs["dtype"] = compute
        kwargs["device_map"] = {"": local_rank}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    # Training never decodes; a KV cache would also disable the packed-sequence masking.
    model.config.use_cache = False
    logger.info(
        "loaded base model %s (%s, dtype=%s, attention=sdpa, quantization=%s)",
        path,
        type(model).__name__,
        kwargs["dtype"],
        quantization,
    )
    return model


def require_chat_template(tokenizer: Any, path: Path | str) -> None:
    """Fail clearly when ``chat_template: true`` meets a tokenizer that has no template."""
    if not getattr(tokenizer, "chat_template", None):
        raise JobInputError(
            f"chat_template: the tokenizer in {path} has no chat template (tokenizer_config.json has no "
            "'chat_template' and there is no chat_template.jinja); use a chat/instruct base model or set "
            "chat_template: false"
        )


def as_conversation(prompt: str, completion: str) -> dict[str, list[dict[str, str]]]:
    """A prompt/completion row as TRL's conversational prompt-completion example."""
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion.strip()}],
    }


def _jsonl_objects(path: Path, field: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a job's JSONL file; errors name the file
    and line. Raises when the file is missing or holds no row."""
    path = Path(path)
    if not path.is_file():
        raise JobInputError(f"{field}: file not found: {path}")
    seen = False
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobInputError(f"{field}: {path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise JobInputError(f"{field}: {path}:{number}: expected a JSON object")
            seen = True
            yield number, record
    if not seen:
        raise JobInputError(f"{field}: {path} has no rows")


def read_prompt_completion_jsonl(path: Path, field: str) -> list[dict[str, str]]:
    """Rows of ``{"prompt": str, "completion": str}``; errors name the file and line.

    Extra keys are ignored (and dropped) so that curated snapshots can carry ids alongside.
    """
    rows: list[dict[str, str]] = []
    for number, record in _jsonl_objects(path, field):
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str):
                raise JobInputError(f"{field}: {path}:{number}: '{key}' must be a string")
        if not record["completion"]:
            raise JobInputError(f"{field}: {path}:{number}: 'completion' is empty")
        rows.append({"prompt": record["prompt"], "completion": record["completion"]})
    return rows


def read_jsonl_rows(path: Path, field: str, keys: Sequence[str], method: str) -> list[dict[str, str]]:
    """Rows holding string ``keys`` (all but ``prompt`` non-empty); errors name the file and line.

    The reader of the continued-pretraining (``text``) and preference (``prompt``/``chosen``/
    ``rejected``) formats; extra keys are dropped, as for prompt/completion rows.
    """
    expected = ", ".join(f"'{k}'" for k in keys)
    rows: list[dict[str, str]] = []
    for number, record in _jsonl_objects(path, field):
        for key in keys:
            if not isinstance(record.get(key), str):
                raise JobInputError(
                    f"{field}: {path}:{number}: '{key}' must be a string (method {method!r} reads rows "
                    f"of {expected})"
                )
            if key != "prompt" and not record[key].strip():
                raise JobInputError(f"{field}: {path}:{number}: '{key}' is empty")
        rows.append({key: record[key] for key in keys})
    return rows


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading ids two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` with labels -100 on the prompt, exactly as TRL's SFTTrainer builds them.

    The completion gets the EOS token appended (the model must learn to stop), and the
    completion starts where the tokenised prompt and prompt+completion diverge.
    """
    eos = tokenizer.eos_token
    if not completion.endswith(eos):
        completion = completion + eos
    prompt_ids = tokenizer(text=prompt)["input_ids"]
    full_ids = tokenizer(text=prompt + completion)["input_ids"]
    start = common_prefix_length(prompt_ids, full_ids)
    labels = [-100] * start + full_ids[start:]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return full_ids, labels


def _template_ids(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def chat_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt as the chat template renders it for generation (ends with the assistant header)."""
    return _template_ids(tokenizer, as_conversation(prompt, "x")["prompt"], add_generation_prompt=True)


def encode_chat_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` through the chat template, exactly as TRL builds a conversational row.

    The template closes the assistant turn itself (end-of-turn token), so no EOS is appended;
    the completion starts where the rendered prompt and the full conversation diverge.
    """
    conversation = as_conversation(prompt, completion)
    prompt_ids = _template_ids(tokenizer, conversation["prompt"], add_generation_prompt=True)
    full_ids = _template_ids(tokenizer, conversation["prompt"] + conversation["completion"])
    start = common_prefix_length(prompt_ids, full_ids)
    labels = [-100] * start + full_ids[start:]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return full_ids, labels
