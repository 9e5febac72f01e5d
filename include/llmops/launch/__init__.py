"""How a training or evaluation job runs: a local process, or a Kubernetes pod."""
