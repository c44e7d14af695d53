"""What each billing destination acknowledged: the push's receipts, kept beside the records
(in the ledger's database) or in a state file of their own.

An outbox: every event is written ``pending`` with its key and quantity before it is sent and
``acked`` once the destination accepted it. A push killed between the two re-sends exactly the
pending events (same key, same quantity: the destination deduplicates) before it computes
anything new, so a crash can neither lose a correction nor smuggle a changed quantity in under
a key the destination has already seen.
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
]


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


class ReceiptStore:
    def __init__(self, connection: Any) -> None:
        self.db = connection
        self.postgres = not isinstance(connection, sqlite3.Connection)
        with self._transaction():
            for statement in SCHEMA:
                self._execute(statement)

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

    def add_pending(self, receipts: list[Receipt], at: str) -> None:
        with self._transaction():
            for r in receipts:
                self._execute("INSERT INTO push_receipts (destination, key, tenant, meter, hour, revision, action, "
                              "customer, quantity, cancels, state, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                              "ON CONFLICT (destination, key) DO NOTHING",
                              (r.destination, r.key, r.tenant, r.meter, r.hour, r.revision, r.action, r.customer,
                               r.quantity, r.cancels, "pending", at))

    def mark_acked(self, destination: str, keys: list[str]) -> None:
        with self._transaction():
            for key in keys:
                self._execute("UPDATE push_receipts SET state = 'acked' WHERE destination = ? AND key = ?",
                              (destination, key))

    def pending(self, destination: str) -> list[Receipt]:
        return [self._row(row) for row in self._execute(
            "SELECT destination, key, tenant, meter, hour, revision, action, customer, quantity, cancels, state "
            "FROM push_receipts WHERE destination = ? AND state = 'pending' ORDER BY hour, key", (destination,))]

    def acked(self, destination: str, start: int, end: int) -> dict[tuple[str, str, int], list[Receipt]]:
        """Acknowledged events per (tenant, meter, hour) in ``[start, end)``."""
        out: dict[tuple[str, str, int], list[Receipt]] = defaultdict(list)
        for row in self._execute(
                "SELECT destination, key, tenant, meter, hour, revision, action, customer, quantity, cancels, state "
                "FROM push_receipts WHERE destination = ? AND state = 'acked' AND hour >= ? AND hour < ? "
                "ORDER BY revision", (destination, start, end)):
            receipt = self._row(row)
            out[(receipt.tenant, receipt.meter, receipt.hour)].append(receipt)
        return out

    def destinations(self) -> list[str]:
        return [d for (d,) in self._execute("SELECT DISTINCT destination FROM push_receipts ORDER BY destination")]

    @staticmethod
    def _row(row: tuple) -> Receipt:
        return Receipt(*row)

