"""Synthetic customer-support tickets for the demo pipeline, with planted PII and bad rows.

Everything is generated from a seed, so the demo and the tests see the same data on every
machine. Planted PII (emails, phones, Luhn-valid card numbers, IBANs, names in free text) is
written to ``planted_pii.json`` so tests can prove none of it survives into curated data or
reports. A few rows are deliberately broken (null body, unknown category, too short, unanswered,
duplicated across API pages, a missing and an unexpected field) so validation has work to do.

The same tickets.db also holds the data of the other two training methods: ``kb_articles`` (the
internal knowledge base, for continued pre-training) and ``reply_reviews`` (customer messages with
the reply QA preferred and a worse draft, for preference tuning). They come from random streams of
their own, so the tickets, the API records and the base model's corpus do not change with them.
"""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from llmops.demo.method_data import KB_COLUMNS, REVIEW_COLUMNS, _kb_and_reviews
from llmops.demo.tickets import COLUMNS, Planted, ticket

if TYPE_CHECKING:
    from pathlib import Path


def generate(
    out_dir: Path,
    *,
    seed: int = 7,
    db_rows: int = 320,
    api_rows: int = 130,
    kb_rows: int = 160,
    review_rows: int = 240,
) -> dict[str, Any]:
    """Write tickets.db (tables tickets, kb_articles, reply_reviews), api_tickets.json,
    base_corpus.txt and planted_pii.json into out_dir.

    The knowledge base and the reply reviews come from their own random streams, after the
    tickets, so the tickets, the API records and the base corpus stay the same as before.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    planted = Planted()
    start = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    db = [ticket(rng, f"TCK-{10001 + i}", start + timedelta(hours=5 * i), planted) for i in range(db_rows)]
    api = [
        ticket(rng, f"WEB-{20001 + i}", start + timedelta(hours=7 * i + 3), planted) for i in range(api_rows)
    ]

    # Deliberately broken rows, as real exports have them.
    db[5]["body"] = None
    db[77]["body"] = None
    db[12]["category"] = "billling"
    db[140]["category"] = "unknown"
    db[33]["body"] = "help!!"
    db[201]["resolution"] = None
    api[9].pop("resolution")
    api[60]["internal_notes"] = "escalated to tier 2"
    api.insert(50, dict(api[49]))  # the same record on two pages: a pagination artefact

    kb, reviews = _kb_and_reviews(seed, kb_rows, review_rows, planted)
    _write_sqlite(
        out_dir / "tickets.db",
        {
            "tickets": (COLUMNS, db),
            "kb_articles": (KB_COLUMNS, kb),
            "reply_reviews": (REVIEW_COLUMNS, reviews),
        },
    )
    _write_atomic(out_dir / "api_tickets.json", json.dumps(api, ensure_ascii=False, indent=1))
    corpus_rng = random.Random(seed + 1000)
    corpus_planted = Planted()
    corpus = []
    for i in range(600):
        t = ticket(corpus_rng, f"C-{i}", start, corpus_planted)
        corpus.append(f"{t['subject']}\n{t['body']}")
        # Domain text the way a company's own base model would have seen it: replies as documents
        # of their own, never paired with the ticket they answer (pairing is what fine-tuning adds).
        corpus.append(t["resolution"].replace(f"Hi {t['customer_name'].split()[0]},", "Hi [PERSON_NAME],"))
    # The base model is "public": its corpus carries redaction placeholders, never personal data.
    text = "\n\n".join(corpus)
    for kind, values in corpus_planted.to_dict().items():
        for value in sorted(values, key=len, reverse=True):
            text = text.replace(value, f"[{kind.upper()}]")
    _write_atomic(out_dir / "base_corpus.txt", text + "\n")
    _write_atomic(out_dir / "planted_pii.json", json.dumps(planted.to_dict(), ensure_ascii=False, indent=1))
    return {
        "db_rows": len(db),
        "api_rows": len(api),
        "kb_rows": len(kb),
        "review_rows": len(reviews),
        "dir": str(out_dir),
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_sqlite(path: Path, tables: dict[str, tuple[tuple[str, ...], list[dict[str, Any]]]]) -> None:
    """All tables in one tmp file, then one rename: readers never see a half-written database."""
    tmp = path.with_suffix(".db.tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as conn:
        for name, (columns, rows) in tables.items():
            # The first column is the primary key; every column is TEXT.
            defs = ", ".join(
                f"{c} TEXT PRIMARY KEY" if i == 0 else f"{c} TEXT" for i, c in enumerate(columns)
            )
            conn.execute(f"CREATE TABLE {name} ({defs})")
            conn.executemany(
                f"INSERT INTO {name} VALUES ({', '.join('?' for _ in columns)})",
                [tuple(r.get(c) for c in columns) for r in rows],
            )
    conn.close()
    tmp.replace(path)
