"""``python -m llmops.evaluation --config eval.json``: see :mod:`llmops.evaluation.runner`."""

from __future__ import annotations

import sys

from llmops.evaluation.runner import main
from llmops.jobs.entry import run_job

if __name__ == "__main__":
    sys.exit(run_job(main))
