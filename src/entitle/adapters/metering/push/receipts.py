"""What each billing destination acknowledged: the push's receipts, kept beside the records
(in the ledger's database) or in a state file of their own.

An outbox: every event is written ``pending`` with its key and quantity before it is sent and
``acked`` once the destination accepted it. A push killed between the two re-sends exactly the
pending events (same key, same quantity: the destination deduplicates) before it computes
anything new, so a crash can neither lose a correction nor smuggle a changed quantity in under
a key the destination has already seen.

An event the destination **refused** for good (a meter it does not have, a timestamp outside
its window) is kept ``refused`` with the vendor's message: it blocks nothing, later pushes plan
it again (``attempts`` counts the tries: a retry goes under a fresh Idempotency-Key, since Stripe
replays a key's first answer for 24 h), and ``entitle usage reconcile`` lists it until it is
delivered or **dismissed** by hand (``entitle usage dismiss``: handled outside entitle, counted
as delivered from then on).

The store also keeps this installation's id (``push_meta``), part of every key: two stores (two
clusters) pushing into one vendor account never share a key.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS push_receipts (
        destination TEXT NOT NULL,
        key         TEXT NOT NULL,
        tenant      TEXT NOT NULL,
        meter       TEXT NOT NULL,
        hour        BIGINT NOT NULL,
        revision    INTEGER NOT NULL,
        action      TEXT NOT NULL,
        customer    TEXT NOT NULL,
        quantity    DOUBLE PRECISION NOT NULL,
        cancels     TEXT,
        state       TEXT NOT NULL,
        at          TEXT NOT NULL,
        PRIMARY KEY (destination, key)
    )""",
    "CREATE INDEX IF NOT EXISTS push_receipts_hour ON push_receipts (destination, hour)",
    "CREATE TABLE IF NOT EXISTS push_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
]
# Columns added after the first release of the table (added in place when missing).
COLUMNS = {"message": "TEXT", "attempts": "INTEGER NOT NULL DEFAULT 0"}
STATES = ("pending", "acked", "refused", "dismissed")


@dataclass(frozen=True)
class Receipt:
    """One event sent (or to be sent) to a destination. ``action``: ``event`` (adds
    ``quantity``), ``cancel`` (Stripe's cancel adjustment of the event ``cancels``; its
    ``quantity`` is minus the cancelled one), ``max`` (a peak, aggregated by max)."""

    destination: str
    key: str
    tenant: str
    meter: str
    hour: int
    revision: int
    action: str
    customer: str
    quantity: float
    cancels: str | None = None
    state: str = "pending"
    message: str | None = None
    attempts: int = 0

    @property
    def request_key(self) -> str:
        """The Idempotency-Key of this try: a refused event's retry is a new request (Stripe
        replays a key's first answer, the refusal included, for 24 h); a resent pending one
        (a crash) is the same request."""
        return self.key if not self.attempts else f"{self.key}-a{self.attempts}"


