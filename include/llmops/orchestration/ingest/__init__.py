"""The `<pipeline>__ingest` DAG and its steps: plan, extract (per partition), commit, validate, curate.

Each step is the body of one task. Rows only travel through the lake (encrypted where they hold
raw data); XCom carries plans, ids, hashes and counts.
"""
