"""The command line of a training or evaluation job: one definition shared by every launcher.

A job that passes on a laptop and fails in a pod is hard to debug when the two launchers build
their commands separately. Both the local subprocess launcher and the Kubernetes pod launcher
call :func:`job_argv`, so the process runs literally the same arguments in both places; only
the interpreter path (``sys.executable`` locally, ``python`` on the image's PATH) differs.

Import-light on purpose: DAG files import the launchers at parse time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmops.specs.schema import Distributed

#: Environment every job gets, locally and in a pod: unbuffered output so log lines stream as they
#: are written, no tokenizer thread pools fighting DataLoader workers, and no Hugging Face Hub
#: downloads at run time (base models come from the model store, never from the internet).
JOB_ENV_DEFAULTS: dict[str, str] = {
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}

TORCHRUN = "torchrun"

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_distributed(distributed: Distributed | None) -> bool:
    """Whether the job runs under torchrun (one process per GPU) rather than as one process."""
    return distributed is not None and distributed.strategy != "none"


def job_argv(
    module: str,
    config_uri: str,
    distributed: Distributed | None = None,
    python: str = "python",
) -> list[str]:
    """The full argv of a job: ``python -m MODULE --config URI``, or the torchrun form.

    `config_uri` is a local path or a URI (``s3://...``): the job reads it through
    :mod:`llmops.storage`, so the launcher never needs to know which. With a ``ddp``/``fsdp``
    strategy the job runs under ``torchrun --standalone`` (single node, one process per GPU), which
    sets RANK/WORLD_SIZE/LOCAL_RANK for the job; `python` is then unused because torchrun starts
    the interpreter it was installed with.
    """
    if not _MODULE.match(module):
        raise ValueError(f"job module {module!r} is not a dotted Python module name")
    config_uri = str(config_uri)
    if not config_uri.strip():
        raise ValueError("job config URI is empty")
    if config_uri.startswith("-"):
        raise ValueError(f"job config URI {config_uri!r} would be parsed as an option")
    if _CONTROL.search(config_uri):
        raise ValueError(f"job config URI {config_uri!r} contains control characters")
    tail = ["-m", module, "--config", config_uri]
    if is_distributed(distributed):
        assert distributed is not None
        return [TORCHRUN, "--standalone", f"--nproc-per-node={distributed.processes_per_node}", *tail]
    return [python, *tail]
