"""Every task body (and every callable handed to an operator or as a callback) runs under
`fail_fast`: outside it, a third-party message reaches the task log and the OpenLineage FAIL event
(which stores the exception and its stack trace) unreduced, and it may quote source rows.

Read from the source with `ast`, so a new task that forgets the wrapper fails here at once.
"""

from __future__ import annotations

import ast
import logging
import traceback
from pathlib import Path

import pytest

ORCHESTRATION = Path(__file__).resolve().parents[2] / "include" / "llmops" / "orchestration"
EMAIL = "jane.doe@example.com"
# Operator arguments and default_args keys whose value Airflow calls while the task runs.
HOOK_NAMES = {"python_callable", "pre_execute", "post_execute"}
WRAPPER = "fail_fast"


def _is_hook(name: str | None) -> bool:
    return bool(name) and (name in HOOK_NAMES or (name.startswith("on_") and name.endswith("_callback")))


def _is_task(fn: ast.FunctionDef) -> bool:
    """Decorated by `task`, `task(...)`, `task.branch`, `task.x(...)`, `setup` or `teardown`."""
    for deco in fn.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute):
            target = target.value
        if isinstance(target, ast.Name) and target.id in {"task", "setup", "teardown"}:
            return True
    return False


def _wrapped(fn: ast.FunctionDef) -> bool:
    """The body, past its docstring, is one `with fail_fast():` (imports included: an import's
    error can quote configuration)."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.With):
        return False
    call = body[0].items[0].context_expr
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == WRAPPER


def _hook_values(tree: ast.AST) -> list[ast.expr]:
    values: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            values += [k.value for k in node.keywords if _is_hook(k.arg)]
        elif isinstance(node, ast.Dict):
            values += [
                v
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str) and _is_hook(k.value)
            ]
    return values


def _hook_functions(value: ast.expr, defs: dict[str, list[ast.FunctionDef]]) -> list[ast.AST]:
    """The functions a hook value runs: a function of the module by name, or the functions a
    factory of the module defines (`pre_execute=_guard(spec)`). A lambda cannot be wrapped."""
    if isinstance(value, ast.Lambda):
        return [value]
    if isinstance(value, ast.Name):
        return list(defs.get(value.id, []))
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return [
            inner
            for factory in defs.get(value.func.id, [])
            for inner in ast.walk(factory)
            if isinstance(inner, ast.FunctionDef) and inner is not factory
        ]
    return []  # defined elsewhere (another module's factory scans there) or not a callable


def boundary_callables(source: str) -> tuple[list[str], list[str]]:
    """(all task and hook callables, those not wrapped), each as ``name:line``."""
    tree = ast.parse(source)
    defs: dict[str, list[ast.FunctionDef]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            defs.setdefault(node.name, []).append(node)
    found: list[ast.AST] = [fn for fns in defs.values() for fn in fns if _is_task(fn)]
    for value in _hook_values(tree):
        found += _hook_functions(value, defs)
    unique = {id(fn): fn for fn in found}.values()
    named = [(f"{getattr(fn, 'name', 'lambda')}:{fn.lineno}", fn) for fn in unique]
    return (
        sorted(name for name, _ in named),
        sorted(name for name, fn in named if not (isinstance(fn, ast.FunctionDef) and _wrapped(fn))),
    )


SYNTHETIC = '''
from airflow.sdk import task

@task
def bare():
    return work()

@task.branch
def branch():
    """Why."""
    with fail_fast():
        return ["a"]

@task(retries=0)
def half():
    with fail_fast():
        out = work()
    return out["key"]

@teardown
def report():
    with other():
        work()

def _guard(spec):
    def guard(context):
        check(spec)
    return guard

def _callback(name):
    def callback(context):
        with fail_fast():
            record(name)
    return callback

def run():
    Operator(pre_execute=_guard(spec), post_execute=lambda context: None, python_callable=bare)
    return {"on_failure_callback": _callback("p"), "retries": 2}
'''


def test_scanner_finds_tasks_and_hooks_and_refuses_unwrapped_bodies() -> None:
    """Expect a bare body, a partly wrapped one, another context manager, an unwrapped hook made
    by a factory and a lambda hook refused; a wrapped task and a wrapped callback pass."""
    found, unwrapped = boundary_callables(SYNTHETIC)
    names = [name.partition(":")[0] for name in found]
    assert names == ["bare", "branch", "callback", "guard", "half", "lambda", "report"]
    assert [name.partition(":")[0] for name in unwrapped] == ["bare", "guard", "half", "lambda", "report"]


def test_every_orchestration_task_runs_under_fail_fast() -> None:
    """Expect no task, operator hook or callback in include/llmops/orchestration outside
    fail_fast, and the scan to have seen them all (37 tasks, the pod budget guard, the failure
    callback)."""
    seen: list[str] = []
    refused: list[str] = []
    for path in sorted(ORCHESTRATION.rglob("*.py")):
        found, unwrapped = boundary_callables(path.read_text(encoding="utf-8"))
        where = path.relative_to(ORCHESTRATION)
        seen += [f"{where}:{name}" for name in found]
        refused += [f"{where}:{name}" for name in unwrapped]
    assert not refused, f"task bodies not under `with fail_fast():`: {refused}"
    assert len(seen) >= 39, seen
    assert any(name.startswith("finetune/dag.py:guard:") for name in seen)
    assert any(name.startswith("dag_support.py:callback:") for name in seen)


def test_fail_fast_cuts_third_party_causes_out_of_airflow_signals() -> None:
    """Expect a skip raised from a third-party error to pass as a skip without the cause's text
    (a task that turns an error into a skip keeps its traceback out of the log)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.orchestration.dag_support import fail_fast

    with pytest.raises(AirflowSkipException) as info, fail_fast():
        try:
            raise ValueError(EMAIL)
        except ValueError as exc:
            raise AirflowSkipException("nothing to score with") from exc
    assert EMAIL not in "".join(traceback.format_exception(info.value))


def test_a_permanent_failure_prints_one_traceback() -> None:
    """Expect a failed gate to leave as AirflowFailException with the gate's message and its type
    as the cause (the failure callback records it), and one traceback in the log, not two."""
    from airflow.sdk.exceptions import AirflowFailException

    from llmops.evaluation.gates import GateFailed
    from llmops.orchestration.dag_support import fail_fast

    with pytest.raises(AirflowFailException) as info, fail_fast():
        raise GateFailed("1 of 1 gate failed: token_f1 0.18 is 0.42 below the minimum 0.6")
    printed = "".join(traceback.format_exception(info.value))
    assert printed.count("Traceback (most recent call last)") == 1, printed
    assert isinstance(info.value.__cause__, GateFailed)
    assert "GateFailed: 1 of 1 gate failed: token_f1 0.18 is 0.42 below the minimum 0.6" in printed


def test_failure_callback_logs_no_third_party_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Expect a ledger write that fails with a third-party error to be logged by type and place,
    never by its message."""
    from llmops.orchestration import failures

    def broken(*_args: object) -> str:
        raise ValueError(f"cannot parse '{EMAIL}'")

    monkeypatch.setattr(failures, "pinned_spec_uri", broken)
    with caplog.at_level(logging.WARNING, logger=failures.__name__):
        failures.record_task_failure(
            "p", run_id="r", dag_id="d", task_id="t", map_index=-1, try_number=1, error="boom"
        )
    assert "could not record the task failure" in caplog.text
    assert "ValueError" in caplog.text and EMAIL not in caplog.text
