"""llmops: governed LLM fine-tuning on Apache Airflow 3."""

__version__ = "0.1.0"
