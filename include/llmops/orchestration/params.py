"""The typed run parameters of the finetune DAG: the trigger form validates them."""

from __future__ import annotations

from airflow.sdk import Param

FINETUNE_PARAMS = {
    "curated_snapshot_id": Param(
        "latest",
        type="string",
        title="Curated snapshot",
        description="Snapshot id to train on; 'latest' takes the newest curated snapshot "
        "(or the one whose publication triggered this run).",
        pattern=r"^(latest|[0-9a-f]{20})$",
    ),
    "learning_rate": Param(
        None,
        type=["null", "number"],
        title="Learning rate",
        description="Override the spec's learning rate.",
        exclusiveMinimum=0,
        maximum=1,
    ),
    "epochs": Param(
        None,
        type=["null", "number"],
        title="Epochs",
        description="Override the spec's number of epochs.",
        exclusiveMinimum=0,
        maximum=100,
    ),
    "max_steps": Param(
        None,
        type=["null", "integer"],
        title="Max steps",
        description="Stop after this many optimizer steps (smoke runs).",
        minimum=1,
    ),
    "promote": Param(
        True,
        type="boolean",
        title="Promote if gates pass",
        description="Move the 'champion' alias to the new version when every gate passes.",
    ),
}
