"""``python -m llmops.training --config job.json``: see :mod:`llmops.training.runner`."""

from __future__ import annotations

import sys

from llmops.jobs.entry import run_job
from llmops.training.runner import main

if __name__ == "__main__":
    sys.exit(run_job(main))
