"""The PostgreSQL ledger (``ledger: {postgres: DSN}``): the same interface as the SQLite
:class:`~entitle.adapters.metering.ledger.Ledger`, for every replica (and cluster) writing one
database.

Why appends take a lock: sinks read ``seq > cursor``. ``BIGSERIAL`` numbers are handed out at
insert time, not at commit, so with two writers a smaller ``seq`` could commit after a reader
already moved its cursor past a larger one -- that record would never be delivered. Every
append therefore holds one transaction-scoped advisory lock from its first insert to its
commit: numbers become visible in the order they were given. Group commit (one append per
:class:`~entitle.adapters.metering.ledger.LedgerWriter` batch) keeps the lock cheap.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator

from entitle.adapters.metering.live import live_change

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq     BIGSERIAL PRIMARY KEY,
    source  TEXT NOT NULL,
    id      TEXT NOT NULL,
    type    TEXT NOT NULL,
    subject TEXT NOT NULL,
    time    TEXT NOT NULL,
    body    TEXT NOT NULL,
    UNIQUE (source, id)
);
CREATE INDEX IF NOT EXISTS records_time ON records (time);
CREATE TABLE IF NOT EXISTS live (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    generation BIGINT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);
"""

# Any constant shared by every entitle process on the database: the append lock's key.
APPEND_LOCK = 0x656E7469746C65  # "entitle"


class LedgerUnavailable(Exception):
    """The PostgreSQL ledger cannot be reached or set up; the message names the server."""


def _redacted(dsn: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", re.sub(r"password=\S+", "password=***", dsn))


class PostgresLedger:
    """Append-only usage records in PostgreSQL; thread-safe, one connection."""

    backend = "postgres"

    def __init__(self, dsn: str, connect_timeout: float = 10) -> None:
        import psycopg

        self.dsn = dsn
        self.path = _redacted(dsn)
        self._lock = threading.Lock()
        try:
            self._db = psycopg.connect(dsn, autocommit=True, connect_timeout=int(connect_timeout))
            with self._db.transaction():
                # Two replicas starting together would race on CREATE TABLE IF NOT EXISTS.
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                self._db.execute(SCHEMA)
        except psycopg.Error as exc:
            raise LedgerUnavailable(f"postgres ledger {self.path}: {str(exc).strip()}") from None

    def _reconnect_if_broken(self) -> None:
        import psycopg

        if self._db.closed or self._db.broken:
            self._db = psycopg.connect(self.dsn, autocommit=True)

    def append(self, records: Iterable[dict]) -> int:
        """Append records; ones already present (same source and id) are ignored. Returns new count."""
        records_list = list(records)
        if not records_list:
            return 0
        bodies = [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records_list]
        columns: list[list[str]] = [[], [], [], [], [], []]
        for record, body in zip(records_list, bodies):
            for column, value in zip(columns, (record["source"], record["id"], record["type"],
                                               record.get("subject", ""), record["time"], body)):
                column.append(value)
        with self._lock:
            self._reconnect_if_broken()
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                # unnest keeps the batch's order, so seq follows submission order.
                added = {(s, i) for s, i in self._db.execute(
                    "INSERT INTO records (source, id, type, subject, time, body) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
                    "ON CONFLICT (source, id) DO NOTHING RETURNING source, id", columns)}
                live_upserts, live_deletes = [], []
                count = 0
                for record, body in zip(records_list, bodies):
                    ident = (record["source"], record["id"])
                    if ident not in added:
                        continue
                    added.discard(ident)   # a duplicate inside the batch counts once
                    count += 1
                    change = live_change(record, body)
                    if change is None:
                        continue
                    if change[0] == "delete":
                        live_deletes.append(change[1:])
                    else:
                        live_upserts.append(change[1:])
                    self._flush_live(live_upserts, live_deletes, change[0])
                self._flush_live(live_upserts, live_deletes, None)
            return count

    def _flush_live(self, upserts: list, deletes: list, next_op: str | None) -> None:
        # Upserts and deletes of one object must keep their order: flush the other list first.
        if next_op != "upsert" and upserts:
            with self._db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO live (kind, key, generation, body) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (kind, key) DO UPDATE SET generation = excluded.generation, body = excluded.body "
                    "WHERE excluded.generation >= live.generation", upserts)
            upserts.clear()
        if next_op != "delete" and deletes:
            with self._db.cursor() as cur:
                cur.executemany("DELETE FROM live WHERE kind = %s AND key = %s", deletes)
            deletes.clear()

    def forget_live(self, kind: str, key: str) -> None:
        with self._lock:
            self._reconnect_if_broken()
            self._db.execute("DELETE FROM live WHERE kind = %s AND key = %s", (kind, key))

    def live(self, kind: str) -> dict[str, dict]:
        return {key: json.loads(body) for key, body in self.iter_live(kind)}

    def iter_live(self, kind: str, page: int = 2000) -> Iterator[tuple[str, str]]:
        """See :meth:`entitle.adapters.metering.ledger.Ledger.iter_live`."""
        after = ""
        while True:
            with self._lock:
                self._reconnect_if_broken()
                rows = self._db.execute("SELECT key, body FROM live WHERE kind = %s AND key > %s ORDER BY key "
                                        "LIMIT %s", (kind, after, page)).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def has(self, source: str, id_: str) -> bool:
        with self._lock:
            self._reconnect_if_broken()
            return self._db.execute("SELECT 1 FROM records WHERE source = %s AND id = %s",
                                    (source, id_)).fetchone() is not None

    def read(self, after_seq: int = 0, limit: int | None = None) -> list[tuple[int, dict]]:
        sql = "SELECT seq, body FROM records WHERE seq > %s ORDER BY seq"
        params: tuple = (after_seq,)
        if limit is not None:
            sql += " LIMIT %s"
            params += (limit,)
        with self._lock:
            self._reconnect_if_broken()
            return [(seq, json.loads(body)) for seq, body in self._db.execute(sql, params)]

    def iter_records(self, batch: int = 10_000) -> Iterator[dict]:
        seq = 0
        while True:
            rows = self.read(seq, batch)
            if not rows:
                return
            for seq, record in rows:
                yield record

    def count(self) -> int:
        with self._lock:
            self._reconnect_if_broken()
            return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def last_seq(self) -> int:
        with self._lock:
            self._reconnect_if_broken()
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]

    def cursor(self, sink: str) -> int:
        with self._lock:
            self._reconnect_if_broken()
            row = self._db.execute("SELECT seq FROM cursors WHERE sink = %s", (sink,)).fetchone()
            return row[0] if row else 0

    def cursors(self) -> dict[str, int]:
        with self._lock:
            self._reconnect_if_broken()
            return dict(self._db.execute("SELECT sink, seq FROM cursors").fetchall())

    def set_cursor(self, sink: str, seq: int) -> None:
        with self._lock:
            self._reconnect_if_broken()
            # GREATEST: two leaders overlapping during a hand-over never move a cursor back.
            self._db.execute("INSERT INTO cursors (sink, seq) VALUES (%s, %s) ON CONFLICT (sink) DO UPDATE "
                             "SET seq = GREATEST(cursors.seq, excluded.seq)", (sink, seq))

    def close(self) -> None:
        with self._lock:
            self._db.close()
