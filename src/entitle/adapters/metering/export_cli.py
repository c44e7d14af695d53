"""Argument handling for ``entitle usage export``."""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any

from entitle.adapters.metering.errors import ExportError


def main(args: argparse.Namespace) -> int:
    # The Python engine (and the API models it imports) loads only when the columnar path
    # declines: its import alone costs a quarter of a second.
    from entitle.adapters.metering.export import parse_bound, render_csv, render_json

    try:
        start, end = parse_bound("--from", args.start), parse_bound("--to", args.end)
        if end < start:
            raise ExportError(f"--to {args.end} is before --from {args.start}")
        progress = sys.stderr if sys.stderr.isatty() and not args.no_progress else None
        tenants = columnar(args, start, end, progress)
        if tenants is None:
            from entitle.adapters.metering.export import events_from_file, events_from_ledger, export

            if args.ledger:
                # Several replicas' ledgers: one stream; sorted_unique drops the records they share.
                events = itertools.chain.from_iterable(events_from_ledger(path, progress) for path in args.ledger)
            else:
                events = events_from_file(args.events, progress)
            tenants = export(events, start, end, args.tenant)
    except ExportError as exc:
        print(f"entitle usage export: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_csv(tenants) if args.format == "csv" else render_json(args.start, args.end, tenants) + "\n")
    return 0


def columnar(args: argparse.Namespace, start: int, end: int, progress: Any) -> dict | None:
    """The columnar path (export_columnar), or None when it declines: then the Python path
    gives the exact answer, or the exact error naming the line or record."""
    import os
    import tempfile

    from entitle.adapters.metering.export_columnar import SUPPORTED, export_file

    if not SUPPORTED or os.environ.get("ENTITLE_EXPORT_ENGINE") == "python":
        return None
    if progress is not None:
        progress.write("computing meters (columnar)...\n")
    try:
        if args.events:
            if args.events == "-" or not os.path.isfile(args.events):
                return None
            return export_file(args.events, start, end, args.tenant)
        with tempfile.TemporaryDirectory(prefix="entitle-export-") as scratch:
            lines = os.path.join(scratch, "records.jsonl")
            dump_ledgers(args.ledger, lines)
            return export_file(lines, start, end, args.tenant)
    except ExportError:
        raise          # a damaged ledger: no engine reads it as whole
    except Exception:  # noqa: BLE001 -- an undecodable body, anything: the reference path
        return None    # reads the same input and reports it precisely


def dump_ledgers(locations: list[str], path: str) -> None:
    """Every ledger's stored records, one JSON per line (what the columnar path reads)."""
    import sqlite3

    from entitle.adapters.metering.ledger import LedgerDamaged, open_readonly
    from entitle.adapters.metering.backends import is_postgres

    with open(path, "wb") as out:
        for location in locations:
            if is_postgres(location):
                import psycopg

                try:
                    with psycopg.connect(location, connect_timeout=10) as db, db.transaction(), \
                            db.cursor(name="entitle_dump") as cur:
                        cur.itersize = 50_000
                        cur.execute("SELECT body FROM records ORDER BY seq")
                        for (body,) in cur:
                            out.write(body.encode())
                            out.write(b"\n")
                except psycopg.Error as exc:
                    raise ExportError(str(exc)) from None
                continue
            try:
                db = open_readonly(location)
                try:
                    for (body,) in db.execute("SELECT body FROM records"):
                        out.write(body.encode())
                        out.write(b"\n")
                finally:
                    db.close()
            except (sqlite3.Error, FileNotFoundError, LedgerDamaged) as exc:
                raise ExportError(str(exc)) from None
