"""Argument handling for ``entitle usage export``."""

from __future__ import annotations

import argparse
import itertools
import sys

from entitle.adapters.metering.export import (
    ExportError, events_from_file, events_from_ledger, export, parse_bound, render_csv, render_json,
)


def main(args: argparse.Namespace) -> int:
    try:
        start, end = parse_bound("--from", args.start), parse_bound("--to", args.end)
        if end < start:
            raise ExportError(f"--to {args.end} is before --from {args.start}")
        progress = sys.stderr if sys.stderr.isatty() and not args.no_progress else None
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
