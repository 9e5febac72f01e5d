# Source this file to get the project's embedded-default environment (SQLite everywhere,
# local lake, CPU training). Every value can be overridden by exporting it before sourcing.
_llmops_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export LLMOPS_PROJECT_DIR="${LLMOPS_PROJECT_DIR:-$_llmops_root}"
export LLMOPS_HOME="${LLMOPS_HOME:-$_llmops_root/.llmops}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_llmops_root/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$_llmops_root/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$_llmops_root/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="${AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT:-60}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$LLMOPS_HOME/mlflow.db}"
# OpenLineage (apache-airflow-providers-openlineage): every task's START/COMPLETE/FAIL, plus the datasets and
# facets the llmops steps add, appended as JSON Lines under $LLMOPS_LINEAGE_DIR (the folder is created on the
# first event). Production sends them to Marquez instead: see the README's production table.
export LLMOPS_LINEAGE_DIR="${LLMOPS_LINEAGE_DIR:-$LLMOPS_HOME/lineage}"
export AIRFLOW__OPENLINEAGE__NAMESPACE="${AIRFLOW__OPENLINEAGE__NAMESPACE:-llmops}"
# Emission policy (provider 2.20: replaces the deprecated AIRFLOW__OPENLINEAGE__DISABLE_SOURCE_CODE=true): no task's
# source code, whatever a DAG author asks, and nothing from the erasure DAG (its run conf holds the data subject's
# identifier, which the provider copies into every event of the run).
export AIRFLOW__OPENLINEAGE__EMISSION_POLICY="${AIRFLOW__OPENLINEAGE__EMISSION_POLICY:-[{\"scope\": {\}, \"controls\": {\"include_source_code\": false\}, \"locked\": true\}, {\"scope\": {\"dag_id\": \"data_erasure_request\"\}, \"controls\": {\"emit\": false\}, \"locked\": true\}]}"
export AIRFLOW__OPENLINEAGE__TRANSPORT="${AIRFLOW__OPENLINEAGE__TRANSPORT:-{\"type\": \"file\", \"log_file_path\": \"$LLMOPS_LINEAGE_DIR/openlineage.jsonl\", \"append\": true, \"filesystem\": \"fsspec.implementations.local.LocalFileSystem\", \"fs_kwargs\": {\"auto_mkdir\": true\}\}}"
export PYTHONPATH="$_llmops_root/include${PYTHONPATH:+:$PYTHONPATH}"
# Demo connections (the demo's own SQLite file and loopback API); production defines these in a
# secrets backend instead. The API token is a demo value, masked in task logs as a password.
export DEMO_TICKETS_API_PORT="${DEMO_TICKETS_API_PORT:-8765}"
export DEMO_TICKETS_API_TOKEN="${DEMO_TICKETS_API_TOKEN:-demo-token-change-me}"
export AIRFLOW_CONN_SUPPORT_TICKETS_DB="${AIRFLOW_CONN_SUPPORT_TICKETS_DB:-{\"conn_type\": \"sqlite\", \"host\": \"$LLMOPS_HOME/demo/tickets.db\"\}}"
export AIRFLOW_CONN_SUPPORT_TICKETS_API="${AIRFLOW_CONN_SUPPORT_TICKETS_API:-{\"conn_type\": \"http\", \"host\": \"127.0.0.1\", \"port\": $DEMO_TICKETS_API_PORT, \"schema\": \"http\", \"password\": \"$DEMO_TICKETS_API_TOKEN\"\}}"
unset _llmops_root
