"""CLI and trainer registry: ``python -m llmops.training --config job.json``.

Training methods are looked up by name (the spec's ``training.method``) and imported lazily,
so adding a method (e.g. DPO) is a registry entry plus the ``method`` literal in the spec and
the job config; the CLI stays the same.

Exit status: 0 success, 2 unusable config or inputs, 1 the training itself failed. In both
failure cases ``result.json`` (when the output directory is known) says why.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.training.artifacts import canonical_json_sha256, write_json_atomic
from llmops.training.config import ConfigError, load_job_config
from llmops.training.runtime import JobInputError, setup_logging

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmops.training.config import TrainingJobConfig

logger = logging.getLogger(__name__)

# name -> "module:function"; resolved on use so that importing the registry stays cheap.
TRAINERS: dict[str, str] = {"sft": "llmops.training.sft:train_sft"}
RESULT_FILE = "result.json"


def register_trainer(name: str, target: str) -> None:
    """Add or replace a training method; ``target`` is ``"package.module:function"``."""
    if ":" not in target:
        raise ValueError(f"trainer target must be 'module:function', got {target!r}")
    TRAINERS[name] = target


def get_trainer(name: str) -> Callable[[TrainingJobConfig], dict[str, Any]]:
    """The training function for a method name."""
    try:
        target = TRAINERS[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r}; known: {', '.join(sorted(TRAINERS))}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def run_job(config: TrainingJobConfig) -> dict[str, Any]:
    """Dispatch a validated job config to its training method."""
    return get_trainer(config.method)(config)


def write_failure(config: TrainingJobConfig, error: BaseException, started: float) -> None:
    """Record a failed job in ``result.json`` so the orchestrator reads a reason, not a missing file."""
    result = {
        "status": "failed",
        "method": config.method,
        "run_name": config.run_name,
        "error": f"{type(error).__name__}: {error}",
        "elapsed_s": round(time.perf_counter() - started, 3),
        "config_sha256": canonical_json_sha256(config.resolved_dict()),
    }
    try:
        write_json_atomic(config.output_dir / RESULT_FILE, result)
    except OSError:
        logger.exception("could not write the failure result to %s", config.output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status instead of raising, so launchers get a clean code."""
    parser = argparse.ArgumentParser(prog="python -m llmops.training", description="Run one fine-tuning job.")
    parser.add_argument("--config", type=Path, required=True, help="job config JSON (TrainingJobConfig)")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    try:
        config = load_job_config(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("job %s: method=%s output_dir=%s", config.run_name, config.method, config.output_dir)
    # A stale result from an earlier attempt must never be read as this attempt's outcome
    # (e.g. after an OOM kill, which leaves no chance to write a failure).
    (config.output_dir / RESULT_FILE).unlink(missing_ok=True)
    try:
        result = run_job(config)
    except JobInputError as exc:
        logger.error("invalid input: %s", exc)
        write_failure(config, exc, started)
        return 2
    except Exception as exc:
        logger.exception("training failed")
        write_failure(config, exc, started)
        return 1
    print(json.dumps({"status": result["status"], "result": str(config.output_dir / RESULT_FILE)}))
    return 0
