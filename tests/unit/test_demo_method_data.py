"""Demo data and expectation suites for the continued-pretraining and preference methods.

The knowledge base (``kb_articles``) and the QA reply reviews (``reply_reviews``) live in the same
tickets.db as the tickets; adding them must leave the tickets, the API records and the tiny base
model's corpus exactly as they were, since tests and a trained demo model depend on them.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from llmops.demo.method_data import WARRANTY_YEARS
from llmops.demo.sample_data import generate
from llmops.demo.tickets import PRODUCTS
from llmops.quality.expectations import load_suite, validate_dataframe

GX_DIR = Path(__file__).resolve().parents[2] / "great_expectations"
# Computed from the generator before the knowledge base and reply reviews were added.
TICKETS_SHA256 = "54140c14f983f55cb72e1f16cb34f083e925aadbdcecde51e0f81b007f12476a"
BASE_CORPUS_SHA256 = "e05c5081457a4f265765928663e64cc20e798fa05e182d6ca81c3957543736b7"
API_TICKETS_SHA256 = "e2eb28e0fa63deda274637592931ad9a7e97697e0a89db60d05743cc74c7a817"
KB_COLUMNS = ["article_id", "updated_at", "author_email", "author_name", "product", "title", "body"]
REVIEW_COLUMNS = [
    "review_id",
    "created_at",
    "category",
    "subject",
    "body",
    "chosen_reply",
    "rejected_reply",
    "reviewer_name",
]
SUITES = (
    "support_kb",
    "reply_reviews",
    "llmops_sft_dataset",
    "llmops_text_corpus",
    "llmops_preference_pairs",
)
METHOD_SUITES = {
    "llmops_sft_dataset": ("prompt", "completion"),
    "llmops_text_corpus": ("text",),
    "llmops_preference_pairs": ("prompt", "chosen", "rejected"),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo")
    info = generate(out)
    with sqlite3.connect(out / "tickets.db") as conn:
        tables = {
            name: pd.read_sql_query(f"SELECT * FROM {name}", conn)
            for name in ("tickets", "kb_articles", "reply_reviews")
        }
        ticket_rows = conn.execute("SELECT * FROM tickets ORDER BY ticket_id").fetchall()
    conn.close()
    return {"dir": out, "info": info, "tables": tables, "ticket_rows": ticket_rows}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_existing_demo_data_is_unchanged(demo):
    """Expect tickets, API records and the base corpus byte-identical to before the new tables."""
    rows = json.dumps(demo["ticket_rows"], ensure_ascii=False).encode()
    assert _sha256(rows) == TICKETS_SHA256
    assert _sha256((demo["dir"] / "base_corpus.txt").read_bytes()) == BASE_CORPUS_SHA256
    assert _sha256((demo["dir"] / "api_tickets.json").read_bytes()) == API_TICKETS_SHA256
    assert demo["info"]["db_rows"] == 320 and demo["info"]["api_rows"] == 131


def test_generation_is_deterministic(demo, tmp_path):
    """Expect a second run to write the same new tables and the same planted values."""
    generate(tmp_path)
    with sqlite3.connect(tmp_path / "tickets.db") as conn:
        again = {
            name: pd.read_sql_query(f"SELECT * FROM {name}", conn)
            for name in ("kb_articles", "reply_reviews")
        }
    conn.close()
    for name, frame in again.items():
        pd.testing.assert_frame_equal(frame, demo["tables"][name])
    assert (tmp_path / "planted_pii.json").read_text() == (demo["dir"] / "planted_pii.json").read_text()


def test_kb_articles_table(demo):
    """Expect ~160 articles with the documented columns, 3-7 sentences, and the planted broken rows."""
    kb = demo["tables"]["kb_articles"]
    assert list(kb.columns) == KB_COLUMNS
    assert len(kb) == demo["info"]["kb_rows"] == 160
    assert kb["article_id"].is_unique and kb["article_id"].str.fullmatch(r"KB-\d{4}").all()
    assert kb["title"].notna().all()
    assert set(kb["product"]) <= {"all", *PRODUCTS} and set(PRODUCTS) <= set(kb["product"])
    assert kb["body"].isna().sum() == 1
    assert (kb["body"].str.len() == 5).sum() == 1
    bodies = kb["body"].dropna()
    sentences = bodies[bodies.str.len() > 5].str.count(r"[.?!]\"?(?:\s|$)")
    assert sentences.between(3, 7).all()
    assert kb["author_email"].str.endswith("@support.northwind.example").all()


def test_kb_facts_are_consistent(demo):
    """Expect each product's warranty length to be the same in every article that states it."""
    bodies = " ".join(demo["tables"]["kb_articles"]["body"].dropna())
    for product in PRODUCTS:
        stated = set(re.findall(rf"The {product} (?:has|have) a warranty of (\d+) year", bodies))
        assert stated <= {str(WARRANTY_YEARS[product])}
    assert re.search(r"warranty of \d+ year", bodies)


