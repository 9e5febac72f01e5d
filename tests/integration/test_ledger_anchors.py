"""Keyed chain and signed anchors: a rewrite of the ledger database alone never goes unnoticed.

Each guard has a case where it refuses: a row edited in place, the whole chain recomputed under a
wrong key, with the wrong key's own id, with a plain SHA-256 (no key), or by an insider holding
the right key (caught by the anchors); an anchor removed from the store's end or the middle, or
forged. Rotation: rows under key A and key B both verify while A is kept as a retired key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from llmops.ledger import Ledger
from llmops.ledger.anchors import Anchor, FileAnchorStore
from llmops.ledger.chain import GENESIS, HASHED_FIELDS, canonical, record_hash
from llmops.ledger.keys import LedgerKeys, ledger_key_id
from llmops.ledger.store import LedgerBlocked, ledger_events, ledger_head, ledger_state, metadata

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys() -> LedgerKeys:
    return LedgerKeys(os.urandom(32))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    yield url
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path) -> FileAnchorStore:
    return FileAnchorStore(tmp_path / "anchors" / "ledger-anchors.jsonl")


@pytest.fixture
def ledger(url, keys, store):
    ledger = Ledger(url, keys=keys, anchors=store)
    yield ledger
    ledger.engine.dispose()


def _append(ledger: Ledger, i: int) -> Any:
    return ledger.append(pipeline="p", event_type="step", subject=f"s{i}", run_id="r", payload={"i": i})


def _rewrite(ledger: Ledger, hasher, *, key_id: str | None = None, payload_of_seq: int = 2) -> None:
    """Change one payload and recompute every hash after it consistently, head and state included:
    what someone with write access to the database (and `hasher`) can do."""
    with ledger.engine.begin() as conn:
        rows = conn.execute(sa.select(ledger_events).order_by(ledger_events.c.seq)).all()
        prev = GENESIS
        for row in rows:
            fields = {k: getattr(row, k) for k in HASHED_FIELDS}
            if key_id is not None:
                fields["key_id"] = key_id
            payload = json.loads(row.payload)
            if row.seq == payload_of_seq:
                payload = {"i": "rewritten"}
            hashed = hasher(prev, {**fields, "payload": payload})
            conn.execute(
                ledger_events.update()
                .where(ledger_events.c.seq == row.seq)
                .values(
                    payload=canonical(payload), prev_hash=prev, record_hash=hashed, key_id=fields["key_id"]
                )
            )
            prev = hashed
        conn.execute(ledger_head.update().values(record_hash=prev))
        conn.execute(ledger_state.update().values(verified_seq=-1, verified_hash=prev))


def _sha256(prev: str, fields: dict) -> str:
    return hashlib.sha256((prev + canonical(fields)).encode()).hexdigest()


def test_a_sound_chain_verifies_and_anchors_its_head(ledger, store):
    """Expect verify() to pass, anchor the head, and next time check only the rows since then."""
    for i in range(5):
        _append(ledger, i)
    first = ledger.verify()
    assert first.ok and first.records == 5 and first.checked == 5 and first.anchored_seq == 5
    for i in range(5, 8):
        _append(ledger, i)
    second = ledger.verify()
    assert second.ok and second.records == 8 and second.checked == 3 and second.anchored_seq == 8
    assert [a.seq for a in store.all()] == [5, 8]
    full = ledger.verify(full=True)
    assert full.ok and full.checked == 8 and full.anchors_checked == 2


def test_a_row_edited_in_place_is_found(ledger):
    """After the anchor: the incremental check finds it; before the anchor: --full finds it."""
    for i in range(4):
        _append(ledger, i)
    assert ledger.verify().ok
    for i in range(4, 6):
        _append(ledger, i)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 5")
    result = ledger.verify(block_on_failure=False)
    assert not result.ok and result.problem == "record seq 5: content was altered"
    with ledger.engine.begin() as conn:  # restore 5, alter 2 (before the anchor)
        conn.exec_driver_sql("UPDATE llmops_ledger_events SET payload = '{\"i\":4}' WHERE seq = 5")
        conn.exec_driver_sql("UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 2")
    full = ledger.verify(full=True, block_on_failure=False)
    assert not full.ok and full.problem == "record seq 2: content was altered"


@pytest.mark.parametrize(
    ("rewrite", "problem"),
    [
        ("wrong key, same key id", "record seq 1: content was altered"),
        ("wrong key, its own key id", "record seq 1: signed with an unknown ledger key id"),
        ("plain sha-256", "record seq 1: content was altered"),
    ],
)
def test_a_consistent_rewrite_without_the_key_is_found(ledger, keys, rewrite, problem):
    """Expect a chain recomputed from genesis without the ledger key to fail, with no anchor needed."""
    for i in range(4):
        _append(ledger, i)
    wrong = os.urandom(32)
    if rewrite == "plain sha-256":
        _rewrite(ledger, _sha256)
    elif rewrite == "wrong key, same key id":
        _rewrite(ledger, lambda prev, fields: record_hash(wrong, prev, fields))
    else:
        _rewrite(ledger, lambda prev, fields: record_hash(wrong, prev, fields), key_id=ledger_key_id(wrong))
    for full in (False, True):
        result = ledger.verify(full=full, block_on_failure=False)
        assert not result.ok and result.problem.startswith(problem), result.problem
    assert not ledger.verify().ok  # blocks: no run records anything on the rewritten chain
    with pytest.raises(LedgerBlocked, match=re.escape(problem)):
        _append(ledger, 9)


def test_a_rewrite_with_the_right_key_is_found_by_the_anchor(ledger, keys, store):
    """An insider with the key recomputes a sound-looking chain: only the anchor outside the
    database tells; both verifications name the anchored record."""
    for i in range(4):
        _append(ledger, i)
    assert ledger.verify().ok  # anchor at seq 4
    _rewrite(ledger, lambda prev, fields: record_hash(keys.primary, prev, fields))
    problem = "record seq 4 no longer matches anchor 1 (the chain was rewritten)"
    assert ledger.verify(block_on_failure=False).problem == problem
    assert ledger.verify(full=True, block_on_failure=False).problem == problem
    # The control: the same rewrite on a ledger without anchors passes, so the anchor is the guard.
    store.path.unlink()
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM llmops_ledger_anchor_state")
    assert ledger.verify(full=True).ok


def test_an_anchor_removed_from_the_end_of_the_store_is_found(ledger, store):
    for i in range(3):
        _append(ledger, i)
    ledger.verify()
    _append(ledger, 3)
    ledger.verify()
    lines = store.path.read_text().splitlines()
    store.path.write_text("\n".join(lines[:-1]) + "\n")  # the last anchor is gone; anchor 1 still verifies
    problem = "lost anchors: this ledger wrote anchor 2, the store's latest is 1"
    assert problem in ledger.verify(block_on_failure=False).problem
    assert problem in ledger.verify(full=True, block_on_failure=False).problem
    store.path.write_text("")
    assert "the store's latest is none" in ledger.verify(block_on_failure=False).problem


def test_an_anchor_removed_from_the_middle_of_the_store_is_found(ledger, store):
    for n in range(3):
        _append(ledger, n)
        ledger.verify()
    lines = store.path.read_text().splitlines()
    store.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert ledger.verify(block_on_failure=False).ok  # the latest still matches: incremental is content
    full = ledger.verify(full=True, block_on_failure=False)
    assert full.problem == "anchor 2 is missing from the store (found anchor 3 in its place)"


def test_a_forged_anchor_is_found(ledger, store, keys):
    """An anchor with a wrong signature (or under an unknown key, or malformed) is refused."""
    for i in range(3):
        _append(ledger, i)
    ledger.verify()
    latest = store.latest()
    forged = Anchor(**{**latest.__dict__, "n": 2, "prev_signature": latest.signature, "signature": "ab" * 32})
    store.append(forged)
    assert (
        ledger.verify(block_on_failure=False).problem
        == "anchor 2: signature does not verify (forged or altered)"
    )
    assert ledger.verify(full=True, block_on_failure=False).problem.startswith("anchor 2: signature does not")
    other = LedgerKeys(os.urandom(32))
    from llmops.ledger.anchors import sign

    store.append(sign(other, n=3, seq=3, record_hash=latest.record_hash, prev_signature=forged.signature))
    assert "anchor 3: signed with an unknown ledger key id" in ledger.verify(block_on_failure=False).problem
    with store.path.open("a") as fh:
        fh.write("{not an anchor\n")
    assert "is not a well-formed anchor" in ledger.verify(block_on_failure=False).problem


def test_records_removed_below_an_anchor_are_found(ledger):
    for i in range(4):
        _append(ledger, i)
    ledger.verify()
    second = ledger.records()[1].record_hash
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM llmops_ledger_events WHERE seq >= 3")
        conn.execute(ledger_head.update().values(seq=2, record_hash=second))
        conn.execute(ledger_state.update().values(verified_seq=-1))
    problem = "anchor 1 names seq 4 but the chain ends at seq 2"
    assert ledger.verify(block_on_failure=False).problem == problem
    assert ledger.verify(full=True, block_on_failure=False).problem == problem


def test_rows_under_a_rotated_key_keep_verifying(url, store):
    """Key A, then key B with A retired: both generations verify; without A, --full refuses."""
    key_a, key_b = os.urandom(32), os.urandom(32)
    ledger = Ledger(url, keys=LedgerKeys(key_a), anchors=store)
    for i in range(3):
        _append(ledger, i)
    assert ledger.verify().ok
    ledger.engine.dispose()
    rotated = Ledger(url, keys=LedgerKeys(key_b, retired=[key_a]), anchors=store)
    for i in range(3, 6):
        _append(rotated, i)
    assert {r.key_id for r in rotated.records()} == {ledger_key_id(key_a), ledger_key_id(key_b)}
    assert rotated.verify().ok
    assert rotated.verify(full=True).ok
    rotated.engine.dispose()
    forgetful = Ledger(url, keys=LedgerKeys(key_b), anchors=store)
    result = forgetful.verify(full=True, block_on_failure=False)
    assert not result.ok and result.problem.startswith("record seq 1: signed with an unknown ledger key id")
    forgetful.engine.dispose()


def test_anchors_are_written_every_n_appends(url, keys, store, monkeypatch):
    monkeypatch.setenv("LLMOPS_LEDGER_ANCHOR_EVERY", "3")
    ledger = Ledger(url, keys=keys, anchors=store)
    for i in range(7):
        _append(ledger, i)
    assert [a.seq for a in store.all()] == [3, 6]
    ledger.engine.dispose()


def test_the_key_comes_from_the_connection_with_retired_keys(monkeypatch, tmp_path):
    import base64

    from llmops.ledger.keys import LedgerKeyError, resolve_ledger_keys

    new, old = os.urandom(32), os.urandom(32)
    b64 = lambda k: base64.b64encode(k).decode()  # noqa: E731
    monkeypatch.setenv(
        "AIRFLOW_CONN_LLMOPS_LEDGER_KEY",
        json.dumps({"conn_type": "generic", "password": b64(new), "extra": {"retired_keys": [b64(old)]}}),
    )
    keys = resolve_ledger_keys()
    assert keys.primary == new and keys.get(ledger_key_id(old)) == old
    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_LEDGER_KEY")
    monkeypatch.setenv("LLMOPS_LEDGER_KEY_CONN_ID", "llmops_ledger_key_missing")
    monkeypatch.setenv("LLMOPS_REQUIRE_KEY_CONNECTIONS", "true")
    with pytest.raises(LedgerKeyError, match="is required"):
        resolve_ledger_keys()


def test_the_local_key_file_is_private_and_rotates(monkeypatch, tmp_path):
    from llmops.ledger.keys import resolve_ledger_keys, rotate_local_key

    path = tmp_path / "keys" / "ledger.key"
    monkeypatch.setenv("LLMOPS_LEDGER_KEY_FILE", str(path))
    monkeypatch.setenv("LLMOPS_LEDGER_KEY_CONN_ID", "llmops_ledger_key_absent")
    first = resolve_ledger_keys()
    assert path.stat().st_mode & 0o777 == 0o600
    new_id = rotate_local_key()
    second = resolve_ledger_keys()
    assert second.primary_id == new_id != first.primary_id
    assert second.get(first.primary_id) == first.primary


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("llmops")), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=120,
    )


def _last_json(stdout: str) -> dict:
    """The command's JSON line (Airflow's logging may print to stdout before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def test_ledger_verify_full_from_the_command_line(tmp_path, monkeypatch):
    """`llmops ledger-verify --full` as a user runs it: 0 on a sound ledger, 2 naming the record
    after a rewrite, and --unblock refuses until the chain is restored."""
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")},
        "LLMOPS_HOME": str(home),
        "LLMOPS_LEDGER_URL": url,
        "LLMOPS_LEDGER_KEY_CONN_ID": "llmops_ledger_key_absent",
    }
    monkeypatch.setenv("LLMOPS_HOME", str(home))
    monkeypatch.setenv("LLMOPS_LEDGER_KEY_CONN_ID", "llmops_ledger_key_absent")
    ledger = Ledger(url)  # the same key file and anchor file the command finds
    for i in range(4):
        _append(ledger, i)
    ok = _cli(env, "ledger-verify", "--full", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    out = _last_json(ok.stdout)
    assert out["ok"] and out["full"] and out["records"] == 4 and out["anchored_seq"] == 4
    assert (tmp_path / "ledger-anchors.jsonl").is_file()
    original = ledger.records()[1].payload
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 2")
    readable = _cli(env, "ledger-verify", "--full")  # what a person reads
    assert readable.returncode == 2
    assert "ledger BROKEN: record seq 2: content was altered" in readable.stdout
    assert "llmops ledger-verify --unblock" in readable.stdout
    bad = _cli(env, "ledger-verify", "--full", "--json")
    assert bad.returncode == 2
    out = _last_json(bad.stdout)
    assert out["problem"] == "record seq 2: content was altered" and "record seq 2" in out["blocked"]
    assert _cli(env, "ledger-verify", "--unblock").returncode == 2
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE llmops_ledger_events SET payload = '{canonical(original)}' WHERE seq = 2"
        )
    assert _cli(env, "ledger-verify", "--unblock").returncode == 0
    assert _cli(env, "ledger-verify").returncode == 0
    ledger.engine.dispose()


