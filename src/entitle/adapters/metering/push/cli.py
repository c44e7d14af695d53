"""Argument handling for ``entitle usage push | amend | reconcile``.

Exit codes (DESIGN): 0 everything acknowledged (push) / no difference (reconcile) / appended
(amend); 1 something was not acknowledged / a difference; 2 bad input.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from entitle.adapters.metering.errors import ExportError

HOUR = 3600


class PushInputError(Exception):
    """A push, amend or reconcile argument or input file is unusable; the message says which."""


def _events(args: argparse.Namespace) -> Iterator[Any]:
    from entitle.adapters.metering.export import events_from_file, events_from_ledger

    progress = sys.stderr if sys.stderr.isatty() and not getattr(args, "no_progress", False) else None
    if args.ledger:
        return itertools.chain.from_iterable(events_from_ledger(p, progress) for p in args.ledger)
    return events_from_file(args.events, progress)


def _window(args: argparse.Namespace, end_text: str) -> tuple[int, int]:
    from entitle.adapters.metering.export import parse_bound

    start, end = parse_bound("--from", args.start), parse_bound("--to", end_text)
    if start % HOUR or end % HOUR:
        raise PushInputError("--from and --to must be whole UTC hours (quantities are pushed per hour)")
    if end <= start:
        raise PushInputError(f"--to {end_text} is not after --from {args.start}")
    return start, end


def _customers(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise PushInputError(f"--customers {path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PushInputError(f"--customers {path}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) and str(v).strip()
                                             for k, v in data.items()):
        raise PushInputError(f"--customers {path}: expected a mapping of tenant to customer or subscription id")
    return {k: str(v).strip() for k, v in data.items()}


def _store(args: argparse.Namespace, required: bool = True) -> Any:
    """Receipts live in ``--state`` (a SQLite file), else beside the records in the one ledger."""
    from entitle.adapters.metering.backends import is_postgres
    from entitle.adapters.metering.push.receipts import ReceiptStore

    if args.state:
        return ReceiptStore.open_file(args.state)
    if args.ledger and len(args.ledger) == 1:
        location = args.ledger[0]
        if is_postgres(location):
            import psycopg

            try:
                return ReceiptStore(psycopg.connect(location, autocommit=True, connect_timeout=10))
            except psycopg.Error as exc:
                raise PushInputError(f"cannot open the ledger: {str(exc).strip()}") from None
        if not Path(location).exists():
            raise PushInputError(f"{location}: no such ledger")
        from entitle.adapters.metering.ledger import LedgerDamaged, verify

        try:
            verify(location)
        except LedgerDamaged as exc:
            raise PushInputError(str(exc)) from None
        db = sqlite3.connect(location, isolation_level=None, timeout=30)
        db.execute("PRAGMA synchronous=FULL")
        return ReceiptStore(db)
    if required:
        raise PushInputError("where to keep what was acknowledged: give --state FILE (needed with --events or "
                             "several --ledger)")
    return None


def push_main(args: argparse.Namespace) -> int:
    from entitle.adapters.metering.push.run import push
    from entitle.adapters.metering.push.vendors import VENDORS

    try:
        vendors = [v for v in args.to if v in VENDORS]
        times = [v for v in args.to if v not in VENDORS]
        now_hour = int(time.time()) // HOUR * HOUR
        if args.last_hours is not None:
            # A CronJob's window: the last N whole hours (re-pushing hours already sent is free).
            if times or args.start or len(vendors) != 1 or args.last_hours < 1:
                raise PushInputError("--last-hours N (N >= 1) replaces --from and the end time; give --to once, "
                                     "the destination")
            start, end = now_hour - args.last_hours * HOUR, now_hour
        else:
            if len(vendors) != 1 or len(times) != 1 or not args.start:
                raise PushInputError("give --to twice: the destination (openmeter, stripe or lago) and the end time "
                                     "(and --from), or --to once with --last-hours")
            start, end = _window(args, times[0])
        if end > now_hour:
            print(f"entitle usage push: hours from {_fmt(max(start, now_hour))} are not over yet: left for a later push",
                  file=sys.stderr)
            end = now_hour
        customers = _customers(args.customers)
        token = os.environ.get("ENTITLE_PUSH_TOKEN")
        if not token:
            raise PushInputError("ENTITLE_PUSH_TOKEN is not set (the billing API's secret key, sent as a bearer token)")
        if start >= end:
            print("entitle usage push: nothing to push (no whole hour in the window is over)", file=sys.stderr)
            return 0
        vendor = VENDORS[vendors[0]](args.endpoint, token)
        store = _store(args)
        result = push(vendor, _events(args), start, end, customers or {}, store, installation=args.installation,
                      check_meters=not args.skip_meter_check)
    except (PushInputError, ExportError) as exc:
        print(f"entitle usage push: {exc}", file=sys.stderr)
        return 2
    adjustments = result.plan.adjustments if result.plan else 0
    print(f"pushed to {vendor.name}: {result.sent} events acknowledged ({adjustments} adjustments), "
          f"{result.resent} resent from an earlier push, {result.failed} not acknowledged "
          f"({result.refused} refused: listed by `entitle usage reconcile`, tried again by the next push)")
    for error in result.errors:
        print(f"entitle usage push: {error}", file=sys.stderr)
    return 1 if result.failed else 0


def dismiss_main(args: argparse.Namespace) -> int:
    """A refused event handled outside entitle (entered in the vendor's console by hand, say):
    counted as delivered from now on, kept with the reason; nothing is sent."""
    from entitle.adapters.metering.push.run import destination_name
    from entitle.adapters.metering.push.vendors import VENDORS

    try:
        if not args.reason.strip():
            raise PushInputError("--reason must say how the refused event was handled (it is kept with it)")
        store = _store(args)
        destination = destination_name(VENDORS[args.to](args.endpoint, ""))
        done = store.dismiss(destination, args.key, args.reason.strip())
    except PushInputError as exc:
        print(f"entitle usage dismiss: {exc}", file=sys.stderr)
        return 2
    if not done:
        print(f"entitle usage dismiss: no refused event {args.key} for {destination} (see `entitle usage reconcile`)",
              file=sys.stderr)
        return 1
    print(f"dismissed {args.key} for {destination}: counted as delivered from now on")
    return 0


def salvage_main(args: argparse.Namespace) -> int:
    """Copy what is readable of a damaged ledger into a new one and say exactly what was lost."""
    from entitle.adapters.metering.ledger import LedgerDamaged, salvage, verify

    if not Path(args.ledger).exists():
        print(f"entitle usage salvage: {args.ledger}: no such ledger", file=sys.stderr)
        return 2
    if Path(args.out).exists():
        print(f"entitle usage salvage: {args.out} exists: give a new file", file=sys.stderr)
        return 2
    try:
        verify(args.ledger)
        print(f"{args.ledger} is whole: nothing to salvage", file=sys.stderr)
        return 0
    except LedgerDamaged as exc:
        print(f"{exc}".split(": restore")[0], file=sys.stderr)
    copied, lost, top = salvage(args.ledger, args.out)
    print(f"copied {copied} records into {args.out}")
    missing = sum(hi - lo + 1 for lo, hi in lost)
    for lo, hi in lost:
        print(f"LOST records seq {lo}..{hi}" if hi > lo else f"LOST record seq {lo}")
    if top is None:
        print("the ledger's last sequence number is unreadable too: records after the last one copied may be lost")
    print(f"{missing} records lost; recover them from a sink's stream (--events) or a backup, or "
          "`entitle usage amend` what they billed")
    return 1 if lost or top is None else 0


def amend_main(args: argparse.Namespace) -> int:
    from entitle.adapters.metering.export import parse_bound
    from entitle.adapters.metering.ledger import LedgerDamaged
    from entitle.adapters.metering.backends import is_postgres, open_ledger_at
    from entitle.domain.records import amendment_record, is_amendable

    try:
        start, end = parse_bound("--from", args.start), parse_bound("--to", args.end)
        if end <= start:
            raise PushInputError(f"--to {args.end} is not after --from {args.start}")
        if not is_amendable(args.meter):
            raise PushInputError(f"--meter {args.meter}: only additive meters can be amended (instance_hours, "
                                 "overage_instance_hours, seat_hours, feature_workload_hours:<feature>)")
        if not args.reason.strip():
            raise PushInputError("--reason must say why (it is kept with the amendment)")
        import math

        if not math.isfinite(args.quantity):
            raise PushInputError("--quantity must be a finite number")
        if not is_postgres(args.ledger) and not Path(args.ledger).exists():
            raise PushInputError(f"{args.ledger}: no such ledger")
        record = amendment_record(args.tenant, args.meter, _dt(start), _dt(end), args.quantity, args.reason.strip(),
                                  datetime.now(timezone.utc), author=os.environ.get("USER"))
        ledger = open_ledger_at(args.ledger)
        added = ledger.append([record])
        ledger.close()
    except (PushInputError, ExportError, LedgerDamaged) as exc:
        print(f"entitle usage amend: {exc}", file=sys.stderr)
        return 2
    print(f"amendment {record['id']} {'appended' if added else 'already in the ledger'}: {args.tenant} {args.meter} "
          f"{args.quantity:+g} over [{record['data']['from']}, {record['data']['to']})")
    return 0


def reconcile_main(args: argparse.Namespace) -> int:
    from entitle.adapters.metering.export import parse_bound
    from entitle.adapters.metering.ledger import LedgerDamaged
    from entitle.adapters.metering.backends import is_postgres, open_ledger_at
    from entitle.adapters.metering.push.run import reconcile_pushes, reconcile_sinks

    try:
        start, end = parse_bound("--from", args.start), parse_bound("--to", args.end)
        if end <= start:
            raise PushInputError(f"--to {args.end} is not after --from {args.start}")
        customers = _customers(args.customers)
        differences, checked = [], []
        if args.ledger and len(args.ledger) == 1:
            location = args.ledger[0]
            if not is_postgres(location) and not Path(location).exists():
                raise PushInputError(f"{location}: no such ledger")
            ledger = open_ledger_at(location)
            sinks, found = reconcile_sinks(ledger, start, end)
            ledger.close()
            checked += sinks
            differences += found
        store = _store(args, required=False)
        if store is not None:
            hour_start, hour_end = start - start % HOUR, end - end % HOUR
            destinations, found = reconcile_pushes(store, _events(args), hour_start, hour_end, customers)
            checked += destinations
            differences += found
    except (PushInputError, ExportError, LedgerDamaged) as exc:
        print(f"entitle usage reconcile: {exc}", file=sys.stderr)
        return 2
    if not checked:
        print("entitle usage reconcile: no sink and no push destination to compare with", file=sys.stderr)
        return 2
    for d in differences:
        print(f"DIFFERENT  {d.sink}  tenant {d.tenant}: {d.detail}")
    print(f"{len(checked)} sinks/destinations compared over [{args.start}, {args.end}): "
          f"{len(differences)} differences")
    return 1 if differences else 0


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _fmt(epoch: int) -> str:
    return _dt(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_parsers(usub: Any) -> None:
    p = usub.add_parser("push", help="hourly meter quantities to a billing system (stripe, lago, openmeter)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ledger", action="append", help="a ledger (SQLite file or postgresql:// DSN); repeatable")
    src.add_argument("--events", help="CloudEvents JSON-lines file")
    p.add_argument("--to", action="append", required=True, metavar="openmeter|stripe|lago or TIME",
                   help="given twice: the destination, and the window's end (RFC 3339, a whole hour, exclusive)")
    p.add_argument("--from", dest="start", help="window start (RFC 3339, a whole UTC hour)")
    p.add_argument("--last-hours", type=int, help="instead of --from/--to: the last N whole hours (for a CronJob)")
    p.add_argument("--customers", required=True, help="YAML {tenant: customer or subscription id}")
    p.add_argument("--endpoint", help="the API base instead of the vendor's public one")
    p.add_argument("--state", help="SQLite file keeping what was acknowledged (default: the ledger itself)")
    p.add_argument("--installation", help="this installation's id in every key (default: the one kept in the receipt "
                                          "store, made at its first push); pin it when restoring a store")
    p.add_argument("--skip-meter-check", action="store_true",
                   help="do not list the destination's meters first (a proxy or mock that cannot list them); an event "
                        "for a meter the vendor lacks is then taken and billed nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=push_main)

    d = usub.add_parser("dismiss", help="count a refused push event as delivered (handled outside entitle)")
    dsrc = d.add_mutually_exclusive_group(required=True)
    dsrc.add_argument("--ledger", action="append", help="the ledger keeping the receipts")
    dsrc.add_argument("--state", help="the push state file")
    d.add_argument("--to", required=True, choices=["openmeter", "stripe", "lago"], help="the destination")
    d.add_argument("--endpoint", help="its API base, as pushed with")
    d.add_argument("--key", required=True, help="the refused event's key (entitle usage reconcile lists them)")
    d.add_argument("--reason", required=True, help="how it was handled (kept with it)")
    d.set_defaults(func=dismiss_main)

    a = usub.add_parser("amend", help="append a correction of an additive meter (nothing is ever deleted)")
    a.add_argument("--ledger", required=True, help="the ledger to append to (SQLite file or postgresql:// DSN)")
    a.add_argument("--tenant", required=True)
    a.add_argument("--meter", required=True, help="instance_hours, overage_instance_hours, seat_hours or "
                                                 "feature_workload_hours:<feature>")
    a.add_argument("--from", dest="start", required=True)
    a.add_argument("--to", dest="end", required=True)
    a.add_argument("--quantity", type=float, required=True, help="added over the period (negative: a credit)")
    a.add_argument("--reason", required=True)
    a.set_defaults(func=amend_main)

    s_ = usub.add_parser("salvage", help="copy what is readable of a damaged SQLite ledger into a new one, "
                                         "listing every record lost")
    s_.add_argument("--ledger", required=True, help="the damaged SQLite ledger (read only)")
    s_.add_argument("--out", required=True, help="the new ledger to write")
    s_.set_defaults(func=salvage_main)

    r = usub.add_parser("reconcile", help="compare the ledger with what each sink and push destination acknowledged")
    rsrc = r.add_mutually_exclusive_group(required=True)
    rsrc.add_argument("--ledger", action="append", help="the ledger (SQLite file or postgresql:// DSN)")
    rsrc.add_argument("--events", help="CloudEvents JSON-lines file (push destinations only, with --state)")
    r.add_argument("--from", dest="start", required=True)
    r.add_argument("--to", dest="end", required=True)
    r.add_argument("--state", help="the push state file, when pushes do not keep it in the ledger")
    r.add_argument("--customers", help="only these tenants count for push destinations")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=reconcile_main)
