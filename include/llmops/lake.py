"""Names in the lake's layout that every layer agrees on (no imports: the lightest modules read it).

Zones hold snapshots (``<lake>/<zone>/<pipeline>/<dataset>/<snapshot id>/``); see llmops.snapshots.
"""

CURATED_DATASET = "records"  # the one dataset of a pipeline's curated zone
TRAINING_ZONE = "sft"  # the zone of every training dataset, whatever the method
# A training snapshot's splits (by key hash): train (trained on), validation (early stopping, search
# trials, stage gates), test (the evaluation job and the promotion gates only; never trained on).
SPLITS = ("train", "validation", "test")
SPLIT_FILES = tuple(f"{split}.jsonl" for split in SPLITS)  # beside the Parquet: what jobs read
LEGACY_SPLITS = ("train", "eval")  # snapshots written before the test split: eval.jsonl held out both
# Bookkeeping columns of validated, quarantined and curated rows: where each row came from, and why
# a quarantined one was set aside.
SOURCE_COLUMN = "_source"
SOURCE_ROW = "_source_row"
QUARANTINE_REASON = "_quarantine_reason"
