"""File sources (CSV, JSON Lines, Parquet) read from a real S3 endpoint on 127.0.0.1 and from a folder."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmops import storage
from llmops.ingest.files import SourceError, extract_files
from llmops.specs.schema import FileSource

if TYPE_CHECKING:
    from collections.abc import Callable

GOVERNANCE = {"data_owner": "o", "purposes": ["p"], "lawful_basis": "contract"}


@pytest.fixture(params=["s3", "local"])
def place(request: pytest.FixtureRequest, tmp_path) -> tuple[str, str | None, Callable[[str, bytes], None]]:
    """Where the files live: (prefix URI, connection id, put(name, data))."""
    if request.param == "local":
        root, conn_id = str(tmp_path / "landing"), None
    else:
        bucket, conn_id = request.getfixturevalue("s3_bucket")
        root = f"s3://{bucket}/landing/tickets/"

    def put(name: str, data: bytes) -> None:
        storage.write_bytes(storage.join(root, name), data, conn_id=conn_id)

    return root, conn_id, put


def _source(place: tuple[str, str | None, Any], fmt: str, **kw: Any) -> FileSource:
    root, conn_id, _ = place
    return FileSource(
        kind="files",
        name="landing",
        uri=root,
        conn_id=conn_id,
        format=fmt,
        columns=kw.pop("columns", ["ticket_id", "body"]),
        governance=GOVERNANCE,
        **kw,
    )


def _jsonl(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_csv_all_text_nulls_and_order(place):
    """Expect text values, a bare empty field null but a quoted one '', rows sorted by key, quoted headers."""
    _, _, put = place
    put("b.csv", b'ticket_id,"body","ex\ntra"\nT-3,"multi\nline",x\nT-1,,y\n')
    put("a.csv", b'\xef\xbb\xbfticket_id,body,extra\nT-2,"",z\nT-10,"a, b",w\n')
    table, meta = extract_files(_source(place, "csv", pattern="*.csv"), order_by="ticket_id")
    assert table.schema == pa.schema([("ticket_id", pa.string()), ("body", pa.string())])
    assert table.to_pylist() == [
        {"ticket_id": "T-1", "body": None},
        {"ticket_id": "T-10", "body": "a, b"},
        {"ticket_id": "T-2", "body": ""},
        {"ticket_id": "T-3", "body": "multi\nline"},
    ]
    assert meta["kind"] == "files" and meta["format"] == "csv" and meta["row_count"] == 4
    assert [f["name"] for f in meta["files"]] == ["a.csv", "b.csv"]
    assert (
        meta["files"][1]["sha256"]
        == hashlib.sha256(b'ticket_id,"body","ex\ntra"\nT-3,"multi\nline",x\nT-1,,y\n').hexdigest()
    )
    assert meta["schema_drift"] == {"unexpected_fields": {"extra": 2, "ex\ntra": 2}, "missing_fields": {}}


def test_csv_delimiter_and_no_header(place):
    """Expect a headerless file's fields to be the spec's columns by position."""
    _, _, put = place
    put("t.tsv", b"T-2;second;spare\nT-1;first\n")
    with pytest.raises(SourceError, match=r"t\.tsv: row 2 has 2 fields, expected 3") as failure:
        extract_files(_source(place, "csv", csv={"delimiter": ";", "header": False}), order_by="ticket_id")
    assert "first" not in str(failure.value)  # a bad row is located, never quoted
    put("t.tsv", b"T-2;second;spare\nT-1;first;\n")
    table, meta = extract_files(
        _source(place, "csv", csv={"delimiter": ";", "header": False}), order_by="ticket_id"
    )
    assert table.to_pylist() == [
        {"ticket_id": "T-1", "body": "first"},
        {"ticket_id": "T-2", "body": "second"},
    ]
    assert meta["schema_drift"]["unexpected_fields"] == {"column_3": 2}


def test_jsonl_records_and_drift(place):
    """Expect values as the REST extractor renders them, and drift counted per record."""
    _, _, put = place
    put(
        "part-1.jsonl",
        _jsonl({"ticket_id": "T-2", "body": "two", "lang": "en"}, {"ticket_id": "T-1", "body": None})
        + b"\n   \n",
    )
    put("part-2.jsonl", _jsonl({"ticket_id": 3, "priority": 1}, {"ticket_id": "T-4", "body": 1.5}))
    table, meta = extract_files(_source(place, "jsonl", pattern="*.jsonl"), order_by="ticket_id")
    assert table.to_pylist() == [
        {"ticket_id": "3", "body": None},
        {"ticket_id": "T-1", "body": None},
        {"ticket_id": "T-2", "body": "two"},
        {"ticket_id": "T-4", "body": "1.5"},
    ]
    assert meta["schema_drift"] == {
        "unexpected_fields": {"lang": 1, "priority": 1},
        "missing_fields": {"body": 1},
    }
    assert meta["row_count"] == 4 and len(meta["files"]) == 2


def test_jsonl_malformed_line_names_file_and_line(place):
    _, _, put = place
    put("good.jsonl", _jsonl({"ticket_id": "T-1", "body": "ok"}))
    put(
        "bad.jsonl",
        b'{"ticket_id": "T-2", "body": "ok"}\n\n{"ticket_id": "T-3", "body": "secret@example.com"\n',
    )
    with pytest.raises(
        SourceError, match=r"source 'landing': bad\.jsonl line 3 is not valid JSON"
    ) as failure:
        extract_files(_source(place, "jsonl"), order_by="ticket_id")
    assert "secret@example.com" not in str(failure.value)
    put("bad.jsonl", b'["T-2", "ok"]\n')
    with pytest.raises(SourceError, match=r"bad\.jsonl line 1 is a JSON list, expected an object"):
        extract_files(_source(place, "jsonl"), order_by="ticket_id")


def test_parquet_any_type_becomes_text(place):
    """Expect typed columns rendered like the SQL/REST text (ISO timestamps, UTF-8 bytes), missing → null."""
    _, _, put = place
    table = pa.table(
        {
            "ticket_id": pa.array([2, 1], pa.int64()),
            "opened": pa.array(
                [dt.datetime(2024, 5, 1, 12, 30), dt.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp("us")
            ),
            "day": pa.array([dt.date(2024, 5, 1), None], pa.date32()),
            "raw": pa.array([b"caf\xc3\xa9", None], pa.binary()),
            "score": pa.array([0.5, None], pa.float64()),
            "ok": pa.array([True, False]),
            "amount": pa.array([decimal.Decimal("1.20"), None], pa.decimal128(5, 2)),
            "tag": pa.array(["x", "y"]).dictionary_encode(),
        }
    )
    put("2024/05/p.parquet", _parquet(table))
    columns = ["ticket_id", "opened", "day", "raw", "score", "ok", "amount", "tag", "absent"]
    out, meta = extract_files(
        _source(place, "parquet", pattern="**/*.parquet", columns=columns), order_by="ticket_id"
    )
    assert out.schema == pa.schema([(c, pa.string()) for c in columns])
    assert out.to_pylist() == [
        {"ticket_id": "1", "opened": "2024-01-02T03:04:05", "day": None, "raw": None, "score": None,
         "ok": "False", "amount": None, "tag": "y", "absent": None},
        {"ticket_id": "2", "opened": "2024-05-01T12:30:00", "day": "2024-05-01", "raw": "café", "score": "0.5",
         "ok": "True", "amount": "1.20", "tag": "x", "absent": None},
    ]  # fmt: skip
    assert meta["files"][0]["name"] == "2024/05/p.parquet"
    assert meta["schema_drift"] == {"unexpected_fields": {}, "missing_fields": {"absent": 2}}


def test_pattern_selects_files(place):
    """Expect only matching names read: '*' stays at the top level, hidden files never count."""
    _, _, put = place
    put("a.csv", b"ticket_id,body\nT-1,a\n")
    put("notes.txt", b"not csv at all\n")
    put("old/b.csv", b"ticket_id,body\nT-2,b\n")
    put(".c.csv.tmp", b"ticket_id,body\nT-3,c\n")
    table, meta = extract_files(_source(place, "csv", pattern="*.csv"), order_by="ticket_id")
    assert table.column("ticket_id").to_pylist() == ["T-1"]
    table, meta = extract_files(_source(place, "csv", pattern="**/*.csv"), order_by="ticket_id")
    assert table.column("ticket_id").to_pylist() == ["T-1", "T-2"]
    assert [f["name"] for f in meta["files"]] == ["a.csv", "old/b.csv"]


def test_no_match_names_source_uri_and_pattern(place):
    root, _, put = place
    put("a.csv", b"ticket_id,body\nT-1,a\n")
    with pytest.raises(SourceError, match="no files match") as failure:
        extract_files(_source(place, "jsonl", pattern="*.jsonl"), order_by="ticket_id")
    message = str(failure.value)
    assert "'landing'" in message and root in message and "'*.jsonl'" in message


def test_same_files_same_table(place):
    """Expect identical tables and metadata from identical files, ties kept in file-name order."""
    _, _, put = place
    put("2.csv", b"ticket_id,body\nT-1,from-2\nT-0,zero\n")
    put("1.csv", b"ticket_id,body\nT-1,from-1\nT-2,two\n")
    source = _source(place, "csv")
    first, meta1 = extract_files(source, order_by="ticket_id")
    second, meta2 = extract_files(source, order_by="ticket_id")
    assert first.equals(second) and meta1 == meta2
    assert first.column("body").to_pylist() == ["zero", "from-1", "from-2", "two"]


def test_sample_is_seeded_and_keyed(place):
    _, _, put = place
    put("a.jsonl", _jsonl(*[{"ticket_id": f"T-{i:03d}", "body": str(i)} for i in range(200)]))
    source = _source(place, "jsonl", sample={"fraction": 0.25, "seed": 7})
    a, meta = extract_files(source, order_by="ticket_id")
    b, _ = extract_files(source, order_by="ticket_id")
    assert a.equals(b) and 20 < a.num_rows < 80
    assert meta["sample"] == {"fraction": 0.25, "seed": 7} and meta["row_count"] == a.num_rows


def test_rows_that_are_not_utf8_are_noted_for_quarantine_not_fatal(place):
    """Expect a CSV row and a JSON Lines row holding bytes that are not UTF-8 to be read (U+FFFD in
    place of the bytes) and listed by key and column for validation to quarantine, the other rows
    as they are; before, the whole source failed."""
    from llmops.ingest.common import UNDECODABLE

    _, _, put = place
    put("a.csv", b"ticket_id,body\nT-1,fine\nT-2,mail jane@example.com \xff bad\nT-3,Gr\xc3\xbc\xc3\x9fe\n")
    table, meta = extract_files(_source(place, "csv", pattern="*.csv"), order_by="ticket_id")
    assert table.column("body").to_pylist() == ["fine", "mail jane@example.com \ufffd bad", "Grüße"]
    assert meta[UNDECODABLE] == [{"key": "T-2", "columns": ["body"]}]

    put("b.jsonl", b'{"ticket_id": "J-1", "body": "ok"}\n{"ticket_id": "J-2", "body": "bad \xfe here"}\n')
    table, meta = extract_files(_source(place, "jsonl", pattern="*.jsonl"), order_by="ticket_id")
    assert table.column("ticket_id").to_pylist() == ["J-1", "J-2"]
    assert meta[UNDECODABLE] == [{"key": "J-2", "columns": ["body"]}]


def test_an_unreadable_file_is_named_without_the_readers_text(place):
    """Expect a file that is not Parquet to fail the source naming the file and Arrow's error type,
    not Arrow's message (third-party text is never passed on: it can quote the data)."""
    _, _, put = place
    put("a.parquet", b"ticket_id,body\nT-1,write to jane@example.com\n")
    with pytest.raises(SourceError) as info:
        extract_files(_source(place, "parquet", pattern="*.parquet"), order_by="ticket_id")
    message = str(info.value)
    assert "a.parquet is not a readable Parquet file (pyarrow.lib.ArrowInvalid: message withheld" in message
    assert "magic bytes" not in message
