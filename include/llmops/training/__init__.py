"""Fine-tuning entrypoints that run as a subprocess (or container) launched by the Airflow side.

Kept import-light: heavy ML libraries are imported inside functions, so ``llmops.training.config``
can be imported by DAG code without pulling in torch.
"""