def test_reply_reviews_table(demo):
    """Expect ~240 reviews with the documented columns and the three planted broken pairs."""
    reviews = demo["tables"]["reply_reviews"]
    assert list(reviews.columns) == REVIEW_COLUMNS
    assert len(reviews) == demo["info"]["review_rows"] == 240
    assert reviews["review_id"].is_unique and reviews["review_id"].str.fullmatch(r"REV-\d{4}").all()
    assert set(reviews["category"]) == {"billing", "shipping", "account", "technical"}
    assert reviews["body"].notna().all() and reviews["reviewer_name"].notna().all()
    assert reviews["chosen_reply"].isna().sum() == 1
    assert reviews["rejected_reply"].isna().sum() == 1
    assert (reviews["chosen_reply"] == reviews["rejected_reply"]).sum() == 1
    pairs = reviews.dropna(subset=["chosen_reply", "rejected_reply"])
    rejected = pairs["rejected_reply"]
    # The worse drafts vary: curt, a wrong policy, no apology, blaming the customer, asking for the card.
    assert (rejected.str.len() < 40).sum() > 10
    assert rejected.str.contains("full card number").sum() > 10
    assert rejected.str.contains("60 business days|6 weeks|10 minutes|version 4.0").sum() > 5
    assert rejected.str.contains("you should|your side|your responsibility", case=False).sum() > 5


def test_every_planted_value_occurs_in_the_raw_data(demo):
    """Expect planted_pii.json to name only values that are really in the raw data, new tables included."""
    planted = json.loads((demo["dir"] / "planted_pii.json").read_text())
    raw = "\n".join(
        [
            (demo["dir"] / "api_tickets.json").read_text(encoding="utf-8"),
            *(frame.to_json(orient="records", force_ascii=False) for frame in demo["tables"].values()),
        ]
    )
    raw = raw.replace("\\/", "/")
    missing = [v for values in planted.values() for v in values if v not in raw]
    assert missing == []
    new_text = " ".join(
        str(v)
        for name, column in (("kb_articles", "body"), ("reply_reviews", "body"))
        for v in demo["tables"][name][column].dropna()
    )
    for kind in ("email", "phone", "iban", "person_name", "payment_card"):
        assert any(v in new_text for v in planted[kind]), f"no planted {kind} in the new tables"


def test_planted_pii_in_new_tables_is_detectable(demo):
    """Expect the platform's detectors to find every planted value in the new free text, so a
    pipeline on these tables can redact them."""
    from llmops.privacy.pii import scan_text

    planted = json.loads((demo["dir"] / "planted_pii.json").read_text())
    texts = list(demo["tables"]["kb_articles"]["body"].dropna()) + list(
        demo["tables"]["reply_reviews"]["body"]
    )
    missed = []
    for text in texts:
        spans = scan_text(text)
        for kind, values in planted.items():
            for value in values:
                start = text.find(value)
                if start >= 0 and not any(
                    s.pii_type == kind and s.start <= start and s.end >= start + len(value) for s in spans
                ):
                    missed.append((kind, value))
    assert missed == []


