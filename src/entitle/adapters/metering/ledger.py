"""The durable local ledger: SQLite in WAL mode, append-only, deduplicated on (source, id).

Every record the controller produces goes here first; sinks read from here and keep their
position (cursor) here too, so a crash at any point loses nothing and doubles nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from entitle.adapters.metering.live import live_change

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    source  TEXT NOT NULL,
    id      TEXT NOT NULL,
    type    TEXT NOT NULL,
    subject TEXT NOT NULL,
    time    TEXT NOT NULL,
    body    TEXT NOT NULL,
    UNIQUE (source, id)
);
CREATE INDEX IF NOT EXISTS records_time ON records (time);
-- The last record of every object not yet recorded as deleted: what start-up reconciles
-- against the cluster (an object that vanished while the operator was down).
CREATE TABLE IF NOT EXISTS live (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
"""


class LedgerDamaged(Exception):
    """The ledger file is not whole (truncated, a page unreadable): reading it as if it were
    would bill what is left and lose the rest without a word. The message says what to do."""


def what_to_do(path: str | Path) -> str:
    return (f"restore {path} from a backup (docs/operations.md, \"The usage ledger\"), or export from the sink "
            f"stream (--events); `entitle usage salvage --ledger {path} --out NEW.db` copies what is readable into "
            "a new ledger and lists the records lost")


