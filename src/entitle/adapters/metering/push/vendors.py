"""The three billing APIs, each as its documented request format, dedup rule and refusals.

- Stripe: ``POST /v1/billing/meter_events`` (form encoded, one event per request):
  ``event_name`` = meter, ``identifier`` = our key (unique within a rolling 24 h at least),
  ``timestamp`` = the hour, ``payload[value]`` a **whole number** of seconds (the meters go
  as ``*_seconds``), ``payload[stripe_customer_id]``. Corrections are signed deltas (Stripe takes
  negative quantities). Rules from docs.stripe.com/billing/subscriptions/usage-based/
  recording-usage-api: "The numerical usage value in the payload only accepts whole number
  values"; the timestamp "within the past 35 calendar days and isn't more than 5 minutes in the
  future" (checked here before sending); "one concurrent call per customer per meter" (this
  client sends one request at a time); 429 retried "with an exponential backoff schedule" and
  "some randomness". An Idempotency-Key replays its first answer for 24 h, the refusal included:
  a refused event's retry goes under a new one (``Receipt.request_key``).
- Lago: ``POST /api/v1/events/batch`` (JSON, up to 100 events): ``transaction_id`` = key,
  ``external_subscription_id`` = customer, ``code`` = meter, ``timestamp``,
  ``properties.value``. On its default (PostgreSQL) event store a batch is one transaction: one
  ``transaction_id`` it already has refuses the whole batch with 422 and, per index,
  ``{"transaction_id": ["value_already_exist"]}`` (lago-api ``Events::CreateBatchService``).
  Those events are there already (acknowledged); the rest of the batch is sent again.
- OpenMeter: ``POST /api/v1/events`` (``application/cloudevents-batch+json``): CloudEvents
  with ``id`` = key, ``source`` = ``entitle.dev/push``, ``type`` = ``dev.entitle.usage.<meter>``,
  ``subject`` = customer, ``data.value``; peaks too (meters aggregated by max). OpenMeter
  deduplicates on ``(source, id)`` only where deduplication is configured (OpenMeter Cloud;
  self-hosted: ``dedupe.enabled``): the receipts, not the vendor, are what keeps a re-push
  from counting twice.

``send`` answers, per event key, "acked" or a refusal message; an outage (connection, 5xx,
429 after retries) raises :class:`PushUnavailable` and leaves the rest pending.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

from entitle.adapters.metering.push.receipts import Receipt

PUSH_SOURCE = "entitle.dev/push"
TYPE_PREFIX = "dev.entitle.usage."
DAY = 86400
ACKED = "acked"


class PushUnavailable(Exception):
    """The destination could not be reached or failed (5xx, 429, timeout) after retries."""


def _number(quantity: float) -> str:
    text = f"{quantity:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


class Vendor:
    name = ""
    default_base = ""
    batch_size = 100
    peaks = False              # also send peak meters (aggregated by max downstream)
    whole_seconds = False      # additive meters in whole seconds (*_seconds), not hours

    def __init__(self, base: str | None, token: str, timeout: float = 15.0, attempts: int = 5,
                 clock: Any = time.time, sleep: Any = time.sleep) -> None:
        self.base = (base or self.default_base).rstrip("/")
        self.token, self.timeout, self.attempts = token, timeout, attempts
        self.clock, self.sleep = clock, sleep

    def send(self, batch: list[Receipt]) -> dict[str, str]:
        """Deliver the batch: per key, :data:`ACKED` or the refusal's message. Raises
        :class:`PushUnavailable` on an outage."""
        raise NotImplementedError

    def known_meters(self) -> set[str] | None:
        """The meters the account has (what an event's name must match to be billed), or None
        when they cannot be listed. Every vendor here takes an event for a meter it does not
        have and bills nothing for it (Stripe reports it asynchronously, Lago and OpenMeter keep
        it unmetered): the push checks first and keeps such events refused, with what to do."""
        return None

    def already_has(self, receipts: list[Receipt]) -> set[str]:
        """Keys of these (pending) events the destination already holds, where it can be asked
        and does not deduplicate by itself; resending those would count them twice."""
        return set()

    def no_meter(self, meter: str) -> str:
        return (f"{self.name} has no meter {meter!r} (it would take the event and bill nothing): create it "
                f"(docs/metering.md, \"Meters to create\"); the next push delivers what waits for it")

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _post(self, path: str, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {self.token}", **(extra or {})}
        url = self.base + path
        delay = 0.5
        for attempt in range(self.attempts):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            wait = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                payload = exc.read()
                if exc.code == 429 or exc.code >= 500:
                    problem = f"POST {url}: HTTP {exc.code} {payload[:200]!r}"
                    wait = _retry_after(exc.headers.get("Retry-After"))
                else:
                    return exc.code, payload
            except (urllib.error.URLError, OSError) as exc:
                problem = f"POST {url}: {getattr(exc, 'reason', exc)}"
            if attempt + 1 < self.attempts:
                # Exponential backoff with full jitter (many pushes retrying in step would
                # hit the vendor's rate limit together again); Retry-After when the vendor says.
                self.sleep(wait if wait is not None else random.uniform(0, delay))
                delay = min(delay * 2, 30.0)
        raise PushUnavailable(problem)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), 60.0) if value else None
    except ValueError:
        return None


class Stripe(Vendor):
    name = "stripe"
    default_base = "https://api.stripe.com"
    batch_size = 1
    whole_seconds = True
    # "within the past 35 calendar days": an hour's timestamp older than this is refused here,
    # with what to do, instead of by Stripe (an hour of margin for clocks and slow pushes).
    window_seconds = 35 * DAY - 3600

    def send(self, batch: list[Receipt]) -> dict[str, str]:
        out: dict[str, str] = {}
        for receipt in batch:
            if receipt.action == "cancel":   # (a receipt of a push before signed deltas: never planned now)
                out[receipt.key] = ACKED
                continue
            too_old = self._too_old(receipt)
            if too_old:
                out[receipt.key] = too_old
                continue
            value = receipt.quantity
            if value != int(value):
                raise ValueError(f"{receipt.meter}: Stripe takes whole numbers, not {value!r}")
            form = {"event_name": receipt.meter, "identifier": receipt.key, "timestamp": str(receipt.hour),
                    "payload[value]": str(int(value)), "payload[stripe_customer_id]": receipt.customer}
            path = "/v1/billing/meter_events"
            status, payload = self._post(path, urllib.parse.urlencode(form).encode(),
                                         "application/x-www-form-urlencoded", {"Idempotency-Key": receipt.request_key})
            if 200 <= status < 300 or _stripe_duplicate(status, payload):
                out[receipt.key] = ACKED
            else:
                out[receipt.key] = f"stripe {path}: HTTP {status}: {_message(payload)}"
        return out

    def known_meters(self) -> set[str] | None:
        # docs.stripe.com/api/billing/meter/list (paged by starting_after).
        names: set[str] = set()
        after = ""
        for _ in range(100):
            page = self._get(f"/v1/billing/meters?status=active&limit=100{after}")
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                return None
            names |= {m.get("event_name") for m in page["data"] if isinstance(m, dict) and m.get("event_name")}
            if not page.get("has_more") or not page["data"]:
                return names
            after = f"&starting_after={urllib.parse.quote(str(page['data'][-1].get('id', '')))}"
        return names

    def _too_old(self, receipt: Receipt) -> str | None:
        age = self.clock() - receipt.hour
        if age <= self.window_seconds:
            return None
        return (f"Stripe takes meter events from the past 35 days only and this hour is {age / DAY:.0f} days old "
                f"(not sent): enter {receipt.meter} {int(receipt.quantity):+d} for {receipt.customer} in Stripe by "
                f"hand (a credit or an invoice item), then `entitle usage dismiss --key {receipt.key}`")


def _stripe_duplicate(status: int, payload: bytes) -> bool:
    """An identifier Stripe already has: that event is there, which is what we wanted (keys
    are unique per installation, destination and customer: it can only be ours)."""
    if status != 400:
        return False
    try:
        error = json.loads(payload).get("error") or {}
    except (ValueError, AttributeError):
        return False
    return error.get("code") == "resource_already_exists" or "already exists" in str(error.get("message", ""))


class Lago(Vendor):
    name = "lago"
    default_base = "https://api.getlago.com"
    batch_size = 100

    def known_meters(self) -> set[str] | None:
        # getlago.com/docs/api-reference/billable-metrics/get-all (paged).
        codes: set[str] = set()
        for number in range(1, 101):
            page = self._get(f"/api/v1/billable_metrics?per_page=100&page={number}")
            if not isinstance(page, dict) or not isinstance(page.get("billable_metrics"), list):
                return None
            codes |= {m.get("code") for m in page["billable_metrics"] if isinstance(m, dict) and m.get("code")}
            if not (page.get("meta") or {}).get("next_page"):
                return codes
        return codes

    def send(self, batch: list[Receipt]) -> dict[str, str]:
        out: dict[str, str] = {}
        remaining = list(batch)
        # Each round either settles an event (acked or refused) or ends: at most len(batch) rounds.
        for _ in range(len(batch) + 1):
            if not remaining:
                break
            events = [{"transaction_id": r.key, "external_subscription_id": r.customer, "code": r.meter,
                       "timestamp": r.hour, "properties": {"value": r.quantity}} for r in remaining]
            status, payload = self._post("/api/v1/events/batch", json.dumps({"events": events}).encode(),
                                         "application/json")
            if 200 <= status < 300:
                out.update({r.key: ACKED for r in remaining})
                break
            per_event = _lago_errors(status, payload, len(remaining))
            if not per_event:
                message = f"lago /api/v1/events/batch: HTTP {status}: {_message(payload)}"
                out.update({r.key: message for r in remaining})
                break
            for index, errors in per_event.items():
                receipt = remaining[index]
                if errors == {"transaction_id": ["value_already_exist"]}:
                    out[receipt.key] = ACKED        # Lago has it: an earlier push's, not acknowledged then
                else:
                    out[receipt.key] = f"lago /api/v1/events/batch: HTTP {status}: {json.dumps(errors)[:300]}"
            # The batch was rolled back whole: the events without an error go again.
            remaining = [r for i, r in enumerate(remaining) if i not in per_event]
        return out


def _lago_errors(status: int, payload: bytes, size: int) -> dict[int, dict]:
    """Lago's per-event validation errors (422 ``error_details`` keyed by the event's index)."""
    if status != 422:
        return {}
    try:
        details = json.loads(payload).get("error_details") or {}
    except (ValueError, AttributeError):
        return {}
    out = {}
    for key, errors in details.items() if isinstance(details, dict) else ():
        if str(key).isdigit() and int(key) < size and isinstance(errors, dict):
            out[int(key)] = errors
    return out


class OpenMeter(Vendor):
    name = "openmeter"
    default_base = "https://openmeter.cloud"
    batch_size = 100
    peaks = True

    def known_meters(self) -> set[str] | None:
        # The meters and the event type each aggregates (GET /api/v1/meters).
        meters = self._get("/api/v1/meters")
        if isinstance(meters, dict):
            meters = meters.get("items")
        if not isinstance(meters, list):
            return None
        return {m["eventType"][len(TYPE_PREFIX):] for m in meters if isinstance(m, dict)
                and str(m.get("eventType", "")).startswith(TYPE_PREFIX)}

    def already_has(self, receipts: list[Receipt]) -> set[str]:
        # Self-hosted OpenMeter deduplicates only with dedupe configured: before a killed push's
        # pending events go again, ask which ones it ingested (GET /api/v1/events?id=...).
        held = set()
        for receipt in receipts:
            found = self._get(f"/api/v1/events?id={urllib.parse.quote(receipt.key)}&limit=1")
            items = found.get("items") if isinstance(found, dict) else found
            if isinstance(items, list) and any(isinstance(e, dict) and (e.get("event") or e).get("id") == receipt.key
                                               for e in items):
                held.add(receipt.key)
        return held

    def send(self, batch: list[Receipt]) -> dict[str, str]:
        events = [{"specversion": "1.0", "id": r.key, "source": PUSH_SOURCE, "type": TYPE_PREFIX + r.meter,
                   "subject": r.customer, "time": _rfc3339(r.hour), "datacontenttype": "application/json",
                   "data": {"value": r.quantity}} for r in batch]
        status, payload = self._post("/api/v1/events", json.dumps(events).encode(), "application/cloudevents-batch+json")
        if 200 <= status < 300:
            return {r.key: ACKED for r in batch}
        if len(batch) > 1:
            # OpenMeter refuses a batch whole and says not which event: halve it until the
            # refused ones stand alone, so one bad event never holds back the others.
            middle = len(batch) // 2
            return {**self.send(batch[:middle]), **self.send(batch[middle:])}
        return {batch[0].key: f"openmeter /api/v1/events: HTTP {status}: {_message(payload)}"}


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(payload: bytes) -> str:
    try:
        body: Any = json.loads(payload)
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                return str(error.get("message") or error)[:300]
            return str(body.get("detail") or body.get("error_details") or body.get("message") or body)[:300]
    except ValueError:
        pass
    return payload[:300].decode(errors="replace")


VENDORS: dict[str, type[Vendor]] = {"stripe": Stripe, "lago": Lago, "openmeter": OpenMeter}
