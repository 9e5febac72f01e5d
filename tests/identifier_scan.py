"""Find a data subject's identifiers in every byte the platform wrote: every file under the given
folders, encrypted files decrypted with the project's own keys, Parquet read back as rows, SQLite
databases read table by table and page by page (deleted rows stay in free pages until reused).

Independent of the code under test: it knows only the storage formats (a `<file>.key.json` beside
an encrypted file, Parquet, SQLite), not where the platform puts what.

The scan runs in a process of its own: opening and closing a database file in the test process
would drop the POSIX locks SQLite holds on it there (locks are per process), and the Airflow or
ledger database could then be corrupted by the next concurrent writer.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

# database file name -> {(table, column)} to leave out; such a database is read by rows only.
Skip = dict[str, set[tuple[str, str]]]

_SQLITE = b"SQLite format 3\x00"
_PARQUET = b"PAR1"


def _decrypted(path: Path, kek: Any) -> bytes:
    from llmops.privacy.crypto import WrappedKey, decrypt_bytes

    wrapped = WrappedKey.from_dict(json.loads(Path(str(path) + ".key.json").read_text()))
    return decrypt_bytes(path.read_bytes(), wrapped, kek)


def _rows_text(blob: bytes) -> str:
    import pyarrow.parquet as pq

    return json.dumps(pq.read_table(io.BytesIO(blob)).to_pylist(), default=str, ensure_ascii=False)


def _sqlite_texts(path: Path, skip: set[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            kept = [c for c in columns if (table, c) not in skip]
            if not kept:
                continue
            select = ", ".join(f'"{c}"' for c in kept)
            for row in conn.execute(f'SELECT {select} FROM "{table}"'):
                yield (
                    f"{path.name}:{table}",
                    " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row),
                )
    finally:
        conn.close()


def texts(path: Path, kek: Any, skip: Skip) -> Iterator[tuple[str, str]]:
    """(where, text) for one file, in every form the platform may have written it."""
    if path.name.endswith(".key.json"):
        return  # wrapped data keys: no data
    blob = path.read_bytes()
    if Path(str(path) + ".key.json").exists():
        blob = _decrypted(path, kek)
    if blob.startswith(_PARQUET):
        yield str(path), _rows_text(blob)
        return
    if blob.startswith(_SQLITE) and not Path(str(path) + ".key.json").exists():
        yield from _sqlite_texts(path, skip.get(path.name, set()))
        if path.name in skip:
            return  # rows only: a skipped column would be found in its page
    yield str(path), blob.decode("utf-8", "replace")


def _scan_here(
    roots: Iterable[Path],
    needles: Iterable[str],
    kek: Any,
    *,
    skip: Skip | None = None,
    exclude: Iterable[Path] = (),
) -> list[str]:
    """Every place (file, or database:table) that holds one of the needles, case-insensitively."""
    wanted = sorted({n.lower() for n in needles if n})
    excluded = [p.resolve() for p in exclude]
    found: list[str] = []
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if not path.is_file() or any(path.resolve().is_relative_to(e) for e in excluded):
                continue
            for where, text in texts(path, kek, skip or {}):
                lowered = text.lower()
                found += [f"{needle!r} in {where}" for needle in wanted if needle in lowered]
    return sorted(set(found))


def scan(
    roots: Iterable[Path],
    needles: Iterable[str],
    *,
    skip: Skip | None = None,
    exclude: Iterable[Path] = (),
) -> list[str]:
    """:func:`_scan_here` in a child process (same environment, so the same keys)."""
    import subprocess
    import sys

    args = {
        "roots": [str(r) for r in roots],
        "needles": list(needles),
        "skip": {db: sorted(cols) for db, cols in (skip or {}).items()},
        "exclude": [str(e) for e in exclude],
    }
    done = subprocess.run(
        [sys.executable, __file__],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"identifier scan failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
    from llmops.privacy.keys import get_key_ring

    args = json.loads(sys.stdin.read())
    skip = {db: {tuple(c) for c in cols} for db, cols in args["skip"].items()}
    found = _scan_here(
        [Path(r) for r in args["roots"]],
        args["needles"],
        get_key_ring(),
        skip=skip,
        exclude=[Path(e) for e in args["exclude"]],
    )
    print(json.dumps(found))


if __name__ == "__main__":
    _main()
