"""Offline evaluation of a trained adapter against its base model.

Kept import-light: heavy ML libraries are imported inside functions, so
``llmops.evaluation.config`` can be imported by DAG code without pulling in torch.
"""
