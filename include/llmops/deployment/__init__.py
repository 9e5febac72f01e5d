"""After the champion moves: serve it, tell downstream systems, score tables with it.

- ``serving``: MLflow's scoring server (``mlflow models serve``) around a registry version, and a
  smoke test through its ``/invocations`` API.
- ``manifests``: Kubernetes serving manifests (vLLM Deployment + Service, KServe
  InferenceService) for the base model + LoRA adapter, validated against the Kubernetes API models.
- ``fetch``: the init container's entrypoint that downloads a registry version for vLLM.
- ``hooks``: signed webhooks to downstream systems (and MLflow registry webhooks where they help).
- ``batch``: batch inference into a database table (idempotent upserts).

Every module imports its heavy dependencies (mlflow, kubernetes, torch) inside functions.
"""
