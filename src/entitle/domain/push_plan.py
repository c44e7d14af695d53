"""What a push must send, given the hourly quantities now and what the destination already
acknowledged (DESIGN "Billing delivery"). Pure: no I/O.

Per (tenant, meter, hour):
- nothing sent yet: the quantity under the hour's base key (zero is not sent);
- sent, and the quantity now differs (a late record, an amendment): an **adjustment** under a
  new key -- the signed difference where the destination sums, or (Stripe, which takes no
  negative usage) a cancel of what was sent plus the corrected quantity;
- peaks (systems that aggregate by max): the new peak when it rose; a lower one cannot lower a
  max and is reported;
- a tenant without a customer id is reported and never sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

PEAK_METERS = ("peak_instances", "peak_seats")
EPSILON = 1e-9


@dataclass(frozen=True)
class Sent:
    """An acknowledged event: ``action`` ``event`` (adds), ``cancel`` (its ``quantity`` is minus
    the cancelled event's) or ``max`` (a peak)."""

    key: str
    revision: int
    action: str
    quantity: float
    cancels: str | None = None


@dataclass(frozen=True)
class Planned:
    key: str
    tenant: str
    customer: str
    meter: str
    hour: int
    revision: int
    action: str
    quantity: float
    cancels: str | None = None


@dataclass
class Plan:
    events: list[Planned] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)        # tenant -> hours with usage
    unlowerable: list[tuple[str, str, int, float, float]] = field(default_factory=list)
    adjustments: int = 0


def idempotency_key(tenant: str, meter: str, hour: int, revision: int = 0, suffix: str = "") -> str:
    """From (tenant, meter, hour): the base key; revisions (adjustments) get their own."""
    digest = hashlib.sha256(f"{tenant}|{meter}|{hour}".encode()).hexdigest()[:40]
    key = f"entitle-{digest}"
    if revision:
        key += f"-r{revision}"
    return key + suffix


def total(sent: list[Sent]) -> float:
    if any(s.action == "max" for s in sent):
        return max(s.quantity for s in sent)
    return sum(s.quantity for s in sent)


def plan(hourly: dict[str, dict[int, dict[str, float]]], acked: dict[tuple[str, str, int], list[Sent]],
         customers: dict[str, str], peaks: bool, negative_deltas: bool) -> Plan:
    out = Plan()
    tenants = sorted(set(hourly) | {t for t, _, _ in acked})
    for tenant in tenants:
        hours = hourly.get(tenant, {})
        if tenant not in customers:
            used = sum(1 for q in hours.values() if any(v for m, v in q.items()))
            if used:
                out.skipped[tenant] = used
            continue
        customer = customers[tenant]
        sent_hours = {h for t, _, h in acked if t == tenant}
        for hour in sorted(set(hours) | sent_hours):
            quantities = hours.get(hour, {})
            meters = set(quantities) | {m for t, m, h in acked if t == tenant and h == hour}
            for meter in sorted(meters):
                is_peak = meter in PEAK_METERS
                if is_peak and not peaks:
                    continue
                now = float(quantities.get(meter, 0.0))
                sent = acked.get((tenant, meter, hour), [])
                out.events.extend(_one(out, tenant, customer, meter, hour, now, sent, is_peak, negative_deltas))
    return out


def _one(out: Plan, tenant: str, customer: str, meter: str, hour: int, now: float, sent: list[Sent],
         is_peak: bool, negative_deltas: bool) -> list[Planned]:
    action = "max" if is_peak else "event"
    if not sent:
        if abs(now) < EPSILON:
            return []
        return [Planned(idempotency_key(tenant, meter, hour), tenant, customer, meter, hour, 0, action, now)]
    have = total(sent)
    delta = round(now - have, 6)
    if abs(delta) < EPSILON:
        return []
    revision = max(s.revision for s in sent) + 1
    out.adjustments += 1
    if is_peak:
        if now < have:
            out.unlowerable.append((tenant, meter, hour, have, now))
            out.adjustments -= 1
            return []
        return [Planned(idempotency_key(tenant, meter, hour, revision), tenant, customer, meter, hour, revision,
                        "max", now)]
    if delta > 0 or negative_deltas:
        return [Planned(idempotency_key(tenant, meter, hour, revision), tenant, customer, meter, hour, revision,
                        "event", delta)]
    # No negative usage (Stripe): cancel every event still standing, then send the corrected
    # quantity under a new key.
    cancelled = {s.cancels for s in sent if s.action == "cancel"}
    events = [Planned(s.key + "-cancel", tenant, customer, meter, hour, revision, "cancel", -s.quantity, s.key)
              for s in sent if s.action == "event" and s.key not in cancelled]
    if abs(now) >= EPSILON:
        events.append(Planned(idempotency_key(tenant, meter, hour, revision), tenant, customer, meter, hour,
                              revision, "event", now))
    return events