def test_anchors_in_s3_carry_object_lock_retention(s3_client, s3_bucket):
    """On an Object Lock bucket each anchor is its own object, retained in governance mode, and a
    rewrite of the database is found against it."""
    from llmops.ledger.anchors import S3AnchorStore

    _, conn_id = s3_bucket
    bucket = f"{s3_bucket[0]}-locked"
    s3_client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    store = S3AnchorStore(f"s3://{bucket}/ledger-anchors", conn_id=conn_id, retention_days=7)
    keys = LedgerKeys(os.urandom(32))
    ledger = Ledger("sqlite://", keys=keys, anchors=store)
    for i in range(3):
        _append(ledger, i)
    assert ledger.verify().ok
    _append(ledger, 3)
    assert ledger.verify().ok
    names = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == ["ledger-anchors/000000000001.json", "ledger-anchors/000000000002.json"]
    head = s3_client.head_object(Bucket=bucket, Key=names[-1])
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"]
    _rewrite(ledger, lambda prev, fields: record_hash(keys.primary, prev, fields))
    assert (
        "record seq 3 no longer matches anchor 1" in ledger.verify(full=True, block_on_failure=False).problem
    )


def test_where_anchors_go_by_default(monkeypatch, tmp_path):
    """Next to a SQLite ledger; under LLMOPS_HOME per database elsewhere; and a production
    deployment (keys from connections only) must name a store rather than get a pod-local file."""
    from llmops.ledger.anchors import AnchorConfigError, S3AnchorStore, anchor_store_for

    monkeypatch.delenv("LLMOPS_LEDGER_ANCHORS", raising=False)
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    assert anchor_store_for(f"sqlite:///{tmp_path / 'x.db'}").location == str(tmp_path / "x-anchors.jsonl")
    one = anchor_store_for("postgresql://u:pw@db/one").location
    assert (
        one.startswith(str(tmp_path / "home"))
        and one != anchor_store_for("postgresql://u:pw@db/two").location
    )
    monkeypatch.setenv("LLMOPS_REQUIRE_KEY_CONNECTIONS", "true")
    with pytest.raises(AnchorConfigError, match="LLMOPS_LEDGER_ANCHORS"):
        anchor_store_for("postgresql://u:pw@db/one")
    monkeypatch.setenv("LLMOPS_LEDGER_ANCHORS", "s3://bucket/anchors")
    monkeypatch.setenv("LLMOPS_LEDGER_ANCHOR_RETENTION_DAYS", "30")
    store = anchor_store_for("postgresql://u:pw@db/one")
    assert isinstance(store, S3AnchorStore) and store.put_arguments()["ObjectLockMode"] == "GOVERNANCE"


def test_a_ledger_table_from_before_keyed_hashes_is_refused(tmp_path, keys):
    """Its rows have no key id, so they cannot be verified under a key: say so, never guess."""
    from llmops.ledger.store import LedgerIntegrityError

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE llmops_ledger_events (seq INTEGER PRIMARY KEY, event_id VARCHAR(64), recorded_at "
            "VARCHAR(32), pipeline VARCHAR(64), event_type VARCHAR(64), subject VARCHAR(255), run_id "
            "VARCHAR(255), actor VARCHAR(255), payload TEXT, prev_hash VARCHAR(64), record_hash VARCHAR(64))"
        )
    engine.dispose()
    with pytest.raises(LedgerIntegrityError, match="without keyed hashes"):
        Ledger(url, keys=keys)


def test_unusable_keys_are_refused(monkeypatch):
    from llmops.ledger.keys import LedgerKeyError, resolve_ledger_keys

    with pytest.raises(LedgerKeyError, match="at least 32 bytes"):
        LedgerKeys(b"short")
    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_LEDGER_KEY", json.dumps({"conn_type": "generic"}))
    with pytest.raises(LedgerKeyError, match="has no password"):
        resolve_ledger_keys()
