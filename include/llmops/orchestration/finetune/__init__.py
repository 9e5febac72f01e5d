"""The `<pipeline>__finetune` DAG and its steps, one module per stage of the run.

data (training datasets) -> search (trials) -> train (chain stages, final training) -> evaluate
(job, champion, gates) -> release (register, approve, promote). Heavy work runs in job processes
(`llmops.training`, `llmops.evaluation`) through the spec's launcher (:mod:`.jobs`); these steps
prepare, record and register.
"""
