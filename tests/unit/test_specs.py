"""Pipeline spec validation: good specs load, broken ones say which file and field is wrong."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llmops.specs import SpecError, load_spec, parse_spec, spec_hash

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"


@pytest.fixture
def demo_raw() -> dict:
    return yaml.safe_load((PIPELINES / "support_bot.yaml").read_text())


def _write(tmp_path: Path, raw: dict, name: str = "support_bot") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_shipped_spec_loads():
    """Expect that every spec in include/pipelines validates."""
    specs = [load_spec(p) for p in sorted(PIPELINES.glob("*.yaml"))]
    assert specs, "no pipeline specs shipped"
    demo = next(s for s in specs if s.name == "support_bot")
    assert demo.ingest_dag_id == "support_bot__ingest"
    assert {s.kind for s in demo.sources} == {"sql", "rest"}


def test_spec_hash_is_stable_and_sensitive(demo_raw):
    """Expect that the hash ignores YAML formatting but changes with any setting."""
    a = parse_spec(demo_raw)
    b = parse_spec(copy.deepcopy(demo_raw))
    assert spec_hash(a) == spec_hash(b)
    demo_raw["training"]["hyperparameters"]["learning_rate"] = 0.001
    assert spec_hash(parse_spec(demo_raw)) != spec_hash(a)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["training"]["lora"].update(r=0),
            "training.lora.r: Input should be greater than 0 (got 0)",
        ),
        (lambda r: r["training"].update(learning_rate=0.1), "training.learning_rate: unknown field"),
        (lambda r: r.pop("gates"), "gates: required field is missing"),
        (
            lambda r: r["sources"][1].update(kind="ftp"),
            "sources[1]: Input tag 'ftp' found using 'kind' does not match",
        ),
        (
            lambda r: r["sources"][0].update(table="tickets; DROP TABLE x"),
            "sources[0].table: String should match pattern",
        ),
        (
            lambda r: r["sources"][0]["columns"].append("bad column"),
            "sources[0].columns[9]: String should match pattern",
        ),
        (
            lambda r: r["gates"].append({"metric": "token_f1"}),
            "gates[5]: a gate needs 'min', 'max', 'beat_champion_by' or 'beat_base_by'",
        ),
        (
            lambda r: r["privacy"]["columns"].update(customer_email={"action": "allow"}),
            "privacy.columns.customer_email: action 'allow' needs a justification",
        ),
        (
            lambda r: r["sources"][1]["governance"].update(purposes=["marketing"]),
            "source 'webform_api' cannot feed this pipeline: purpose 'customer_support_automation' is not among its purposes",
        ),
        (
            lambda r: r["training"].update(prompt_template="no fields"),
            "prompt_template must reference at least one column",
        ),
        (lambda r: r.update(name="Support Bot"), "name: String should match pattern"),
        (
            lambda r: r["sources"][0]["governance"].update(lawful_basis="consent"),
            "sources[0].governance: lawful_basis 'consent' needs a consent_scope",
        ),
        (
            lambda r: r["sources"][0]["governance"].update(
                lawful_basis="consent", consent_scope=["analytics"]
            ),
            "source 'helpdesk_db' cannot feed this pipeline: purpose 'customer_support_automation' is outside "
            "the consent scope (analytics)",
        ),
        (
            lambda r: r["sources"][0].update(contract={"columns": {"body": {"pattern": "(unclosed"}}}),
            "sources[0].contract.columns.body.pattern: Value error, pattern does not compile",
        ),
        (
            lambda r: r["training"].update(method="preference"),
            "training.chosen_column: required by method 'preference'",
        ),
        (
            lambda r: r["training"].update(method="continued_pretraining"),
            "training.text_columns: required by method 'continued_pretraining'",
        ),
        (
            lambda r: r["training"].update(text_columns=["body"]),
            "training.text_columns: only used by method continued_pretraining, but method is 'sft'",
        ),
        (
            lambda r: r["training"].update(beta=0.2),
            "training.beta: only used by method 'preference', but method is 'sft'",
        ),
        (
            lambda r: r["training"].update(completion_column="customer_name"),
            "training: column 'customer_name' is dropped by privacy.columns and cannot be trained on",
        ),
        (
            lambda r: r["training"].update(completion_column="answer"),
            "training: column 'answer' is not a column of any source",
        ),
        (
            lambda r: r["training"].update(
                preceding_stages=[
                    {"name": "domain", "method": "continued_pretraining", "text_columns": ["body"]},
                    {"name": "domain", "method": "continued_pretraining", "text_columns": ["subject"]},
                ]
            ),
            "preceding_stages: stage names must be unique; repeated: domain",
        ),
        (
            lambda r: r["training"].update(
                preceding_stages=[
                    {"name": "train", "method": "continued_pretraining", "text_columns": ["body"]}
                ]
            ),
            "preceding_stages: reserved stage name(s) train",
        ),
        (
            lambda r: r["training"].update(
                preceding_stages=[
                    {
                        "name": "domain",
                        "method": "continued_pretraining",
                        "text_columns": ["body"],
                        "gates": [{"metric": "token_f1", "min": 0.5}],
                    }
                ]
            ),
            "training.preceding_stages[0].gates[0].metric: Input should be",
        ),
        (
            lambda r: r["training"].update(
                method="preference",
                completion_column=None,
                chosen_column="resolution",
                rejected_column="resolution",
            ),
            "training.rejected_column: must differ from chosen_column",
        ),
        (
            lambda r: r.update(registry={"model_name": "m", "approval": {"required": True}}),
            "registry.approval.approvers: name who may approve when approval is required",
        ),
        (
            lambda r: r.update(
                registry={
                    "model_name": "m",
                    "approval": {"required": True, "approvers": ["alice"], "min_approvers": 2},
                }
            ),
            "registry.approval.min_approvers: 2 distinct approvals asked, but only 1 approver(s) named",
        ),
        (
            lambda r: r["sources"][0].update(
                table=None, query="WITH gone AS (DELETE FROM tickets RETURNING *) SELECT * FROM gone"
            ),
            "query must only read, but it writes to tickets",
        ),
    ],
)
def test_broken_spec_names_file_and_field(tmp_path, demo_raw, mutate, expected):
    """Expect that a broken spec raises SpecError naming the file and the field path."""
    mutate(demo_raw)
    path = _write(tmp_path, demo_raw)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message, message


def test_yaml_syntax_error_reports_position(tmp_path):
    """Expect that a YAML syntax error names the line and column."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsources: [\n  - oops: {\n")
    with pytest.raises(SpecError, match=r"YAML syntax error at line \d+, column \d+"):
        load_spec(path)


def test_name_must_match_file(tmp_path, demo_raw):
    """Expect that a spec whose name differs from its file name is refused."""
    path = _write(tmp_path, demo_raw, name="other_name")
    with pytest.raises(SpecError, match="name: must match the file name 'other_name'"):
        load_spec(path)


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(path)


def test_a_chained_spec_lists_its_methods_in_order(demo_raw):
    """Expect preceding stages to run first and the training block's own method to come last."""
    demo_raw["training"]["preceding_stages"] = [
        {"name": "domain", "method": "continued_pretraining", "text_columns": ["subject", "body"]}
    ]
    spec = parse_spec(demo_raw)
    assert spec.training.methods == ["continued_pretraining", "sft"]
    stage = spec.training.preceding_stages[0]
    assert stage.input_columns == ["subject", "body"] and stage.dataset_name == "text_corpus"
    assert spec.training.prompt_columns == ["category", "subject", "body"]
