"""Names in the lake's layout that every layer agrees on (no imports: the lightest modules read it).

Zones hold snapshots (``<lake>/<zone>/<pipeline>/<dataset>/<snapshot id>/``); see llmops.snapshots.
"""

CURATED_DATASET = "records"  # the one dataset of a pipeline's curated zone
TRAINING_ZONE = "sft"  # the zone of every training dataset, whatever the method
SPLIT_FILES = ("train.jsonl", "eval.jsonl")  # beside a training snapshot's Parquet: what jobs read
# Bookkeeping columns of validated, quarantined and curated rows: where each row came from, and why
# a quarantined one was set aside.
SOURCE_COLUMN = "_source"
SOURCE_ROW = "_source_row"
QUARANTINE_REASON = "_quarantine_reason"
