"""Ledger verification cost: incremental (since the latest anchor) against full (from genesis).

Why: `verify()` runs before every report and every ``LLMOPS_LEDGER_ANCHOR_EVERY`` appends; it must
cost what was appended since the last anchor, not what the ledger holds. For ledgers of 1k, 10k and
100k records (built in bulk with the real HMAC chain, then anchored), append K records through
`Ledger.append`, then time the incremental check alone (``check``: read-only), `verify()` (the
check plus writing the anchor: one SQLite commit and one fsynced append, a constant) and
`verify(full=True)`, on the same ledger in the same run, and print the first two as ratios of the
full verification. Each figure is the median of ``--repeat`` rounds (each appends K fresh records).

SQLite in a temporary folder, anchors in a JSON Lines file next to it. Run:

    .venv/bin/python bench/ledger_verify.py [--sizes 1000 10000 100000] [--new 10 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
os.environ["LLMOPS_LEDGER_ANCHOR_EVERY"] = "0"  # anchors only where this script verifies

from llmops.ledger.anchors import FileAnchorStore  # noqa: E402
from llmops.ledger.chain import GENESIS, canonical, record_hash  # noqa: E402
from llmops.ledger.keys import LedgerKeys  # noqa: E402
from llmops.ledger.store import Ledger, event_id_for, ledger_events, ledger_head  # noqa: E402
from llmops.ledger.verification import since_anchor  # noqa: E402

PAYLOAD = {"snapshot_id": "0" * 20, "row_count": 1234, "sha256": "f" * 64, "files": [{"name": "part-0"}]}


def build(folder: Path, size: int, keys: LedgerKeys) -> Ledger:
    """A ledger of `size` records, inserted in bulk (the chain computed as appends would), anchored."""
    ledger = Ledger(
        f"sqlite:///{folder / 'ledger.db'}", keys=keys, anchors=FileAnchorStore(folder / "a.jsonl")
    )
    prev, rows = GENESIS, []
    for seq in range(1, size + 1):
        fields = {
            "seq": seq,
            "event_id": event_id_for("bench", "step", f"s{seq}", "r"),
            "recorded_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "pipeline": "bench",
            "event_type": "step",
            "subject": f"s{seq}",
            "run_id": "r",
            "actor": "llmops",
            "payload": PAYLOAD,
            "key_id": keys.primary_id,
        }
        hashed = record_hash(keys.primary, prev, fields)
        rows.append({**fields, "payload": canonical(PAYLOAD), "prev_hash": prev, "record_hash": hashed})
        prev = hashed
    with ledger.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(ledger_events.insert(), rows[start : start + 10_000])
        conn.execute(ledger_head.update().values(seq=size, record_hash=prev))
    assert ledger.verify().ok  # the first anchor (a pass from genesis)
    return ledger


def timed(ledger: Ledger, *, full: bool) -> tuple[float, int]:
    """Seconds one verification took, and the records it recomputed."""
    started = time.perf_counter()
    result = ledger.verify(full=full)
    elapsed = time.perf_counter() - started
    assert result.ok, result.problem
    return elapsed, result.checked


def check_only(ledger: Ledger) -> float:
    """Seconds of the incremental check alone (no anchor written, so no commit or fsync)."""
    with ledger.engine.connect() as conn:
        head = conn.execute(sa.select(ledger_head)).first()
        started = time.perf_counter()
        outcome = since_anchor(conn, ledger.keys, ledger.anchors, head.seq, head.record_hash)
        elapsed = time.perf_counter() - started
    assert outcome.problem is None, outcome.problem
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--new", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    keys = LedgerKeys(os.urandom(32))
    print(
        f"{'records':>8} {'new K':>6} {'check':>9} {'verify()':>10} {'--full':>10} "
        f"{'check/full':>11} {'verify/full':>12} {'rows checked':>13}"
    )
    for size in args.sizes:
        for new in args.new:
            with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
                ledger = build(Path(tmp), size, keys)
                incremental, checks, full, checked = [], [], [], 0
                for round_ in range(args.repeat):
                    for i in range(new):
                        ledger.append(
                            pipeline="bench", event_type="step", subject=f"n{round_}-{i}", payload=PAYLOAD
                        )
                    checks.append(check_only(ledger))
                    seconds, checked = timed(ledger, full=False)
                    incremental.append(seconds)
                    full.append(timed(ledger, full=True)[0])
                ledger.engine.dispose()
            inc, ful, chk = (statistics.median(x) for x in (incremental, full, checks))
            print(
                f"{size:>8} {new:>6} {chk * 1000:>7.2f}ms {inc * 1000:>8.2f}ms {ful * 1000:>8.1f}ms "
                f"{chk / ful:>11.4f} {inc / ful:>12.4f} {checked:>13}"
            )


if __name__ == "__main__":
    main()
