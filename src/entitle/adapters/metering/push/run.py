"""``entitle usage push`` and ``entitle usage reconcile``: the adapters around
:mod:`entitle.domain.hourly` and :mod:`entitle.domain.push_plan`."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from entitle.adapters.metering.export import sorted_unique
from entitle.adapters.metering.push.receipts import Receipt, ReceiptStore
from entitle.adapters.metering.push.vendors import PushRejected, PushUnavailable, Vendor
from entitle.domain.hourly import HourlyMetering
from entitle.domain.meters import Event
from entitle.domain.push_plan import Plan, Sent, plan


def hourly(events: Iterable[Event], start: int, end: int) -> dict[str, dict[int, dict[str, float]]]:
    metering = HourlyMetering(start, end)
    for event in sorted_unique(events):
        metering.feed(event)
    return metering.finish()


def destination_name(vendor: Vendor) -> str:
    """Receipts are kept per destination: the vendor and its API base."""
    return f"{vendor.name}:{vendor.base}"


def _sent(receipts: dict[tuple[str, str, int], list[Receipt]]) -> dict[tuple[str, str, int], list[Sent]]:
    return {k: [Sent(r.key, r.revision, r.action, r.quantity, r.cancels) for r in v] for k, v in receipts.items()}


@dataclass
class PushResult:
    sent: int = 0
    failed: int = 0
    resent: int = 0
    errors: list[str] = field(default_factory=list)
    plan: Plan | None = None


def push(vendor: Vendor, events: Iterable[Event], start: int, end: int, customers: dict[str, str],
         store: ReceiptStore, report: IO[str] | None = None) -> PushResult:
    report = report or sys.stderr
    destination = destination_name(vendor)
    result = PushResult()
    # 1. What a killed push left pending goes first, exactly as recorded (same key and
    #    quantity): the destination deduplicates it if it had arrived.
    pending = store.pending(destination)
    if pending:
        result.resent = _deliver(vendor, store, destination, pending, result, report)
        if result.failed:
            result.errors.append("events left pending by an earlier push were not acknowledged; nothing new sent")
            return result
    # 2. Hourly quantities now against what the destination acknowledged.
    quantities = hourly(events, start, end)
    acked = _sent(store.acked(destination, start, end))
    result.plan = plan(quantities, acked, customers, vendor.peaks, vendor.negative_deltas)
    for tenant, hours in sorted(result.plan.skipped.items()):
        report.write(f"tenant {tenant}: not in --customers, skipped ({hours} hours with usage, nothing sent)\n")
    for tenant, meter, hour, have, now in result.plan.unlowerable:
        report.write(f"tenant {tenant} {meter} at {_hour(hour)}: {vendor.name} holds {have:g} (max), now {now:g}: "
                     "a max cannot be lowered by a new event; correct it there\n")
    receipts = [Receipt(destination, p.key, p.tenant, p.meter, p.hour, p.revision, p.action, p.customer,
                        p.quantity, p.cancels) for p in result.plan.events]
    store.add_pending(receipts, _now())
    result.sent = _deliver(vendor, store, destination, receipts, result, report)
    return result


def _deliver(vendor: Vendor, store: ReceiptStore, destination: str, receipts: list[Receipt], result: PushResult,
             report: IO[str]) -> int:
    delivered = 0
    total = len(receipts)
    for index in range(0, total, vendor.batch_size):
        batch = receipts[index:index + vendor.batch_size]
        try:
            vendor.send(batch)
        except PushRejected as exc:      # this batch is refused; the others may pass
            result.failed += len(batch)
            if len(result.errors) < 20:
                result.errors.append(str(exc))
            continue
        except PushUnavailable as exc:   # an outage: stop here, a rerun sends the rest
            result.failed += total - index
            result.errors.append(f"{exc}; stopped, {total - index} events left for the next push")
            break
        store.mark_acked(destination, [r.key for r in batch])
        delivered += len(batch)
        if report.isatty():
            report.write(f"\rpushing to {vendor.name}: {delivered + result.failed}/{total}")
    if report.isatty() and total:
        report.write("\n")
    return delivered


@dataclass
class Difference:
    sink: str
    tenant: str
    detail: str


def reconcile_sinks(ledger: Any, start: int, end: int) -> tuple[list[str], list[Difference]]:
    """Per operator sink (its cursor in the ledger) and tenant: records in ``[start, end)``
    that the sink has not acknowledged."""
    from entitle.domain.meters import parse_time

    cursors = ledger.cursors()
    per_tenant: dict[str, list[int]] = defaultdict(list)
    for seq, record in _records_with_seq(ledger):
        try:
            moment = parse_time(record["time"])
        except (KeyError, TypeError, ValueError):
            continue
        if start <= moment < end:
            per_tenant[str(record.get("subject", ""))].append(seq)
    differences = []
    for sink, cursor in sorted(cursors.items()):
        for tenant, seqs in sorted(per_tenant.items()):
            missing = sum(1 for s in seqs if s > cursor)
            if missing:
                differences.append(Difference(sink, tenant, f"ledger holds {len(seqs)} records, sink acknowledged "
                                                            f"{len(seqs) - missing} ({missing} missing)"))
    return sorted(cursors), differences


def _records_with_seq(ledger: Any) -> Iterable[tuple[int, dict]]:
    seq = 0
    while True:
        rows = ledger.read(seq, 20_000)
        if not rows:
            return
        yield from rows
        seq = rows[-1][0]


def reconcile_pushes(store: ReceiptStore, events: list[Event], start: int, end: int,
                     customers: dict[str, str] | None) -> tuple[list[str], list[Difference]]:
    """Per push destination and tenant: hours whose quantity in the ledger now differs from
    what the destination acknowledged (late records not pushed yet, failed or pending events)."""
    destinations = store.destinations()
    if not destinations:
        return [], []
    quantities = hourly(events, start, end)
    differences = []
    for destination in destinations:
        peaks = destination.startswith("openmeter:")
        acked = _sent(store.acked(destination, start, end))
        pushed_tenants = {t for t, _, _ in acked}
        tenants = set(customers) if customers is not None else pushed_tenants
        stripe = destination.startswith("stripe:")
        result = plan({t: h for t, h in quantities.items() if t in tenants}, acked,
                      {t: "" for t in tenants}, peaks, negative_deltas=not stripe)
        pending = store.pending(destination)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for event in result.events:
            if event.action != "cancel":
                by_tenant[event.tenant].append(f"{event.meter} at {_hour(event.hour)}")
        for receipt in pending:
            by_tenant[receipt.tenant].append(f"{receipt.meter} at {_hour(receipt.hour)} (pending)")
        for tenant, items in sorted(by_tenant.items()):
            shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            differences.append(Difference(destination, tenant, f"{len(items)} hourly quantities differ: {shown}"))
    return destinations, differences


def _hour(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
