"""The three billing APIs, each as its documented request format and dedup rule.

- Stripe: ``POST /v1/billing/meter_events`` (form encoded, one event per request):
  ``event_name`` = meter, ``identifier`` = our key (Stripe keeps identifiers unique for at
  least 24 h), ``timestamp`` = the hour (Stripe takes the past 35 days), ``payload[value]``,
  ``payload[stripe_customer_id]``. A lower corrected quantity is a cancel adjustment
  (``POST /v1/billing/meter_event_adjustments``, ``type=cancel``, ``cancel[identifier]``)
  of what was sent and the corrected quantity under a new key.
- Lago: ``POST /api/v1/events/batch`` (JSON, up to 100 events): ``transaction_id`` = key,
  ``external_subscription_id`` = customer, ``code`` = meter, ``timestamp``,
  ``properties.value``. Corrections are signed deltas under a new key (sum aggregation).
- OpenMeter: ``POST /api/v1/events`` (``application/cloudevents-batch+json``): CloudEvents
  with ``id`` = key, ``source`` = ``entitle.dev/push``, ``type`` = ``dev.entitle.usage.<meter>``,
  ``subject`` = customer, ``data.value``; peaks too (meters aggregated by max).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

from entitle.adapters.metering.push.receipts import Receipt

PUSH_SOURCE = "entitle.dev/push"
TYPE_PREFIX = "dev.entitle.usage."


class PushRejected(Exception):
    """The destination refused the request for good (4xx): resending the same will not help."""


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
    negative_deltas = True     # a lower correction may be a negative event

    def __init__(self, base: str | None, token: str, timeout: float = 15.0, attempts: int = 3) -> None:
        self.base = (base or self.default_base).rstrip("/")
        self.token, self.timeout, self.attempts = token, timeout, attempts

    def send(self, batch: list[Receipt]) -> None:
        """Deliver the batch or raise :class:`PushRejected` / :class:`PushUnavailable`."""
        raise NotImplementedError

    def _post(self, path: str, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {self.token}", **(extra or {})}
        url = self.base + path
        delay = 0.5
        for attempt in range(self.attempts):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                payload = exc.read()
                if exc.code == 429 or exc.code >= 500:
                    problem = f"POST {url}: HTTP {exc.code} {payload[:200]!r}"
                else:
                    return exc.code, payload
            except (urllib.error.URLError, OSError) as exc:
                problem = f"POST {url}: {getattr(exc, 'reason', exc)}"
            if attempt + 1 < self.attempts:
                time.sleep(delay)
                delay *= 2
        raise PushUnavailable(problem)


class Stripe(Vendor):
    name = "stripe"
    default_base = "https://api.stripe.com"
    batch_size = 1
    negative_deltas = False

    def send(self, batch: list[Receipt]) -> None:
        for receipt in batch:
            if receipt.action == "cancel":
                form = {"event_name": receipt.meter, "type": "cancel", "cancel[identifier]": receipt.cancels or ""}
                path = "/v1/billing/meter_event_adjustments"
            else:
                form = {"event_name": receipt.meter, "identifier": receipt.key, "timestamp": str(receipt.hour),
                        "payload[value]": _number(receipt.quantity), "payload[stripe_customer_id]": receipt.customer}
                path = "/v1/billing/meter_events"
            status, payload = self._post(path, urllib.parse.urlencode(form).encode(),
                                         "application/x-www-form-urlencoded", {"Idempotency-Key": receipt.key})
            if 200 <= status < 300 or _stripe_duplicate(status, payload):
                continue
            raise PushRejected(f"stripe {path}: HTTP {status}: {_message(payload)}")


def _stripe_duplicate(status: int, payload: bytes) -> bool:
    """An identifier Stripe has already seen: that event is there, which is what we wanted."""
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

    def send(self, batch: list[Receipt]) -> None:
        events = [{"transaction_id": r.key, "external_subscription_id": r.customer, "code": r.meter,
                   "timestamp": r.hour, "properties": {"value": r.quantity}} for r in batch]
        status, payload = self._post("/api/v1/events/batch", json.dumps({"events": events}).encode(), "application/json")
        if not 200 <= status < 300:
            raise PushRejected(f"lago /api/v1/events/batch: HTTP {status}: {_message(payload)}")


class OpenMeter(Vendor):
    name = "openmeter"
    default_base = "https://openmeter.cloud"
    batch_size = 100
    peaks = True

    def send(self, batch: list[Receipt]) -> None:
        events = [{"specversion": "1.0", "id": r.key, "source": PUSH_SOURCE, "type": TYPE_PREFIX + r.meter,
                   "subject": r.customer, "time": _rfc3339(r.hour), "datacontenttype": "application/json",
                   "data": {"value": r.quantity}} for r in batch]
        status, payload = self._post("/api/v1/events", json.dumps(events).encode(), "application/cloudevents-batch+json")
        if not 200 <= status < 300:
            raise PushRejected(f"openmeter /api/v1/events: HTTP {status}: {_message(payload)}")


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