def verify(path: str | Path, connection: sqlite3.Connection | None = None) -> None:
    """Refuse a damaged ledger (:class:`LedgerDamaged`): a file shorter than its own header says
    (truncated by a full disk or a bad restore -- SQLite may read such a file without complaint
    until it reaches the missing pages), or one that fails ``PRAGMA quick_check`` (every page of
    every table and index; ~0.4 s for 1,000,000 records). A new, empty file is whole."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise LedgerDamaged(f"{path} is not a SQLite database (its header is missing): {what_to_do(path)}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96] and pages > 0          # (the in-header size is trusted then)
    size = path.stat().st_size
    if valid and size < pages * page_size:
        raise LedgerDamaged(f"{path} is truncated: {size} bytes of the {pages * page_size} its header counts "
                            f"({pages - size // page_size} pages missing): {what_to_do(path)}")
    db = connection or sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    finally:
        if connection is None:
            db.close()
    if problems != ["ok"]:
        raise LedgerDamaged(f"{path} is damaged ({'; '.join(problems)[:300]}): {what_to_do(path)}")


class Ledger:
    """Append-only store of usage records. Thread-safe; one writer connection."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            verify(self.path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a record acknowledged as appended survives power loss, not just a process kill.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def append(self, records: Iterable[dict]) -> int:
        """Append records; ones already present (same source and id) are ignored. Returns new count."""
        records_list = list(records)
        rows = [(r["source"], r["id"], r["type"], r.get("subject", ""), r["time"],
                 json.dumps(r, sort_keys=True, separators=(",", ":"))) for r in records_list]
        if not rows:
            return 0
        with self._lock:
            added = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row, record in zip(rows, records_list):
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO records (source, id, type, subject, time, body) VALUES (?,?,?,?,?,?)",
                        row)
                    if cur.rowcount != 1:
                        continue
                    added += 1
                    self._track_live(record, row[5])
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (a full disk fails the COMMIT and ends the
                # transaction): then ROLLBACK itself errors, and that error would hide the real
                # one ("cannot rollback - no transaction is active" instead of "disk is full").
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            return added

    def _track_live(self, record: dict, body: str) -> None:
        change = live_change(record, body)
        if change is None:
            return
        if change[0] == "delete":
            self._db.execute("DELETE FROM live WHERE kind=? AND key=?", change[1:])
        else:
            # Two replicas append to one ledger (Helm chart); a lagging one may add an older
            # generation's record after a newer one: the live row keeps the newest generation.
            self._db.execute(
                "INSERT INTO live (kind, key, body) VALUES (?,?,?) ON CONFLICT (kind, key) DO UPDATE "
                "SET body = excluded.body WHERE COALESCE(json_extract(excluded.body, '$.data.generation'), 0) "
                ">= COALESCE(json_extract(live.body, '$.data.generation'), 0)", (change[1], change[2], change[4]))

    def forget_live(self, kind: str, key: str) -> None:
        """Drop an object's live row without a record (it was counted nowhere when it went)."""
        with self._lock:
            self._db.execute("DELETE FROM live WHERE kind=? AND key=?", (kind, key))

    def live(self, kind: str) -> dict[str, dict]:
        """{key: last record} of objects of ``kind`` whose last record is not a deletion."""
        return {key: json.loads(body) for key, body in self.iter_live(kind)}

    def iter_live(self, kind: str, page: int = 2000) -> Iterator[tuple[str, str]]:
        """(key, last record as JSON text) of every live object of ``kind``, a page at a time
        (keyset: appends in between are fine). At start-up over a fleet, a dict of every parsed
        record at once was ~100 MiB held for a moment -- and kept by the allocator."""
        after = ""
        while True:
            with self._lock:
                rows = self._db.execute("SELECT key, body FROM live WHERE kind=? AND key>? ORDER BY key LIMIT ?",
                                        (kind, after, page)).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def has(self, source: str, id_: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM records WHERE source=? AND id=?", (source, id_)).fetchone() is not None

    def read(self, after_seq: int = 0, limit: int | None = None) -> list[tuple[int, dict]]:
        sql = "SELECT seq, body FROM records WHERE seq > ? ORDER BY seq"
        params: tuple = (after_seq,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._lock:
            return [(seq, json.loads(body)) for seq, body in self._db.execute(sql, params)]

    def iter_records(self, batch: int = 10_000) -> Iterator[dict]:
        seq = 0
        while True:
            rows = self.read(seq, batch)
            if not rows:
                return
            for seq, record in rows:
                yield record

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT sink, seq FROM cursors").fetchall())

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def last_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]

    def cursor(self, sink: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
            return row[0] if row else 0

    def set_cursor(self, sink: str, seq: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO cursors (sink, seq) VALUES (?, ?) "
                             "ON CONFLICT(sink) DO UPDATE SET seq=excluded.seq", (sink, seq))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to a ledger that is whole (:func:`verify`; raises
    :class:`LedgerDamaged` otherwise)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such ledger")
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        verify(path, db)
    except BaseException:
        db.close()
        raise
    return db


def salvage(path: str | Path, out: str | Path) -> tuple[int, list[tuple[int, int]], int | None]:
    """Copy every readable record of a damaged ledger into a new one (``out``), in order;
    returns (records copied, ranges of sequence numbers lost, the last sequence number the file
    had issued -- None when that is unreadable too). Read page by page
    (``adapters.metering.salvage``): SQLite itself often reads nothing of a truncated file."""
    from entitle.adapters.metering.salvage import readable_records

    found, issued = readable_records(path)
    target = Ledger(out)
    try:
        seqs = sorted(found)
        copied = sum(target.append([found[s] for s in seqs[i:i + 5000]]) for i in range(0, len(seqs), 5000))
    finally:
        target.close()
    last = max([issued or 0, *seqs]) if seqs or issued else 0
    lost = [(a + 1, b - 1) for a, b in zip([0, *seqs], [*seqs, last + 1]) if b - a > 1]
    return copied, _merge(lost), issued


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class LedgerWriter:
    """Appends to a :class:`Ledger` from one background thread, in submission order, many
    records per transaction (group commit: one fsync for everything that queued meanwhile).

    The operator's event loop also serves the webhook; an fsync there would stall every
    admission in flight. Callers that must not act before a record is durable -- removing the
    usage-record finalizer after recording a deletion -- wait on :meth:`barrier`.
    """

    def __init__(self, ledger: Ledger, on_added: Any = None, on_failed: Any = None) -> None:
        # on_failed(error, records waiting): an append failed (a full disk, an I/O error); the
        # records stay queued, in order, and are tried again until it works -- none is lost.
        self.ledger, self.on_added, self.on_failed = ledger, on_added, on_failed
        self._cond = threading.Condition()
        self._pending: list[dict] = []
        self._waiters: list[Any] = []
        self._stopped = False
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def submit(self, record: dict) -> None:
        with self._cond:
            self._pending.append(record)
            self._cond.notify()

    @property
    def backlog(self) -> int:
        """Records submitted and not yet taken up for writing."""
        return len(self._pending)

    def forget_live(self, kind: str, key: str) -> None:
        """Queue :meth:`Ledger.forget_live`, ordered after every record submitted before it."""
        self.submit({"_forget": (kind, key)})

    def barrier(self) -> Any:
        """A ``concurrent.futures.Future`` done once every record submitted so far is committed."""
        from concurrent.futures import Future

        future: Future = Future()
        with self._cond:
            if not self._pending and not self._busy:
                future.set_result(None)
            else:
                self._waiters.append(future)
                self._cond.notify()
        return future

    _busy = False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._waiters and not self._stopped:
                    self._cond.wait()
                if self._stopped and not self._pending:
                    for waiter in self._waiters:
                        waiter.set_result(None)
                    return
                batch, self._pending = self._pending, []
                waiters, self._waiters = self._waiters, []
                self._busy = True
            try:
                added = self._write(batch) if batch else 0
            except Exception as exc:  # disk full, I/O error: keep the records and retry
                self.failures += 1
                logging.getLogger("entitle.ledger").error("ledger append failed (will retry; %d records wait): %s",
                                                          len(batch), exc)
                with self._cond:
                    self._pending[:0] = batch
                    self._waiters[:0] = waiters
                    self._busy = False
                    waiting = len(self._pending)
                if self.on_failed is not None:
                    self.on_failed(exc, waiting)
                time.sleep(min(5.0, 0.1 * self.failures))
                continue
            if self.failures and self.on_failed is not None:
                self.on_failed(None, 0)
            self.failures = 0
            with self._cond:
                self._busy = False
            for waiter in waiters:
                waiter.set_result(None)
            if added and self.on_added is not None:
                self.on_added(added)

    def _write(self, batch: list[dict]) -> int:
        added, run = 0, []
        for item in batch:
            if "_forget" in item:
                added += self.ledger.append(run)
                run = []
                self.ledger.forget_live(*item["_forget"])
            else:
                run.append(item)
        return added + self.ledger.append(run)

    def close(self, timeout: float = 10) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)
