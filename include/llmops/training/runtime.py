"""Runtime pieces shared by the training and evaluation entrypoints.

Device and dtype policy, model loading, the prompt/completion data format and its
tokenisation live here once, so training and evaluation agree on what a "completion token" is
and evaluation numbers are comparable with the trainer's.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JobInputError(ValueError):
    """An input the job cannot use (missing file, malformed row, unavailable device).

    Distinct from runtime failures so the CLI can exit with the "bad input" status (2).
    """


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


def library_versions() -> dict[str, str]:
    """Versions that determine numerics and file formats; recorded in every result."""
    import peft
    import torch
    import transformers
    import trl

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
    }


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


def load_base_model(path: Path, device: str) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with the device's dtype and SDPA attention."""
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(device)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
    logger.info("loaded base model %s (%s, dtype=%s, attention=sdpa)", path, type(model).__name__, dtype)
    return model


def read_prompt_completion_jsonl(path: Path, field: str) -> list[dict[str, str]]:
    """Rows of ``{"prompt": str, "completion": str}``; errors name the file and line.

    Extra keys are ignored (and dropped) so that curated snapshots can carry ids alongside.
    """
    path = Path(path)
    if not path.is_file():
        raise JobInputError(f"{field}: file not found: {path}")
    rows: list[dict[str, str]] = []
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
            for key in ("prompt", "completion"):
                if not isinstance(record.get(key), str):
                    raise JobInputError(f"{field}: {path}:{number}: '{key}' must be a string")
            if not record["completion"]:
                raise JobInputError(f"{field}: {path}:{number}: 'completion' is empty")
            rows.append({"prompt": record["prompt"], "completion": record["completion"]})
    if not rows:
        raise JobInputError(f"{field}: {path} has no rows")
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
