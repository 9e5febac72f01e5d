# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t llmops-airflow:latest .
#       the production Airflow image (stage `airflow`, the last stage, so the default target);
#   docker build --target trainer --build-arg LLMOPS_IMAGE_DIGEST=<git sha or build id> -t llmops-trainer:TAG .
#       the GPU image that training and evaluation pods run (`training.launcher: kubernetes`).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------------------------
# trainer: Python 3.11 with the CUDA build of torch and the training requirements only.
# The CUDA user-space libraries (cuBLAS, cuDNN, NCCL, ...) come with the torch wheel as pip
# packages; the driver comes from the node through the NVIDIA container toolkit, which the
# NVIDIA_* variables below switch on (as the nvidia/cuda base images do). A plain Python base
# therefore gives the exact Python version without a second CUDA copy in the image.
# Pin the base by digest in CI: python:3.11-slim-bookworm@sha256:...
FROM python:${PYTHON_VERSION}-slim-bookworm AS trainer
# cu130 is the CUDA 13.0 build, the same variant PyPI serves for torch 2.13.0 on Linux: it needs
# an NVIDIA driver >= 580 on the GPU nodes.
ARG TORCH_CUDA=cu130
# Identifies the build in every job's records (CI passes the git commit or build id).
ARG LLMOPS_IMAGE_DIGEST=unset
ARG TRAINER_UID=10001
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV VIRTUAL_ENV=/opt/llmops \
    PATH=/opt/llmops/bin:${PATH}
RUN python -m venv /opt/llmops

WORKDIR /opt/llmops/src
# Dependencies first (a layer rebuilt only when the pins change). torch comes from the PyTorch
# CUDA index, pinned by requirements-trainer.txt; the second install keeps it (2.13.0+cu130
# satisfies torch==2.13.0) and pins everything else to constraints.txt.
COPY requirements-trainer.txt constraints.txt ./
RUN pip install --no-cache-dir "$(grep -E '^torch==' requirements-trainer.txt)" \
        --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
 && pip install --no-cache-dir -r requirements-trainer.txt -c constraints.txt

COPY pyproject.toml README.md ./
COPY include/ include/
RUN pip install --no-cache-dir --no-deps . \
 && groupadd --gid "${TRAINER_UID}" llmops \
 && useradd --uid "${TRAINER_UID}" --gid "${TRAINER_UID}" --create-home --home-dir /home/llmops \
        --shell /usr/sbin/nologin llmops \
 && install -d -o "${TRAINER_UID}" -g "${TRAINER_UID}" /scratch

# DL3064 flags TOKENIZERS_PARALLELISM (it contains "TOKEN"): no secret is set here.
# hadolint ignore=DL3064
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0" \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LLMOPS_IMAGE_DIGEST=${LLMOPS_IMAGE_DIGEST}

# Numeric, so that the kubelet can check the pod's runAsNonRoot (llmops.launch.kubernetes.TRAINER_UID).
USER 10001:10001
# Pods mount a sized emptyDir here for caches, temp files and local checkpoints.
WORKDIR /scratch
# No ENTRYPOINT or CMD: the pod's command is the job's argv (llmops.launch.command.job_argv).

# ---------------------------------------------------------------------------------------------
# airflow: Airflow 3 with the project's pinned requirements and code.
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow
# The official image's non-root user `airflow` (uid 50000, group 0); installs go to its user site.
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 50000:0
WORKDIR /opt/airflow

# Dependencies first (a separate layer, rebuilt only when the pins change). torch comes from the
# CPU index: scheduler and workers never need CUDA (GPU training runs in the trainer image's pods).
COPY --chown=airflow:0 requirements.txt constraints.txt ./
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 include/ include/
RUN pip install --no-cache-dir --no-deps .
COPY --chown=airflow:0 dags/ dags/
COPY --chown=airflow:0 plugins/ plugins/
COPY --chown=airflow:0 great_expectations/ great_expectations/

# hadolint ignore=DL3064
ENV LLMOPS_PROJECT_DIR=/opt/airflow \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    LLMOPS_REQUIRE_KEY_CONNECTIONS=true \
    TOKENIZERS_PARALLELISM=false
