"""The `llmops` command: demo set-up and run, spec checks, ledger verification, serving, scaffolding."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

log = logging.getLogger("llmops")

DEMO_BASE_MODEL = "tiny-support-base"


def demo_dir() -> Path:
    from llmops.settings import get_settings

    return get_settings().home / "demo"


def cmd_demo_data(_: argparse.Namespace) -> int:
    from llmops.demo.sample_data import generate

    info = generate(demo_dir())
    print(json.dumps(info))
    return 0


def build_demo_model(force: bool = False) -> Path:
    """Build the demo's tiny base model once; later calls reuse it."""
    from llmops.settings import get_settings
    from llmops.training.tiny_model import build_tiny_model

    out = Path(get_settings().model_store) / DEMO_BASE_MODEL
    if (out / "config.json").is_file() and not force:
        return out
    corpus_file = demo_dir() / "base_corpus.txt"
    if not corpus_file.is_file():
        from llmops.demo.sample_data import generate

        generate(demo_dir())
    corpus = [block for block in corpus_file.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    build_tiny_model(corpus, out)
    return out


def cmd_build_demo_model(args: argparse.Namespace) -> int:
    print(build_demo_model(force=args.force))
    return 0


def cmd_bootstrap_demo(_: argparse.Namespace) -> int:
    from llmops.demo.sample_data import generate

    generate(demo_dir())
    print(f"demo data: {demo_dir()}")
    print(f"base model: {build_demo_model()}")
    return 0


def _run_dag(dag_id: str, conf: dict | None = None) -> str:
    from airflow.dag_processing.dagbag import DagBag

    from llmops.settings import get_settings

    bag = DagBag(dag_folder=str(get_settings().project_dir / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags.get(dag_id)
    if dag is None:
        raise SystemExit(f"DAG {dag_id} not found; have: {sorted(bag.dags)}")
    run = dag.test(run_conf=conf or {})
    return str(run.state)


#: Demo pipelines of the methods beyond SFT (their data lives in the same demo database).
METHOD_DEMOS = ("northwind_kb", "support_replies")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo pipelines end to end: data, API, base model, then each ingest and finetune DAG.
    Quiet unless --verbose: the logs go to a file, the terminal shows progress and a summary."""
    from llmops.demo.console import DemoConsole
    from llmops.settings import get_settings

    started = time.monotonic()
    settings = get_settings()
    log_file = demo_dir() / "logs" / f"demo-{time.strftime('%Y%m%dT%H%M%S')}.log"
    pipelines = ["support_bot", *([] if args.only_sft else METHOD_DEMOS)]
    states: dict[str, str] = {}
    with DemoConsole(log_file, verbose=args.verbose) as console:
        if not args.verbose:
            console.say(f"llmops demo: {', '.join(pipelines)} (logs: {log_file}; --verbose shows them here)")
        states = _run_demo_pipelines(console, pipelines, args.max_steps)
    summary = _demo_summary(pipelines, states)
    _print_demo_summary(summary, settings.mlflow_tracking_uri, time.monotonic() - started)
    ok = all(row["state"] == "success" and row["champion"] for row in summary)
    return 0 if ok else 1


def _run_demo_pipelines(console: Any, pipelines: list[str], max_steps: int | None) -> dict[str, str]:
    """Each pipeline's ingest then finetune DAG; ``{pipeline: finetune state or 'ingest <state>'}``."""
    import threading

    from llmops.demo.sample_data import generate
    from llmops.demo.tickets_api import make_server

    console.say("  preparing the demo data and the tiny base model (built once, then reused)")
    generate(demo_dir())
    build_demo_model()
    token = os.environ.get("DEMO_TICKETS_API_TOKEN", "demo-token-change-me")
    port = int(os.environ.get("DEMO_TICKETS_API_PORT", "8765"))
    records = json.loads((demo_dir() / "api_tickets.json").read_text(encoding="utf-8"))
    server = make_server(records, token, port=port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conf = {"max_steps": max_steps} if max_steps else {}
    states: dict[str, str] = {}
    try:
        for pipeline in pipelines:
            state = _run_dag_shown(console, f"{pipeline}__ingest")
            states[pipeline] = (
                _run_dag_shown(console, f"{pipeline}__finetune", conf)
                if state == "success"
                else f"ingest {state}"
            )
    finally:
        server.shutdown()
    return states


def _run_dag_shown(console: Any, dag_id: str, conf: dict | None = None) -> str:
    console.dag_started(dag_id)
    state = "failed"
    try:
        state = _run_dag(dag_id, conf)
    finally:
        console.dag_finished(dag_id, state.removeprefix("DagRunState."))
    return state.removeprefix("DagRunState.")


def _demo_summary(pipelines: list[str], states: dict[str, str]) -> list[dict[str, Any]]:
    """Per pipeline: finetune state, decision, champion version, headline metrics, report path."""
    from llmops import storage
    from llmops.registry.mlflow_registry import alias_version
    from llmops.settings import get_settings

    rows = []
    for pipeline in pipelines:
        row: dict[str, Any] = {"pipeline": pipeline, "state": states.get(pipeline, "not run")}
        try:
            latest = storage.read_json(storage.join(get_settings().reports_root, pipeline, "LATEST.json"))
            report = storage.read_json(latest["json"])
        except Exception:  # no report (the run failed before it): the row says what is known
            latest, report = {}, {}
        summary = report.get("summary") or {}
        metrics = {
            k: v for k, v in (summary.get("headline_metrics") or {}).items() if isinstance(v, int | float)
        }
        row.update(
            decision=summary.get("decision") or "-",
            champion=alias_version(pipeline, "champion"),
            metrics=", ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:2]) or "-",
            report=latest.get("html") or "-",
        )
        rows.append(row)
    return rows


def _print_demo_summary(rows: list[dict[str, Any]], tracking_uri: str, wall_s: float) -> None:
    print()
    print(f"{'pipeline':<16} {'finetune':<9} {'decision':<22} {'champion':<9} key metrics")
    for r in rows:
        champion = f"v{r['champion']}" if r["champion"] else "-"
        print(
            f"{r['pipeline']:<16} {r['state']:<9} {str(r['decision'])[:22]:<22} {champion:<9} {r['metrics']}"
        )
    print()
    print(f"audit report (HTML): {rows[0]['report']}")
    print(f"MLflow tracking URI: {tracking_uri}")
    print(f"wall time          : {wall_s:.0f} s")
    print()
    print("next:")
    print("  make airflow-ui              the DAGs, runs and Compliance reports in the Airflow UI")
    print("  make serve                   serve support_bot's champion on 127.0.0.1:5001")
    print(
        "  .venv/bin/llmops runs support_bot      its runs; llmops report support_bot --open: the latest report"
    )
    print("  .venv/bin/llmops ledger-verify   check the governance ledger")
    print("  .venv/bin/llmops new-pipeline <name>   start your own pipeline from the demo spec")


def cmd_validate_specs(args: argparse.Namespace) -> int:
    from llmops.settings import get_settings
    from llmops.specs import SpecError, load_spec
    from llmops.specs.checks import all_problems
    from llmops.specs.collisions import cross_spec_problems

    loaded: dict[Path, PipelineSpec] = {}
    reports: dict[Path, list[str] | str] = {}  # a spec's problems, or why it could not be checked
    for path in sorted(get_settings().pipelines_dir.glob("*.yaml")):
        try:
            loaded[path] = load_spec(path)
            reports[path] = all_problems(loaded[path], connections=not args.offline)
        except SpecError as exc:
            reports[path] = f"FAIL {exc}"
        except Exception as exc:  # one spec must not stop the others from being checked
            reports[path] = f"FAIL {path}: could not be checked ({type(exc).__name__})"
    # What one pipeline claims (its registered model, its batch-inference table) no other may claim.
    clashes = cross_spec_problems(loaded)
    failed = 0
    for path, report in reports.items():
        problems = report if isinstance(report, str) else report + clashes.get(path, [])
        if isinstance(problems, str):
            print(problems)
        elif problems:
            print(f"FAIL {path}:\n" + "\n".join(f"  - {p}" for p in problems))
        else:
            spec = loaded[path]
            print(f"ok   {path.name}: {spec.ingest_dag_id}, {spec.finetune_dag_id}")
            continue
        failed += 1
    return 1 if failed else 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    """Verify the chain (since the latest anchor, or with --full from genesis and every anchor);
    print where it breaks and whether appends are blocked."""
    from llmops.ledger import get_ledger

    ledger = get_ledger()
    result = ledger.unblock() if args.unblock else ledger.verify(full=args.full)
    blocked = ledger.blocked()
    if args.json:
        print(json.dumps({**result.__dict__, "blocked": blocked}))
    else:
        print(_verification_text(result, blocked))
    return 0 if result.ok else 2


def _verification_text(result: Any, blocked: str | None) -> str:
    """The verification for a person: sound or where it breaks, what was checked, what to do."""
    scope = (
        f"every record from genesis and {result.anchors_checked} anchor(s)"
        if result.full
        else f"from the anchor at record {result.anchored_seq} ({result.checked} record(s))"
        if result.anchored_seq
        else f"{result.checked} record(s)"
    )
    head = f"head {result.head_hash[:16]}…" if result.head_hash else "empty"
    if result.ok:
        lines = [f"ledger sound: {result.records} records, {head}; checked {scope}"]
    else:
        lines = [f"ledger BROKEN: {result.problem}", f"checked {scope}"]
    if blocked:
        lines.append(f"appends are blocked: {blocked}")
        lines.append("restore the ledger database from a backup, then run: llmops ledger-verify --unblock")
    elif not result.full and result.ok:
        lines.append("older records: llmops ledger-verify --full")
    return "\n".join(lines)


def cmd_ledger_rotate_key(_: argparse.Namespace) -> int:
    """Retire the local ledger key file's key (it still verifies old rows) and create a new one."""
    from llmops.ledger.keys import CONN_ID_ENV, DEFAULT_CONN_ID, rotate_local_key

    conn_id = os.environ.get(CONN_ID_ENV, DEFAULT_CONN_ID)
    if os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"):
        print(
            f"the ledger key comes from connection '{conn_id}': put the new key in its password and "
            'the old one in its extra {"retired_keys": [...]}',
            file=sys.stderr,
        )
        return 2
    print(json.dumps({"key_id": rotate_local_key()}))
    return 0


def cmd_sync_roles(_: argparse.Namespace) -> int:
    """Create the governance roles and every llmops DAG's per-DAG permissions (FAB auth manager)."""
    from llmops.governance.roles import sync_roles
    from llmops.settings import get_settings
    from llmops.specs import SpecError, load_spec

    specs = []
    for path in sorted(get_settings().pipelines_dir.glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:  # half-synced roles would be worse than none: change nothing
            print(f"FAIL {exc}\nno role changed: fix the spec and run again", file=sys.stderr)
            return 2
    print(json.dumps(sync_roles(specs).to_dict()))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from llmops.reports.listing import pipeline_reports, runs_table

    print(runs_table(pipeline_reports(args.pipeline), limit=args.limit))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from llmops.reports.listing import latest_report_text, pipeline_reports

    text, html = latest_report_text(pipeline_reports(args.pipeline))
    print(text)
    if args.open and html:
        import webbrowser

        webbrowser.open(html if "://" in html else Path(html).resolve().as_uri())
    return 0 if html else 1


def cmd_seal_subject(_: argparse.Namespace) -> int:
    """Read a data subject's identifier from standard input (never the command line, which shell
    history and process lists keep) and print it sealed, for the erasure request's trigger form."""
    import getpass
    import sys

    from llmops.governance.sealed import SealedSubjectError, seal

    if sys.stdin.isatty():
        identifier = getpass.getpass("Data subject identifier (not echoed): ")
    else:
        identifier = sys.stdin.readline()
    try:
        print(seal(identifier.strip()))
    except SealedSubjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


#: The spec `llmops new-pipeline` copies: the demo's, every section filled in and commented.
SCAFFOLD_TEMPLATE = "support_bot"
#: lower_snake_case: lowercase words of letters and digits joined by single underscores.
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def scaffold_dag_source(name: str) -> str:
    """The thin DAG file of pipeline `name`. With [core] dag_discovery_safe_mode on (Airflow's default)
    a file is parsed only if it mentions "airflow" and "dag": the docstring says what the file is."""
    return (
        f'"""Airflow DAGs of the {name} pipeline, built from include/pipelines/{name}.yaml.\n\n'
        "One thin file per pipeline spec: a broken spec shows up as an Airflow import error of this file\n"
        "only, and the other pipelines keep loading. Keep the words Airflow and DAG in this docstring:\n"
        "with [core] dag_discovery_safe_mode on (the default) Airflow skips a file without them.\n"
        '"""\n\n'
        "from llmops.orchestration.factory import build_pipeline_dags\n\n"
        f'build_pipeline_dags("{name}", globals())\n'
    )


def _scaffold_template(pipelines_dir: Path) -> Path:
    """The project's copy of the demo spec, or the one shipped next to this package."""
    local = pipelines_dir / f"{SCAFFOLD_TEMPLATE}.yaml"
    shipped = Path(__file__).resolve().parents[1] / "pipelines" / local.name
    return local if local.is_file() else shipped


def scaffold_spec_text(name: str, template: str) -> str:
    """The demo spec made pipeline `name`'s own: every name derived from the demo's (the registered
    model, the batch-inference table, the webhook connection) derived from `name`, each connection
    it names `<name>_<last word>`, a placeholder description, its own tags and header comment."""
    import yaml

    from llmops.specs import parse_spec
    from llmops.specs.checks import other_connections, source_connections

    demo = parse_spec(yaml.safe_load(template), SCAFFOLD_TEMPLATE)
    text = template
    conn_ids = sorted(set({**source_connections(demo), **other_connections(demo)}.values()))
    renamed = {conn: f"{name}_{conn.rsplit('_', 1)[-1]}" for conn in conn_ids}
    if len(set(renamed.values())) < len(renamed):
        renamed = {conn: f"{name}_{conn}" for conn in conn_ids}
    for conn, new in renamed.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(conn)}(?![\w.-])", new, text)
    text = text.replace(demo.name, name)
    text = text[text.index("name:") :] if text.startswith("name:") else text[text.index("\nname:") + 1 :]
    description = f"TODO: what {name} does and for whom (shown as the documentation of its DAGs)."
    text = re.sub(r"^description: .*$", f"description: {json.dumps(description)}", text, count=1, flags=re.M)
    text = re.sub(r"^tags: .*$", f"tags: [{name}]", text, count=1, flags=re.M)
    header = (
        f"# {name}: scaffolded by `llmops new-pipeline` from the demo's {demo.name}.yaml. Its own names\n"
        "# (registered model, batch-inference table, connections) are set; the sources, privacy,\n"
        "# training, gates and access are still the demo's support-ticket pipeline: edit them.\n"
    )
    return header + text


def cmd_new_pipeline(args: argparse.Namespace) -> int:
    """Write include/pipelines/<name>.yaml (the demo spec with the pipeline's own names) and its thin
    DAG file, then say what to edit. Nothing is written if anything is in the way."""
    import yaml

    from llmops.settings import get_settings
    from llmops.specs import SpecError, load_spec, parse_spec
    from llmops.specs.checks import other_connections, source_connections
    from llmops.specs.collisions import cross_spec_problems
    from llmops.specs.schema import PIPELINE_NAME

    name = args.name
    if not (SNAKE_CASE.match(name) and PIPELINE_NAME.match(name)):
        print(
            f"pipeline name {name!r} is not lower_snake_case: 2 to 41 characters, a lowercase letter "
            "first, then lowercase letters and digits in words joined by single underscores "
            "(e.g. contracts_bot)",
            file=sys.stderr,
        )
        return 2
    settings = get_settings()
    spec_file = settings.pipelines_dir / f"{name}.yaml"
    dag_file = settings.project_dir / "dags" / f"{name}.py"
    for path in (spec_file, dag_file):
        if path.exists():
            print(f"pipeline {name!r} exists already: {path} (pick another name)", file=sys.stderr)
            return 2
    template = _scaffold_template(settings.pipelines_dir)
    try:
        text = scaffold_spec_text(name, template.read_text(encoding="utf-8"))
        spec = parse_spec(yaml.safe_load(text), spec_file)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # a SpecError is a ValueError
        print(f"not created: the demo spec it copies ({template}) is unusable: {exc}", file=sys.stderr)
        return 2
    others: dict[Path, PipelineSpec] = {}
    for path in sorted(settings.pipelines_dir.glob("*.yaml")):
        try:
            others[path] = load_spec(path)
        except SpecError:
            continue  # validate-specs reports it; it claims nothing until it parses
    clashes = cross_spec_problems({**others, spec_file: spec}).get(spec_file)
    if clashes:
        print(f"not created: {spec_file} would clash with another pipeline:", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in clashes), file=sys.stderr)
        return 2
    spec_file.write_text(text, encoding="utf-8")
    dag_file.parent.mkdir(parents=True, exist_ok=True)
    dag_file.write_text(scaffold_dag_source(name), encoding="utf-8")
    _print_next_steps(spec, spec_file, dag_file, {**source_connections(spec), **other_connections(spec)})
    return 0


def _print_next_steps(spec: PipelineSpec, spec_file: Path, dag_file: Path, conns: dict[str, str]) -> None:
    dag_ids = [spec.ingest_dag_id, spec.finetune_dag_id, f"{spec.name}__monitor"]
    if spec.batch_inference is not None:
        dag_ids.append(spec.batch_inference_dag_id)
        table = f", batch_inference.target_table {spec.batch_inference.target_table}"
    else:
        table = ""
    conn_ids = sorted(set(conns.values()))
    print(f"created {spec_file}")
    print(f"created {dag_file} (Airflow DAGs {', '.join(dag_ids)})")
    print(
        f"its own names: registry.model_name {spec.registry.model_name}{table}, connections {', '.join(conn_ids)}"
    )
    print(f"\nthe rest is the demo's support-ticket pipeline; edit {spec_file}:")
    for step in (
        "description, owner, purpose, tags",
        "sources: your tables or endpoints, columns and contracts, and each source's governance "
        "(data_owner, purposes, lawful_basis, classification, retention_days)",
        "dataset (key, subject_column), validation.suite (great_expectations/expectations/<suite>.json) "
        "and privacy: for your columns",
        "training (base_model, prompt_template, completion_column), evaluation and gates",
        "batch_inference (the table it scores, key_column; or remove the block), deployment, cost, access",
    ):
        print(f"  - {step}")
    print("define the connections it names (Admin > Connections, or environment variables):")
    for conn_id in conn_ids:
        print(f"  - {conn_id} (AIRFLOW_CONN_{conn_id.upper()})")
    print("then check it: llmops validate-specs")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a pipeline's champion (or a version) with MLflow's scoring server, in the foreground."""
    from llmops.deployment.serving import interpreter_env, serve_command
    from llmops.registry import mlflow_registry
    from llmops.specs import load_pipeline

    spec = load_pipeline(args.pipeline)
    name = spec.registry.model_name
    model_uri = (
        f"models:/{name}/{args.version}" if args.version else f"models:/{name}@{mlflow_registry.CHAMPION}"
    )
    tracking_uri = mlflow_registry.configure()
    command = serve_command(model_uri, host=args.host, port=args.port, workers=args.workers)
    print(f"serving {model_uri} on http://{args.host}:{args.port}/invocations (MLflow at {tracking_uri})")
    include = str(Path(__file__).resolve().parents[1])
    env = interpreter_env(
        {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PYTHONPATH": os.pathsep.join(p for p in (include, os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    os.execve(command[0], command, env)
    return 0  # pragma: no cover - execve does not return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo-data", help="generate the demo's sample data").set_defaults(func=cmd_demo_data)
    p = sub.add_parser("build-demo-model", help="build the tiny demo base model")
    p.add_argument("--force", action="store_true", help="build it again even if it exists")
    p.set_defaults(func=cmd_build_demo_model)
    sub.add_parser("bootstrap-demo", help="sample data + base model").set_defaults(func=cmd_bootstrap_demo)
    p = sub.add_parser("demo", help="run the demo pipelines end to end")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show Airflow's and the jobs' logs here instead of in the log file",
    )
    p.add_argument("--max-steps", type=int, default=None, help="cap training steps (quick runs)")
    p.add_argument(
        "--only-sft",
        action="store_true",
        help="run only support_bot (sft), not the continued pre-training and sft -> preference demos",
    )
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("validate-specs", help="check every pipeline spec (and the connections it names)")
    p.add_argument("--offline", action="store_true", help="do not look the connections up")
    p.set_defaults(func=cmd_validate_specs)
    p = sub.add_parser("ledger-verify", help="verify the governance ledger's hash chain")
    p.add_argument(
        "--unblock", action="store_true", help="lift a block on appends if the whole chain verifies again"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (for scripts)")
    p.add_argument(
        "--full",
        action="store_true",
        help="verify from genesis and every anchor (default: since the latest anchor)",
    )
    p.set_defaults(func=cmd_ledger_verify)
    sub.add_parser(
        "ledger-rotate-key", help="retire the local ledger key (old rows still verify) and create a new one"
    ).set_defaults(func=cmd_ledger_rotate_key)
    sub.add_parser(
        "seal-subject", help="seal a data subject's identifier (read from stdin) for an erasure request"
    ).set_defaults(func=cmd_seal_subject)
    sub.add_parser(
        "sync-roles",
        help="create the governance roles and each DAG's per-DAG permissions in the FAB auth manager",
    ).set_defaults(func=cmd_sync_roles)
    p = sub.add_parser("runs", help="a pipeline's runs and model versions, newest first (from their reports)")
    p.add_argument("pipeline", help="the pipeline's spec name, e.g. support_bot")
    p.add_argument("--limit", type=int, default=20, help="how many to show (default 20)")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("report", help="where a pipeline's latest audit report is and what it decided")
    p.add_argument("pipeline", help="the pipeline's spec name, e.g. support_bot")
    p.add_argument("--open", action="store_true", help="open its HTML in the default browser")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("serve", help="serve a pipeline's champion over HTTP (mlflow models serve)")
    p.add_argument("pipeline", help="the pipeline whose model to serve (its spec name, e.g. support_bot)")
    p.add_argument("--version", default=None, help="a registered version instead of the champion")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=5001, help="port to listen on (default 5001)")
    p.add_argument("--workers", type=int, default=1, help="scoring-server worker processes (default 1)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser(
        "new-pipeline",
        help="scaffold a pipeline: a copy of the demo spec with its own names, and its Airflow DAG file",
    )
    p.add_argument(
        "name",
        help="the new pipeline's name, lower_snake_case (e.g. contracts_bot): the spec and DAG file "
        "names, the DAG id prefix and the registered model name",
    )
    p.set_defaults(func=cmd_new_pipeline)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
