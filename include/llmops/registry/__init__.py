"""MLflow tracking and registry: runs, model versions, aliases, promotion and rollback."""
