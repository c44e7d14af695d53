"""Local billing APIs for the push tests, each **behaving as the vendor documents** (written to
the vendor's reference, not copied from its code), so "what a push delivers" is checked against
the rules the real services keep -- including the ones that refuse. Each rule is cited where it
is enforced. ``now`` is the server's clock (a test moves it to play "a day later");
``fail_next(n)`` answers the next n requests with 503 (an outage), ``limit_next(n)`` with 429.

- **Stripe** (docs.stripe.com/api/billing/meter-event/create; .../billing/subscriptions/
  usage-based/recording-usage-api; .../usage-based/meters/configure; .../api/idempotent_requests).
- **Lago** (getlago.com/docs/api-reference/events/batch; lago-api ``Events::CreateBatchService``
  and the ``events`` unique index on the PostgreSQL store, Lago's default).
- **OpenMeter** (openmeter.io/docs ingest API): CloudEvents batches; deduplication on
  ``(source, id)`` only where it is configured (``dedupe=True``: OpenMeter Cloud; self-hosted
  OpenMeter needs ``dedupe.enabled``).
Every endpoint wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import defaultdict
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "sk_test_entitle"
DAY = 86400
# The meters an account is set up with for entitle's push (docs/metering.md): each vendor's
# own names. A test removes one to play "a meter the vendor does not have".
STRIPE_METERS = {"instance_seconds", "overage_instance_seconds", "seat_seconds", "feature_workload_seconds:sso",
                 "feature_workload_seconds:audit"}
HOUR_METERS = {"instance_hours", "overage_instance_hours", "seat_hours", "feature_workload_hours:sso",
               "feature_workload_hours:audit", "peak_instances", "peak_seats"}


class BillingServer:
    kind = ""

    def __init__(self, meters: set[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.failures_left = 0
        self.limited_left = 0
        self.now = time.time
        self.meters = set(meters) if meters is not None else set(self.default_meters)
        self.events: dict[str, dict] = {}       # what the vendor holds: key -> normalized event
        self.dropped: list[dict] = []           # accepted, then dropped (no such meter: an async error report)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._serve("GET", b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._serve("POST", self.rfile.read(length))

            def _serve(self, method, body):
                with server.lock:
                    server.requests += 1
                    if server.failures_left:
                        server.failures_left -= 1
                        return self._answer(503, {"error": {"message": "service unavailable"}})
                    if server.limited_left:
                        server.limited_left -= 1
                        return self._answer(429, {"error": {"message": "Too many requests"}}, {"Retry-After": "0"})
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        return self._answer(401, {"error": {"message": "invalid api key"}})
                status, answer = server.handle(method, self.path, self.headers, body)
                self._answer(status, answer)

            def _answer(self, status, answer, headers=None):
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    default_meters: set[str] = set()

    def fail_next(self, n: int) -> None:
        with self.lock:
            self.failures_left = n

    def limit_next(self, n: int) -> None:
        with self.lock:
            self.limited_left = n

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict]:
        raise NotImplementedError

    def totals(self) -> dict[tuple[str, str], float]:
        """(customer, meter) -> what the vendor would bill: the sum (or max for peaks) of the
        events it holds."""
        out: dict[tuple[str, str], float] = defaultdict(float)
        for event in self.events.values():
            if event.get("cancelled"):
                continue
            key = (event["customer"], event["meter"])
            if event["meter"].startswith("peak_"):
                out[key] = max(out[key], event["value"])
            else:
                out[key] += event["value"]
        return {k: round(v, 6) for k, v in out.items()}

    def hourly(self, customer: str, meter: str) -> dict[int, float]:
        out: dict[int, float] = defaultdict(float)
        for event in self.events.values():
            if event["customer"] == customer and event["meter"] == meter and not event.get("cancelled"):
                out[event["hour"]] += event["value"]
        return {h: round(v, 6) for h, v in out.items()}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _stripe_error(message: str, code: str | None = None, status: int = 400) -> tuple[int, dict]:
    return status, {"error": {"type": "invalid_request_error", "message": message, **({"code": code} if code else {})}}


class StripeServer(BillingServer):
    kind = "stripe"
    default_meters = STRIPE_METERS

    def __init__(self, meters: set[str] | None = None) -> None:
        super().__init__(meters)
        self.identifiers: dict[str, float] = {}                  # identifier -> when first received
        self.idempotent: dict[str, tuple[float, str, tuple]] = {}  # Idempotency-Key -> (when, params, answer)
        self.busy: set[tuple[str, str]] = set()
        self.overlapping = 0

    def handle(self, method, path, headers, body):
        if method == "GET" and path.startswith("/v1/billing/meters"):
            # docs.stripe.com/api/billing/meter/list: the account's meters, with their event_name.
            return 200, {"object": "list", "has_more": False, "url": "/v1/billing/meters",
                         "data": [{"object": "billing.meter", "event_name": m, "status": "active"}
                                  for m in sorted(self.meters)]}
        if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return _stripe_error("Stripe takes form-encoded parameters")
        form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        key = headers.get("Idempotency-Key")
        now = self.now()
        if key:
            # docs.stripe.com/api/idempotent_requests: the first answer to a key is saved (a refusal
            # included) and replayed for 24 h; the same key with other parameters is an error.
            with self.lock:
                saved = self.idempotent.get(key)
            if saved is not None and now - saved[0] < DAY:
                if saved[1] != body.decode():
                    return _stripe_error("Keys for idempotent requests can only be used with the same parameters "
                                         "they were first used with.", "idempotency_error")
                return saved[2]
        answer = self._meter_event(form, now) if path == "/v1/billing/meter_events" else \
            self._adjustment(form, now) if path == "/v1/billing/meter_event_adjustments" else \
            (404, {"error": {"message": f"Unrecognized request URL (POST: {path})"}})
        if key and answer[0] < 500:
            with self.lock:
                self.idempotent[key] = (now, body.decode(), answer)
        return answer

    def _meter_event(self, form: dict, now: float) -> tuple[int, dict]:
        for required in ("event_name", "payload[stripe_customer_id]", "payload[value]"):
            if not form.get(required):
                return _stripe_error(f"Missing required param: {required}.")
        if len(form["event_name"]) > 100 or len(form.get("identifier", "")) > 100:
            return _stripe_error("event_name and identifier are at most 100 characters")
        # recording-usage-api: "The numerical usage value in the payload only accepts whole number
        # values" (negative ones too: meters/configure, "recording negative quantities").
        try:
            value = int(form["payload[value]"])
        except ValueError:
            return _stripe_error("The value in the event payload must be a whole number")
        try:
            timestamp = int(form.get("timestamp") or now)
        except ValueError:
            return _stripe_error("timestamp must be an integer")
        # "within the past 35 calendar days and isn't more than 5 minutes in the future".
        if timestamp < now - 35 * DAY or timestamp > now + 300:
            return _stripe_error("Timestamp must be within the past 35 calendar days and no more than 5 minutes "
                                 "in the future")
        identifier = form.get("identifier") or f"auto-{len(self.events)}"
        customer, meter = form["payload[stripe_customer_id]"], form["event_name"]
        # Rate limits: "one concurrent call per customer per meter".
        with self.lock:
            if (customer, meter) in self.busy:
                self.overlapping += 1
                return _stripe_error("Too many concurrent requests for this customer and meter", "rate_limit", 429)
            self.busy.add((customer, meter))
        try:
            time.sleep(0.001)       # long enough for an overlapping request to be seen
            with self.lock:
                # meter-event/create: identifiers unique "within a rolling period of at least 24 hours".
                first = self.identifiers.get(identifier)
                if first is not None and now - first < DAY:
                    return _stripe_error(f"An event with identifier {identifier} already exists.",
                                         "resource_already_exists")
                self.identifiers[identifier] = now
                event = {"customer": customer, "meter": meter, "value": value, "hour": timestamp, "received": now}
                if meter not in self.meters:
                    # Accepted, then dropped: Stripe validates meters asynchronously (a
                    # v1.billing.meter.error_report_triggered event), the usage is never billed.
                    self.dropped.append(event)
                else:
                    self.events[f"{identifier}@{now}"] = event
        finally:
            with self.lock:
                self.busy.discard((customer, meter))
        return 200, {"object": "billing.meter_event", "identifier": identifier, "event_name": meter,
                     "timestamp": timestamp, "payload": {"value": form["payload[value]"]}}

    def _adjustment(self, form: dict, now: float) -> tuple[int, dict]:
        if form.get("type") != "cancel" or not form.get("cancel[identifier]") or not form.get("event_name"):
            return _stripe_error("an adjustment needs event_name, type=cancel and cancel[identifier]")
        identifier = form["cancel[identifier]"]
        with self.lock:
            found = [e for k, e in self.events.items() if k.split("@")[0] == identifier and e["meter"] == form["event_name"]]
            if not found:
                return _stripe_error(f"No meter event with identifier {identifier}")
            # meters/configure: "You can only cancel events sent to Stripe within the last 24 hours."
            if now - found[-1]["received"] > DAY:
                return _stripe_error("Meter events can only be cancelled within 24 hours of being received")
            found[-1]["cancelled"] = True
        return 200, {"object": "billing.meter_event_adjustment", "status": "pending", "type": "cancel"}


class LagoServer(BillingServer):
    kind = "lago"
    default_meters = HOUR_METERS

    def handle(self, method, path, headers, body):
        if method == "GET" and path.startswith("/api/v1/billable_metrics"):
            # api-reference/billable-metrics/get-all: the organization's metrics, by code.
            return 200, {"billable_metrics": [{"code": m, "aggregation_type": "sum_agg"} for m in sorted(self.meters)],
                         "meta": {"current_page": 1, "next_page": None, "total_pages": 1}}
        if path != "/api/v1/events/batch":
            return 404, {"status": 404, "error": "Not Found"}
        if not headers.get("Content-Type", "").startswith("application/json"):
            return 400, {"status": 400, "error": "BadRequest: JSON body expected"}
        try:
            events = json.loads(body)["events"]
            assert isinstance(events, list)
        except (ValueError, KeyError, AssertionError, TypeError):
            return 400, {"status": 400, "error": "BadRequest: events is required"}
        if not events:
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                         "error_details": {"events": ["no_events"]}}
        if len(events) > 100:     # LAGO_EVENTS_BATCH_MAX_LENGTH, 100 by default
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                         "error_details": {"events": ["too_many_events"]}}
        errors: dict[str, dict] = {}
        for index, event in enumerate(events):
            missing = [f for f in ("transaction_id", "code") if event.get(f) in (None, "")]
            if missing:
                errors[str(index)] = {f: ["value_is_mandatory"] for f in missing}
            elif not isinstance((event.get("properties") or {}).get("value"), (int, float)):
                errors[str(index)] = {"properties": ["value_is_not_valid_number"]}
        if errors:
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                         "error_details": errors}
        with self.lock:
            # The PostgreSQL store saves a batch in one transaction under the unique index
            # (organization_id, external_subscription_id, transaction_id): a transaction_id it
            # already has (or one repeated in the batch) refuses the whole batch, per index.
            seen: set[str] = set()
            for index, event in enumerate(events):
                key = f"{event.get('external_subscription_id')}|{event['transaction_id']}"
                if key in self.events or key in seen:
                    errors[str(index)] = {"transaction_id": ["value_already_exist"]}
                seen.add(key)
            if errors:
                return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                             "error_details": errors}
            for event in events:
                key = f"{event.get('external_subscription_id')}|{event['transaction_id']}"
                normalized = {"customer": event.get("external_subscription_id"), "meter": event["code"],
                              "value": float(event["properties"]["value"]), "hour": int(float(event["timestamp"]))}
                if event["code"] in self.meters:
                    self.events[key] = normalized
                else:
                    # Stored, never billed: no billable metric has that code.
                    self.dropped.append(normalized)
                    self.events[key] = {**normalized, "cancelled": True}
        return 200, {"events": [{"transaction_id": e["transaction_id"], "code": e["code"]} for e in events]}


class OpenMeterServer(BillingServer):
    kind = "openmeter"
    default_meters = HOUR_METERS

    def __init__(self, meters: set[str] | None = None, dedupe: bool = True) -> None:
        super().__init__(meters)
        self.dedupe = dedupe
        self.received = 0

    def handle(self, method, path, headers, body):
        if method == "GET" and path.startswith("/api/v1/events"):
            # List ingested events (filtered by id): what a client asks before resending.
            wanted = urllib.parse.parse_qs(urllib.parse.urlparse(path).query).get("id", [None])[0]
            with self.lock:
                items = [{"event": {"id": k.split("|")[1]}} for k in self.events if k.split("|")[1] == wanted]
            return 200, items
        if method == "GET" and path.startswith("/api/v1/meters"):
            # The meters, each aggregating one event type.
            return 200, [{"slug": m.replace(":", "_").replace("_", "-"), "eventType": f"dev.entitle.usage.{m}",
                          "aggregation": "MAX" if m.startswith("peak_") else "SUM"} for m in sorted(self.meters)]
        if path != "/api/v1/events":
            return 404, {"title": "Not Found"}
        if not headers.get("Content-Type", "").startswith("application/cloudevents-batch+json"):
            return 400, {"type": "about:blank", "title": "Bad Request", "detail": "expected a CloudEvents batch"}
        try:
            events = json.loads(body)
            assert isinstance(events, list)
        except (ValueError, AssertionError):
            return 400, {"title": "Bad Request", "detail": "not a JSON array of CloudEvents"}
        for event in events:
            if event.get("specversion") != "1.0" or not all(event.get(k) for k in ("id", "source", "type", "subject")):
                return 400, {"title": "Bad Request", "detail": "CloudEvents 1.0 with id, source, type, subject"}
            if not isinstance((event.get("data") or {}).get("value"), (int, float)):
                return 400, {"title": "Bad Request", "detail": "data.value must be a number"}
        with self.lock:
            for event in events:
                self.received += 1
                key = f"{event['source']}|{event['id']}" if self.dedupe else f"{event['source']}|{event['id']}|{self.received}"
                if key in self.events:
                    continue
                hour = int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
                meter = event["type"].rsplit(".", 1)[-1]
                normalized = {"customer": event["subject"], "meter": meter, "value": float(event["data"]["value"]),
                              "hour": hour}
                if meter not in self.meters:
                    self.dropped.append(normalized)     # ingested, metered by nothing
                    normalized = {**normalized, "cancelled": True}
                self.events[key] = normalized
        return 204, {}


SERVERS = {"stripe": StripeServer, "lago": LagoServer, "openmeter": OpenMeterServer}
