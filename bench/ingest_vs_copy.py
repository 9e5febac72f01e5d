"""SQL extraction throughput and memory: this project's extractor against PostgreSQL's own COPY.

Baseline: `COPY (SELECT ...) TO STDOUT (FORMAT csv)` through psycopg into a plain file (no parsing,
no Parquet, no encryption): the fastest way to get rows out of PostgreSQL. Measured in the same run,
on the same table, each in a fresh process so that peak RSS is the extraction's own.

The project's extractor does more: it parses the stream into Arrow, writes Parquet (zstd), hashes
it, and encrypts it (AES-256-GCM) into a staged snapshot part. Peak RSS is measured at 1x and at
`--scale`x the table size to show that memory does not grow with the table.

Run (needs PostgreSQL on 127.0.0.1:5432, database `test`):
    .venv/bin/python bench/ingest_vs_copy.py [--rows 2000000] [--scale 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
URL = os.environ.get("LLMOPS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PSYCOPG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
COLUMNS = ["ticket_id", "created_at", "customer_email", "category", "subject", "body"]

CREATE = """
DROP TABLE IF EXISTS {table};
CREATE TABLE {table} AS
SELECT g AS id,
       'TCK-' || lpad(g::text, 9, '0') AS ticket_id,
       timestamptz '2026-01-01' + g * interval '1 second' AS created_at,
       'customer' || g || '@example.com' AS customer_email,
       (ARRAY['billing','shipping','account','technical'])[1 + g % 4] AS category,
       'Order #' || (g::bigint * 7919 % 100000) || ' has a problem' AS subject,
       'Hello, I ordered item ' || md5(g::text) || ' and it arrived ' ||
         (ARRAY['late','damaged','twice','without the manual'])[1 + g % 4] ||
         '. Please refund me or send a replacement. ' || md5((g * 3)::text) AS body
FROM generate_series(1, {rows}) AS g;
ALTER TABLE {table} ADD PRIMARY KEY (id);
ANALYZE {table};
"""

COPY_CHILD = """
import sys, time, psycopg, json
table, out, columns = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.perf_counter()
size = 0
with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres") as conn, open(out, "wb") as fh:
    with conn.cursor() as cur, cur.copy(f"COPY (SELECT {columns} FROM {table} ORDER BY ticket_id) TO STDOUT (FORMAT csv)") as copy:
        for chunk in copy:
            fh.write(chunk)
            size += len(chunk)
print(json.dumps({"seconds": time.perf_counter() - started, "bytes": size}))
"""

LLMOPS_CHILD = """
import sys, time, json
import pyarrow as pa
from llmops import snapshots
from llmops.ingest.sql import iter_sql_batches, plan_sql
from llmops.specs.schema import SqlSource

table, lake, url, columns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
source = SqlSource(kind="sql", name="bench", conn_id="unused", table=table, columns=columns,
                   governance={"data_owner": "bench", "purposes": ["bench"], "lawful_basis": "contract"})
started = time.perf_counter()
(item,) = plan_sql(source, "ticket_id", None, url)
part = snapshots.stage_part(
    lake_root=lake, pipeline="bench", dataset=table, run_id="bench", part=0,
    batches=iter_sql_batches(source, item, "ticket_id", url),
    schema=pa.schema([(c, pa.string()) for c in columns]), kek=bytes(range(32)))
print(json.dumps({"seconds": time.perf_counter() - started, "rows": part["rows"], "parquet_bytes": part["bytes"]}))
"""


def _psql(sql: str) -> None:
    import psycopg

    with psycopg.connect(PSYCOPG_DSN, autocommit=True) as conn:
        conn.execute(sql)  # no parameters: sent as is


def _child(code: str, *args: str) -> tuple[dict, float]:
    """Run a measurement in a fresh process; return its JSON result and its peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "include")}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {output[-2000:]}")
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    return json.loads(output.strip().splitlines()[-1]), peak_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--scale", type=int, default=4, help="second table size for the memory check")
    parser.add_argument("--keep", action="store_true", help="keep the generated tables")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))

    sizes = {"1x": args.rows, f"{args.scale}x": args.rows * args.scale}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        for label, rows in sizes.items():
            table = f"bench_tickets_{label}"
            started = time.perf_counter()
            _psql(CREATE.format(table=table, rows=rows))
            print(f"[{label}] generated {rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
            copy, copy_rss = _child(COPY_CHILD, table, f"{tmp}/{table}.csv", ", ".join(COLUMNS))
            ours, ours_rss = _child(LLMOPS_CHILD, table, f"{tmp}/lake", URL, ",".join(COLUMNS))
            results[label] = {
                "rows": rows,
                "copy": copy,
                "copy_rss": copy_rss,
                "ours": ours,
                "ours_rss": ours_rss,
            }
            os.unlink(f"{tmp}/{table}.csv")
            if not args.keep:
                _psql(f"DROP TABLE {table}")

    print()
    print(f"{'size':>5} {'method':<28} {'rows/s':>12} {'MB/s (CSV)':>11} {'seconds':>8} {'peak RSS':>10}")
    for label, r in results.items():
        mb = r["copy"]["bytes"] / 1e6
        for name, res, rss in (
            ("COPY -> file (baseline)", r["copy"], r["copy_rss"]),
            ("llmops -> Parquet+AES-GCM", r["ours"], r["ours_rss"]),
        ):
            print(
                f"{label:>5} {name:<28} {r['rows'] / res['seconds']:>12,.0f} {mb / res['seconds']:>11.1f} "
                f"{res['seconds']:>8.1f} {rss:>8.0f} MiB"
            )
        print(f"{label:>5} throughput ratio llmops/COPY: {r['copy']['seconds'] / r['ours']['seconds']:.2f}x")
    first, second = list(results.values())
    print(
        f"peak RSS of the extractor at {args.scale}x vs 1x rows: {second['ours_rss'] / first['ours_rss']:.2f}x"
    )


if __name__ == "__main__":
    main()
