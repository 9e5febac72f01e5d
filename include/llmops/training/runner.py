"""CLI of the training job: ``python -m llmops.training --config job.json``.

The job's ``method`` names a registered training method (:mod:`llmops.training.methods`), whose
trainer is imported when the job runs; the CLI is the same for every method.

Exit status: 0 success (``status`` "succeeded", or "pruned" for a search trial the pruner
stopped), 2 unusable config or inputs, 1 the training itself failed. In both failure cases
``result.json`` (when the output directory is known) says why. ``--config`` and every location
in it may be a local path or an ``s3://`` URI.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from llmops.errors import safe_error_text
from llmops.jobs.artifacts import canonical_json_sha256
from llmops.jobs.config import ConfigError
from llmops.jobs.results import RESULT_FILE
from llmops.jobs.runtime import DistributedContext, JobInputError, setup_logging
from llmops.training.config import load_job_config
from llmops.training.methods import get_method

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmops.training.config import TrainingJobConfig

logger = logging.getLogger(__name__)


def get_trainer(name: str) -> Callable[[TrainingJobConfig], dict[str, Any]]:
    """The training function of a registered method (llmops.training.methods)."""
    return get_method(name).load_trainer()


def run_job(config: TrainingJobConfig) -> dict[str, Any]:
    """Dispatch a validated job config to its training method."""
    return get_trainer(config.method)(config)


def write_failure(config: TrainingJobConfig, error: BaseException, started: float) -> None:
    """Record a failed job in ``result.json`` so the orchestrator reads a reason, not a missing file."""
    result = {
        "status": "failed",
        "method": config.method,
        "run_name": config.run_name,
        "error": safe_error_text(error),  # read back into the study, the ledger and reports
        "elapsed_s": round(time.perf_counter() - started, 3),
        "config_sha256": canonical_json_sha256(config.resolved_dict()),
    }
    from llmops.jobs.outputs import OutputLocation

    try:
        OutputLocation.for_uri(config.output_dir).write_json(RESULT_FILE, result)
    except Exception:  # the original error matters more; S3 errors are not all OSErrors
        logger.exception("could not write the failure result to %s", config.output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status instead of raising, so launchers get a clean code."""
    parser = argparse.ArgumentParser(prog="python -m llmops.training", description="Run one fine-tuning job.")
    parser.add_argument(
        "--config", required=True, help="job config JSON (TrainingJobConfig): a local path or an s3:// URI"
    )
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    try:
        config = load_job_config(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("job %s: method=%s output_dir=%s", config.run_name, config.method, config.output_dir)
    dist = DistributedContext.from_env()
    if dist.is_main:
        # A stale result from an earlier attempt must never be read as this attempt's outcome
        # (e.g. after an OOM kill, which leaves no chance to write a failure).
        try:
            _remove_stale_result(config)
        except Exception as exc:
            logger.error("output_dir: cannot reach %s: %s", config.output_dir, exc)
            return 2
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
    if dist.is_main:
        from llmops.jobs.outputs import OutputLocation

        result_uri = OutputLocation.for_uri(config.output_dir).join(RESULT_FILE)
        print(json.dumps({"status": result["status"], "result": result_uri}))
    return 0


def _remove_stale_result(config: TrainingJobConfig) -> None:
    from llmops.jobs.outputs import OutputLocation

    OutputLocation.for_uri(config.output_dir).delete(RESULT_FILE)
