"""``entitle usage export``: records from a ledger or a JSON-lines file -> per-tenant totals.

It streams. Records are reduced to compact events, sorted by time with an external merge sort
(sorted runs of ``RUN_SIZE`` events spilled to temporary files, then merged), deduplicated on
``(source, id)`` as they come out of the merge (duplicates are the same record, so they sort
next to each other), and integrated by :class:`entitle.domain.meters.Metering`. Memory holds
one run plus the tenants' live state, however large the input.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from entitle.adapters.metering.ledger import LedgerDamaged, open_readonly
from entitle.adapters.metering.backends import is_postgres
from entitle.domain.meters import BadRecord, Event, Metering, to_event

RUN_SIZE = 200_000


from entitle.adapters.metering.errors import ExportError  # noqa: E402  (re-exported)


class Progress:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, stream: IO[str] | None, total: int | None, label: str) -> None:
        self.stream, self.total, self.label = stream, total, label
        self.done = 0
        self._last = 0.0

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}%")
        else:
            self.stream.write(f"\r{self.label} {self.done:,}")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _events_from_lines(lines: Iterable[bytes], name: str, progress: Progress) -> Iterator[Event]:
    for number, line in enumerate(lines, 1):
        progress.advance(len(line))
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ExportError(f"{name}:{number}: not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(record, dict):
            raise ExportError(f"{name}:{number}: expected a JSON object")
        try:
            event = to_event(record)
        except BadRecord as exc:
            raise ExportError(f"{name}:{number}: bad record {record.get('id')!r}: {exc}") from None
        if event is not None:
            yield event


def events_from_file(path: str, progress_stream: IO[str] | None) -> Iterator[Event]:
    if path == "-":
        progress = Progress(progress_stream, None, "reading records")
        yield from _events_from_lines(sys.stdin.buffer, "<stdin>", progress)
        progress.close()
        return
    try:
        size = os.path.getsize(path)
        handle = open(path, "rb")
    except OSError as exc:
        raise ExportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    progress = Progress(progress_stream, size, "reading records")
    with handle:
        yield from _events_from_lines(handle, path, progress)
    progress.close()


def _events_from_postgres(dsn: str, progress_stream: IO[str] | None) -> Iterator[Event]:
    import psycopg

    from entitle.adapters.metering.postgres import _redacted

    name = _redacted(dsn)
    try:
        db = psycopg.connect(dsn, connect_timeout=10)
        total = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except psycopg.Error as exc:
        raise ExportError(f"{name}: cannot open the ledger: {str(exc).strip()}") from None
    progress = Progress(progress_stream, total, "reading ledger")
    number = 0
    try:
        # A server-side cursor streams: memory stays flat however large the ledger.
        with db.transaction(), db.cursor(name="entitle_export") as cur:
            cur.itersize = 20_000
            cur.execute("SELECT body FROM records ORDER BY seq")
            for number, (body,) in enumerate(cur, 1):
                progress.advance(1)
                event = _event_from_body(body, name, number)
                if event is not None:
                    yield event
    except psycopg.Error as exc:
        raise ExportError(f"{name}: reading the ledger failed after record {number}: {str(exc).strip()}") from None
    finally:
        db.close()
        progress.close()


def _event_from_body(body: str, name: str, number: int) -> Event | None:
    try:
        record = json.loads(body)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return to_event(record)
    except (BadRecord, ValueError, TypeError) as exc:
        raise ExportError(f"{name}: record {number}: {exc}") from None


def events_from_ledger(path: str, progress_stream: IO[str] | None) -> Iterator[Event]:
    if is_postgres(path):
        yield from _events_from_postgres(path, progress_stream)
        return
    try:
        db = open_readonly(path)
        total = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except LedgerDamaged as exc:
        raise ExportError(str(exc)) from None
    except Exception as exc:
        raise ExportError(f"{path}: cannot open the ledger: {exc}") from None
    progress = Progress(progress_stream, total, "reading ledger")
    number = 0
    try:
        for number, (body,) in enumerate(db.execute("SELECT body FROM records"), 1):
            progress.advance(1)
            event = _event_from_body(body, path, number)
            if event is not None:
                yield event
    except sqlite3.Error as exc:
        # A damaged page shows up mid-read, not at open: say where, and that nothing was exported.
        raise ExportError(f"{path}: the ledger is damaged after record {number} ({exc}); restore it from a "
                          "backup or export from the sink stream (--events)") from None
    finally:
        db.close()
        progress.close()


def _by_id(event: Event) -> tuple:
    return (event.source, event.id, *event.sort_key())


def _spill(run: list[Event], directory: str, key: Any = Event.sort_key) -> str:
    run.sort(key=key)
    fd, path = tempfile.mkstemp(dir=directory, suffix=".run")
    with os.fdopen(fd, "w") as out:
        for event in run:
            out.write(json.dumps(event.to_row(), separators=(",", ":")))
            out.write("\n")
    return path


def _read_run(path: str) -> Iterator[Event]:
    with open(path) as handle:
        for line in handle:
            yield Event.from_row(json.loads(line))


def _sorted(events: Iterable[Event], key: Any, directory: str, run_size: int) -> Iterator[Event]:
    """An external merge sort: runs of ``run_size`` spilled to ``directory``, then merged."""
    runs: list[str] = []
    run: list[Event] = []
    for event in events:
        run.append(event)
        if len(run) >= run_size:
            runs.append(_spill(run, directory, key))
            run = []
    run.sort(key=key)
    return heapq.merge(*[_read_run(p) for p in runs], iter(run), key=key)


def _earliest_per_id(events: Iterable[Event], directory: str, run_size: int) -> Iterator[Event]:
    """Each (source, id) once: its earliest copy. Replicas record one change (same id) at the
    moment each first observed it (DESIGN "Usage records"): the change happened no later than
    the first of them."""
    previous: tuple[str, str] | None = None
    for event in _sorted(events, _by_id, directory, run_size):
        ident = (event.source, event.id)
        if ident != previous:
            previous = ident
            yield event


def sorted_unique(events: Iterable[Event], run_size: int = RUN_SIZE) -> Iterator[Event]:
    """Events in time order, each (source, id) once (its earliest copy), with bounded memory:
    one external sort by id to drop the later copies, one by time to meter."""
    with tempfile.TemporaryDirectory(prefix="entitle-export-") as directory:
        yield from _sorted(_earliest_per_id(events, directory, run_size), Event.sort_key, directory, run_size)


def export(events: Iterable[Event], start: int, end: int, tenant: str | None) -> dict[str, dict[str, Any]]:
    metering = Metering(start, end, tenant)
    for event in sorted_unique(events):
        metering.feed(event)
    return metering.finish()


def render_json(start: str, end: str, tenants: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"from": start, "to": end, "tenants": tenants}, indent=2)


def render_csv(tenants: dict[str, dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tenant", "meter", "quantity"])
    for tenant, meters in tenants.items():
        for meter, value in meters.items():
            if isinstance(value, dict):
                for feature, quantity in value.items():
                    writer.writerow([tenant, f"{meter}:{feature}", quantity])
            else:
                writer.writerow([tenant, meter, value])
    return out.getvalue()


# Usage records start at the Unix epoch; a bound outside [EARLIEST, LATEST] is bad input, not a
# date to clamp (0000-01-01 would otherwise become year 1 without a word).
EARLIEST, LATEST = 0, 253402300799     # 1970-01-01T00:00:00Z, 9999-12-31T23:59:59Z


def parse_bound(flag: str, text: str) -> int:
    from entitle.api.common import parse_time as parse_rfc3339

    try:
        moment = parse_rfc3339(text)
    except ValueError:
        raise ExportError(f"{flag} {text!r}: not an RFC 3339 timestamp with a time zone "
                          "(e.g. 2026-11-01T00:00:00Z)") from None
    epoch = int(moment.timestamp() // 1)
    if not EARLIEST <= epoch <= LATEST:     # (the parse clamps year 0000 to year 1: before EARLIEST)
        raise ExportError(f"{flag} {text!r}: out of range: give a time from 1970-01-01T00:00:00Z to "
                          "9999-12-31T23:59:59Z")
    return epoch
