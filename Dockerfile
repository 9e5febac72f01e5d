# syntax=docker/dockerfile:1
# Production Airflow image: Airflow 3 with the project's pinned requirements and code.
# Build:  docker build -t llmops-airflow:latest .
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow
# The official image runs as the non-root user `airflow`; installs go to its user site.
USER airflow
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

ENV LLMOPS_PROJECT_DIR=/opt/airflow \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    LLMOPS_REQUIRE_KEY_CONNECTIONS=true \
    TOKENIZERS_PARALLELISM=false
