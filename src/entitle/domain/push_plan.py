"""What a push must send, given the hourly quantities now and what the destination already
acknowledged (DESIGN "Billing delivery"). Pure: no I/O.

Per (tenant, meter, hour):
- nothing sent yet: the quantity under the hour's base key (zero is not sent);
- sent, and the quantity now differs (a late record, an amendment): an **adjustment** under a
  new key -- the signed difference (every destination sums: Stripe takes negative quantities,
  "You can also fix incorrectly recorded usage data by recording negative quantities",
  docs.stripe.com/billing/subscriptions/usage-based/meters/configure; it cancels events only
  within 24 h of receipt, so a correction never relies on a cancel);
- peaks (systems that aggregate by max): the new peak when it rose; a lower one cannot lower a
  max and is reported;
- a tenant without a customer id is reported and never sent.

Keys are unique per installation, destination and customer (DESIGN "Billing delivery: what the
vendors actually accept"): two clusters, or two customers each with a tenant called ``prod``,
pushing into one vendor account never collide -- a collision would count one's usage as the
other's, already delivered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

PEAK_METERS = ("peak_instances", "peak_seats", "peak_sessions")
EPSILON = 1e-9


@dataclass(frozen=True)
class Sent:
    """An acknowledged event: ``action`` ``event`` (adds), ``max`` (a peak), or -- from pushes
    before corrections were signed deltas -- ``cancel`` (its ``quantity`` is minus the cancelled
    event's)."""

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


@dataclass(frozen=True)
class Scope:
    """Whose keys: the installation (its receipt store's id), the destination (vendor and API
    base) -- with the customer, what makes a key unique in a vendor account."""

    installation: str
    destination: str


def idempotency_key(scope: Scope, customer: str, tenant: str, meter: str, hour: int, revision: int = 0) -> str:
    """From (installation, destination, customer, tenant, meter, hour): the base key; revisions
    (adjustments) get their own. At most 53 characters (Stripe's identifier takes 100)."""
    digest = hashlib.sha256("|".join((scope.installation, scope.destination, customer, tenant, meter,
                                      str(hour))).encode()).hexdigest()[:40]
    key = f"entitle-{digest}"
    if revision:
        key += f"-r{revision}"
    return key


def total(sent: list[Sent]) -> float:
    if any(s.action == "max" for s in sent):
        return max(s.quantity for s in sent)
    return sum(s.quantity for s in sent)


def plan(hourly: dict[str, dict[int, dict[str, float]]], acked: dict[tuple[str, str, int], list[Sent]],
         customers: dict[str, str], peaks: bool, scope: Scope) -> Plan:
    """``acked``: what the destination holds (acknowledged, or dismissed by hand) per
    (tenant, meter, hour); a refused event is not there and is planned again."""
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
                out.events.extend(_one(out, scope, tenant, customer, meter, hour, now, sent, is_peak))
    return out


def _one(out: Plan, scope: Scope, tenant: str, customer: str, meter: str, hour: int, now: float,
         sent: list[Sent], is_peak: bool) -> list[Planned]:
    action = "max" if is_peak else "event"
    if not sent:
        if abs(now) < EPSILON:
            return []
        return [Planned(idempotency_key(scope, customer, tenant, meter, hour), tenant, customer, meter, hour, 0,
                        action, now)]
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
        return [Planned(idempotency_key(scope, customer, tenant, meter, hour, revision), tenant, customer, meter,
                        hour, revision, "max", now)]
    return [Planned(idempotency_key(scope, customer, tenant, meter, hour, revision), tenant, customer, meter, hour,
                    revision, "event", delta)]
