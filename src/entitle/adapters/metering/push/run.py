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
from entitle.adapters.metering.push.vendors import ACKED, VENDORS, PushUnavailable, Vendor
from entitle.domain.hourly import HourlyMetering
from entitle.domain.meters import Event
from entitle.domain.push_plan import Plan, Scope, Sent, plan


def hourly(events: Iterable[Event], start: int, end: int,
           whole_seconds: bool = False) -> dict[str, dict[int, dict[str, float]]]:
    """Per tenant and hour, the meters a destination takes: hours (6 decimals), or -- for one
    that takes whole numbers only (Stripe) -- the additive meters in whole seconds."""
    metering = HourlyMetering(start, end)
    for event in sorted_unique(events):
        metering.feed(event)
    return metering.finish_seconds() if whole_seconds else metering.finish()


def destination_name(vendor: Vendor) -> str:
    """Receipts are kept per destination: the vendor and its API base."""
    return f"{vendor.name}:{vendor.base}"


def _of_units(receipts: dict[tuple[str, str, int], list[Receipt]], whole_seconds: bool) -> dict:
    """Only the meters of the unit the destination takes now: Stripe's ``*_seconds`` (hours a
    push before whole seconds acknowledged stay what they are, under their ``*_hours`` meters)."""
    return {k: v for k, v in receipts.items() if ("_seconds" in k[1]) == whole_seconds or k[1].startswith("peak_")}


def _sent(receipts: dict[tuple[str, str, int], list[Receipt]]) -> dict[tuple[str, str, int], list[Sent]]:
    return {k: [Sent(r.key, r.revision, r.action, r.quantity, r.cancels) for r in v] for k, v in receipts.items()}


@dataclass
class PushResult:
    sent: int = 0
    failed: int = 0          # not acknowledged: refused, or left pending by an outage
    refused: int = 0
    resent: int = 0
    errors: list[str] = field(default_factory=list)
    plan: Plan | None = None
    check_meters: bool = True


def push(vendor: Vendor, events: Iterable[Event], start: int, end: int, customers: dict[str, str],
         store: ReceiptStore, report: IO[str] | None = None, installation: str | None = None,
         check_meters: bool = True) -> PushResult:
    report = report or sys.stderr
    destination = destination_name(vendor)
    result = PushResult(check_meters=check_meters)
    # 1. What a killed push left pending goes first, exactly as recorded (same key and
    #    quantity): the destination deduplicates it if it had arrived. A refusal among them
    #    stops nothing; an outage does (planning past events whose fate is unknown could send
    #    a quantity twice).
    pending = store.pending(destination)
    if pending:
        held = vendor.already_has(pending)
        if held:
            store.mark_acked(destination, sorted(held))
            pending = [r for r in pending if r.key not in held]
        result.resent = _deliver(vendor, store, destination, pending, result, report) + len(held)
        if any(r.state == "pending" for r in store.pending(destination)):
            result.errors.append("the destination is unavailable: events left pending by an earlier push are still "
                                 "pending; nothing new sent (the next push sends them first)")
            return result
    # 2. Hourly quantities now against what the destination holds (acknowledged or dismissed);
    #    a refused event is planned again.
    scope = Scope(store.installation(installation), destination)
    report.write(f"installation {scope.installation} (part of every key; pin it with --installation if this "
                 "receipt store is ever rebuilt)\n")
    quantities = hourly(events, start, end, whole_seconds=vendor.whole_seconds)
    acked = _sent(_of_units(store.acked(destination, start, end), vendor.whole_seconds))
    result.plan = plan(quantities, acked, customers, vendor.peaks, scope)
    for tenant, hours in sorted(result.plan.skipped.items()):
        report.write(f"tenant {tenant}: not in --customers, skipped ({hours} hours with usage, nothing sent)\n")
    for tenant, meter, hour, have, now in result.plan.unlowerable:
        report.write(f"tenant {tenant} {meter} at {_hour(hour)}: {vendor.name} holds {have:g} (max), now {now:g}: "
                     "a max cannot be lowered by a new event; correct it there\n")
    receipts = [Receipt(destination, p.key, p.tenant, p.meter, p.hour, p.revision, p.action, p.customer,
                        p.quantity, p.cancels) for p in result.plan.events]
    receipts = store.add_pending(receipts, _now())
    result.sent = _deliver(vendor, store, destination, receipts, result, report)
    return result