class ReceiptStore:
    def __init__(self, connection: Any) -> None:
        self.db = connection
        self.postgres = not isinstance(connection, sqlite3.Connection)
        with self._transaction():
            for statement in SCHEMA:
                self._execute(statement)
            present = self._columns()
            for column, kind in COLUMNS.items():
                if column not in present:
                    self._execute(f"ALTER TABLE push_receipts ADD COLUMN {column} {kind}")

    def _columns(self) -> set[str]:
        if self.postgres:
            return {c for (c,) in self._execute("SELECT column_name FROM information_schema.columns "
                                                "WHERE table_name = 'push_receipts'")}
        return {row[1] for row in self._execute("PRAGMA table_info(push_receipts)")}

    def installation(self, override: str | None = None) -> str:
        """This store's installation id (made once, kept): part of every key. ``override`` pins
        it (a store rebuilt from a backup that lacks it)."""
        import uuid

        with self._transaction():
            row = self._execute("SELECT value FROM push_meta WHERE name = 'installation'").fetchone()
            if override and (row is None or row[0] != override):
                self._execute("DELETE FROM push_meta WHERE name = 'installation'")
                self._execute("INSERT INTO push_meta (name, value) VALUES ('installation', ?)", (override,))
                return override
            if row is not None:
                return row[0]
            value = uuid.uuid4().hex
            self._execute("INSERT INTO push_meta (name, value) VALUES ('installation', ?)", (value,))
            return value

    @classmethod
    def open_file(cls, path: str) -> ReceiptStore:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return cls(db)

    def _execute(self, sql: str, params: tuple = ()) -> Any:
        if self.postgres:
            sql = sql.replace("?", "%s")
        return self.db.execute(sql, params)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.postgres:
            with self.db.transaction():
                yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def add_pending(self, receipts: list[Receipt], at: str) -> list[Receipt]:
        """Record the events as pending before they are sent; returns them as stored. A key
        refused earlier goes pending again with the new quantity and one more attempt (the
        destination never took it); an acknowledged or pending key is left as it is."""
        stored = []
        with self._transaction():
            for r in receipts:
                row = self._execute("SELECT state, attempts FROM push_receipts WHERE destination = ? AND key = ?",
                                    (r.destination, r.key)).fetchone()
                if row is None:
                    self._execute("INSERT INTO push_receipts (destination, key, tenant, meter, hour, revision, action, "
                                  "customer, quantity, cancels, state, at, attempts) "
                                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
                                  (r.destination, r.key, r.tenant, r.meter, r.hour, r.revision, r.action, r.customer,
                                   r.quantity, r.cancels, "pending", at))
                    stored.append(r)
                elif row[0] == "refused":
                    attempts = int(row[1] or 0) + 1
                    self._execute("UPDATE push_receipts SET state = 'pending', quantity = ?, customer = ?, at = ?, "
                                  "attempts = ?, message = NULL WHERE destination = ? AND key = ?",
                                  (r.quantity, r.customer, at, attempts, r.destination, r.key))
                    stored.append(Receipt(**{**r.__dict__, "attempts": attempts}))
        return stored

    def mark_acked(self, destination: str, keys: list[str]) -> None:
        with self._transaction():
            for key in keys:
                self._execute("UPDATE push_receipts SET state = 'acked', message = NULL "
                              "WHERE destination = ? AND key = ?", (destination, key))

    def mark_refused(self, destination: str, refusals: dict[str, str]) -> None:
        """key -> the destination's message: refused for good, planned again by later pushes."""
        with self._transaction():
            for key, message in refusals.items():
                self._execute("UPDATE push_receipts SET state = 'refused', message = ? WHERE destination = ? AND key = ?",
                              (message[:1000], destination, key))

    def dismiss(self, destination: str, key: str, reason: str) -> bool:
        """A refused event handled outside entitle (e.g. a credit entered in the vendor's own
        console): counted as delivered from now on, kept with the reason."""
        with self._transaction():
            row = self._execute("SELECT state FROM push_receipts WHERE destination = ? AND key = ?",
                                (destination, key)).fetchone()
            if row is None or row[0] != "refused":
                return False
            self._execute("UPDATE push_receipts SET state = 'dismissed', message = ? WHERE destination = ? AND key = ?",
                          (f"dismissed: {reason}"[:1000], destination, key))
            return True

    def refused(self, destination: str | None = None) -> list[Receipt]:
        where, params = ("WHERE state = 'refused'", ()) if destination is None else \
            ("WHERE state = 'refused' AND destination = ?", (destination,))
        return [self._row(row) for row in self._execute(f"SELECT {FIELDS} FROM push_receipts {where} "
                                                        "ORDER BY destination, hour, key", params)]

    def pending(self, destination: str) -> list[Receipt]:
        return [self._row(row) for row in self._execute(
            f"SELECT {FIELDS} FROM push_receipts WHERE destination = ? AND state = 'pending' ORDER BY hour, key",
            (destination,))]

    def acked(self, destination: str, start: int, end: int) -> dict[tuple[str, str, int], list[Receipt]]:
        """What the destination holds per (tenant, meter, hour) in ``[start, end)``: the
        acknowledged events, and the dismissed ones (handled outside entitle)."""
        out: dict[tuple[str, str, int], list[Receipt]] = defaultdict(list)
        for row in self._execute(
                f"SELECT {FIELDS} FROM push_receipts WHERE destination = ? AND state IN ('acked', 'dismissed') "
                "AND hour >= ? AND hour < ? ORDER BY revision", (destination, start, end)):
            receipt = self._row(row)
            out[(receipt.tenant, receipt.meter, receipt.hour)].append(receipt)
        return out

    def destinations(self) -> list[str]:
        return [d for (d,) in self._execute("SELECT DISTINCT destination FROM push_receipts ORDER BY destination")]

    @staticmethod
    def _row(row: tuple) -> Receipt:
        return Receipt(*row[:11], message=row[11], attempts=int(row[12] or 0))


FIELDS = "destination, key, tenant, meter, hour, revision, action, customer, quantity, cancels, state, message, attempts"

