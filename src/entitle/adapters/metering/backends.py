"""The ledger backends behind one interface, and the one place that picks a backend.

``LedgerBackend`` is what the operator, export, push and reconcile use; SQLite
(``adapters.metering.ledger.Ledger``, one file per replica) and PostgreSQL
(``adapters.metering.postgres.PostgresLedger``, one database for every replica) implement it.
The factory lives here, outside both, so neither implementation imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol


class LedgerBackend(Protocol):
    """Append-only usage records, deduplicated on (source, id), with the live-object table and
    the sinks' cursors beside them."""

    backend: str

    def append(self, records: Iterable[dict]) -> int:
        """Append; records already there (same source and id) are ignored. Returns the new count."""

    def forget_live(self, kind: str, key: str) -> None: ...

    def live(self, kind: str) -> dict[str, dict]: ...

    def iter_live(self, kind: str, page: int = 2000) -> Iterator[tuple[str, str]]: ...

    def has(self, source: str, id_: str) -> bool: ...

    def read(self, after_seq: int = 0, limit: int | None = None) -> list[tuple[int, dict]]: ...

    def iter_records(self, batch: int = 10_000) -> Iterator[dict]: ...

    def cursors(self) -> dict[str, int]: ...

    def count(self) -> int: ...

    def last_seq(self) -> int: ...

    def cursor(self, sink: str) -> int: ...

    def set_cursor(self, sink: str, seq: int) -> None: ...

    def close(self) -> None: ...


def is_postgres(location: str) -> bool:
    """``--ledger`` takes a SQLite path or a PostgreSQL URI (``postgresql://...``)."""
    return str(location).startswith(("postgresql://", "postgres://"))


def open_ledger_at(location: str) -> LedgerBackend:
    """The ledger a CLI's ``--ledger`` names: a PostgreSQL URI or a SQLite path."""
    return open_ledger(postgres=location) if is_postgres(location) else open_ledger(location)


def open_ledger(path: str | Path | None = None, postgres: str | None = None) -> LedgerBackend:
    """The configured ledger: PostgreSQL when a DSN is given, else the SQLite file at ``path``."""
    if postgres:
        from entitle.adapters.metering.postgres import PostgresLedger

        return PostgresLedger(postgres)
    if path is None:
        raise ValueError("a ledger needs a path or a postgres DSN")
    from entitle.adapters.metering.ledger import Ledger

    return Ledger(path)