def _without_meter(vendor: Vendor, receipts: list[Receipt]) -> dict[str, str]:
    """Refusals, before sending, of the events for meters the account does not have (the
    vendor would take them and bill nothing)."""
    if not receipts:
        return {}
    known = vendor.known_meters()
    if known is None:
        return {}
    return {r.key: vendor.no_meter(r.meter) for r in receipts if r.meter not in known}


def _deliver(vendor: Vendor, store: ReceiptStore, destination: str, receipts: list[Receipt], result: PushResult,
             report: IO[str]) -> int:
    """Send in batches; acknowledged ones are marked so, refused ones kept as refused with the
    vendor's message (reported; the next push tries them again) -- a refusal never stops the
    other events. An outage stops here: the rest stays pending for the next push."""
    delivered = 0
    total = len(receipts)
    missing = _without_meter(vendor, receipts) if result.check_meters else {}
    if missing:
        _refused(store, destination, receipts, missing, result)
        receipts = [r for r in receipts if r.key not in missing]
    for index in range(0, len(receipts), vendor.batch_size):
        batch = receipts[index:index + vendor.batch_size]
        try:
            outcome = vendor.send(batch)
        except PushUnavailable as exc:
            left = len(receipts) - index
            result.failed += left
            result.errors.append(f"{exc}; stopped, {left} events left pending for the next push")
            break
        acked = [r.key for r in batch if outcome.get(r.key) == ACKED]
        store.mark_acked(destination, acked)
        _refused(store, destination, batch,
                 {r.key: outcome.get(r.key) or "no answer for this event" for r in batch if r.key not in acked}, result)
        delivered += len(acked)
        if report.isatty():
            report.write(f"\rpushing to {vendor.name}: {delivered + result.failed}/{total}")
    if report.isatty() and total:
        report.write("\n")
    return delivered


def _refused(store: ReceiptStore, destination: str, receipts: list[Receipt], refusals: dict[str, str],
             result: PushResult) -> None:
    if not refusals:
        return
    store.mark_refused(destination, refusals)
    for r in receipts:
        if r.key in refusals:
            result.refused += 1
            result.failed += 1
            if len(result.errors) < 50:
                result.errors.append(f"refused: tenant {r.tenant} {r.meter} at {_hour(r.hour)} ({r.quantity:g}, "
                                     f"key {r.key}): {refusals[r.key]}")


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
    what the destination acknowledged (late records not pushed yet, pending events), and every
    event the destination refused (with its message, until delivered or dismissed)."""
    destinations = store.destinations()
    if not destinations:
        return [], []
    events = list(events)
    differences = []
    for destination in destinations:
        vendor = VENDORS.get(destination.split(":", 1)[0])
        whole_seconds = bool(vendor and vendor.whole_seconds)
        peaks = bool(vendor and vendor.peaks)
        quantities = hourly(events, start, end, whole_seconds=whole_seconds)
        acked = _sent(_of_units(store.acked(destination, start, end), whole_seconds))
        pushed_tenants = {t for t, _, _ in acked}
        tenants = set(customers) if customers is not None else pushed_tenants
        result = plan({t: h for t, h in quantities.items() if t in tenants}, acked,
                      {t: "" for t in tenants}, peaks, Scope("", destination))
        refusals = [r for r in store.refused(destination) if start <= r.hour < end]
        refused = {(r.tenant, r.meter, r.hour) for r in refusals}
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for event in result.events:
            if (event.tenant, event.meter, event.hour) not in refused:
                by_tenant[event.tenant].append(f"{event.meter} at {_hour(event.hour)}")
        for receipt in store.pending(destination):
            by_tenant[receipt.tenant].append(f"{receipt.meter} at {_hour(receipt.hour)} (pending)")
        for receipt in refusals:
            by_tenant[receipt.tenant].append(f"{receipt.meter} at {_hour(receipt.hour)} REFUSED (key {receipt.key}, "
                                             f"{receipt.attempts + 1} tries): {receipt.message}")
        for tenant, items in sorted(by_tenant.items()):
            shown = "; ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            differences.append(Difference(destination, tenant, f"{len(items)} hourly quantities differ: {shown}"))
    return destinations, differences


def _hour(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
