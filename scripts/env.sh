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
export PYTHONPATH="$_llmops_root/include${PYTHONPATH:+:$PYTHONPATH}"
# Demo connections (the demo's own SQLite file and loopback API); production defines these in a
# secrets backend instead. The API token is a demo value, masked in task logs as a password.
export DEMO_TICKETS_API_PORT="${DEMO_TICKETS_API_PORT:-8765}"
export DEMO_TICKETS_API_TOKEN="${DEMO_TICKETS_API_TOKEN:-demo-token-change-me}"
export AIRFLOW_CONN_SUPPORT_TICKETS_DB="${AIRFLOW_CONN_SUPPORT_TICKETS_DB:-{\"conn_type\": \"sqlite\", \"host\": \"$LLMOPS_HOME/demo/tickets.db\"\}}"
export AIRFLOW_CONN_SUPPORT_TICKETS_API="${AIRFLOW_CONN_SUPPORT_TICKETS_API:-{\"conn_type\": \"http\", \"host\": \"127.0.0.1\", \"port\": $DEMO_TICKETS_API_PORT, \"schema\": \"http\", \"password\": \"$DEMO_TICKETS_API_TOKEN\"\}}"
unset _llmops_root