def _expectation_class(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


@pytest.mark.parametrize("name", SUITES)
def test_suites_parse_and_use_real_gx_expectations(name):
    """Expect each suite to load, name itself, give every blocking expectation a severity, and use
    only expectation types GX 1.x has."""
    import great_expectations.expectations as gxe

    suite = load_suite(GX_DIR, name)
    assert suite["name"] == name and suite["expectations"]
    for expectation in suite["expectations"]:
        assert hasattr(gxe, _expectation_class(expectation["type"])), expectation["type"]
        if expectation["type"] in (
            "expect_column_values_to_be_unique",
            "expect_column_values_to_not_be_null",
        ) and name.startswith("llmops_"):
            assert expectation["meta"]["severity"] == "blocking" and expectation["meta"]["why"]
        if expectation["type"] == "expect_column_value_lengths_to_be_between":
            assert expectation["meta"]["severity"] == "warning"


@pytest.mark.parametrize("name", METHOD_SUITES)
def test_method_suites_name_the_training_columns(name):
    """Expect each method suite to check exactly the columns its method's dataset has."""
    suite = load_suite(GX_DIR, name)
    columns = {e["kwargs"]["column"] for e in suite["expectations"] if "column" in e["kwargs"]}
    assert columns == {"key", *METHOD_SUITES[name], "split"}
    [rows] = [e for e in suite["expectations"] if e["type"] == "expect_table_row_count_to_be_between"]
    assert rows["kwargs"]["min_value"] == 2 and rows["meta"]["severity"] == "blocking"


def _method_frame(fields: tuple[str, ...], n: int = 6) -> pd.DataFrame:
    rows = [
        {
            "key": f"K-{i}",
            **{f: f"A {f} long enough to pass every length check, number {i}." for f in fields},
            "split": ("train", "validation", "test")[i % 3],
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def _mask(_: str) -> str:
    return "***"


@pytest.mark.parametrize("name", METHOD_SUITES)
def test_method_suite_passes_good_rows(name):
    """Expect a clean method dataset to meet every expectation and quarantine nothing."""
    outcome = validate_dataframe(_method_frame(METHOD_SUITES[name]), load_suite(GX_DIR, name), _mask)
    assert outcome.success and not outcome.row_failures and not outcome.warnings


@pytest.mark.parametrize("name", METHOD_SUITES)
def test_method_suite_quarantines_a_bad_row(name):
    """Expect a row with a too-short or empty text to be quarantined with a warning, not fail the run."""
    fields = METHOD_SUITES[name]
    df = _method_frame(fields)
    df.loc[2, fields[-1]] = "too short" if name == "llmops_text_corpus" else ""
    outcome = validate_dataframe(df, load_suite(GX_DIR, name), _mask)
    assert outcome.success
    assert list(outcome.row_failures) == [2]
    assert outcome.row_failures[2] == [f"expect_column_value_lengths_to_be_between({fields[-1]})"]
    assert outcome.warnings


@pytest.mark.parametrize("name", METHOD_SUITES)
def test_method_suite_blocks_duplicate_keys_and_nulls(name):
    """Expect a repeated key or a null text to fail the run: the platform's own dataset is broken."""
    suite = load_suite(GX_DIR, name)
    fields = METHOD_SUITES[name]
    duplicated = _method_frame(fields)
    duplicated.loc[4, "key"] = "K-1"
    outcome = validate_dataframe(duplicated, suite, _mask)
    assert not outcome.success
    assert any("be_unique on column 'key'" in m for m in outcome.blocking_failures)
    nulls = _method_frame(fields)
    nulls.loc[1, fields[0]] = None
    outcome = validate_dataframe(nulls, suite, _mask)
    assert not outcome.success and 1 in outcome.row_failures


def test_curated_suites_accept_the_demo_tables_and_quarantine_the_broken_rows(demo):
    """Expect the kb and review suites to pass the demo tables and quarantine exactly the broken rows
    they can see (the equal pair is left to the preference method's data contract)."""
    kb = demo["tables"]["kb_articles"]
    outcome = validate_dataframe(kb, load_suite(GX_DIR, "support_kb"), _mask)
    assert outcome.success, outcome.blocking_failures
    assert sorted(kb.loc[list(outcome.row_failures), "article_id"]) == ["KB-1024", "KB-1105"]

    reviews = demo["tables"]["reply_reviews"]
    outcome = validate_dataframe(reviews, load_suite(GX_DIR, "reply_reviews"), _mask)
    assert outcome.success, outcome.blocking_failures
    quarantined = reviews.loc[list(outcome.row_failures)]
    assert len(quarantined) == 2
    assert (quarantined["chosen_reply"].isna() | quarantined["rejected_reply"].isna()).all()
    reasons = Counter(r for rs in outcome.row_failures.values() for r in rs)
    assert reasons == Counter(
        {
            "expect_column_values_to_not_be_null(chosen_reply)": 1,
            "expect_column_values_to_not_be_null(rejected_reply)": 1,
        }
    )
