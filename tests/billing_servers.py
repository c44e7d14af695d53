"""Local billing APIs for the push tests, each **written to the vendor's API reference** (not
the vendor's code): the documented request format is enforced (a malformed request is a 400,
as the real API answers) and the documented dedup rule applied, so "pushing twice changes no
downstream total" is checked against the rule itself.

- Stripe (https://docs.stripe.com/api/billing/meter-event/create and
  .../meter-event-adjustment/create): form encoded; ``event_name``, ``payload`` with the
  customer mapping key (``stripe_customer_id``) and the value key (``value``, a number), an
  ``identifier`` unique per event (a repeat is refused with ``resource_already_exists``),
  ``timestamp``; cancel adjustments by ``cancel[identifier]``.
- Lago (https://getlago.com/docs/api-reference/events/batch): JSON ``{"events": [...]}``,
  at most 100, each with ``transaction_id``, ``external_subscription_id``, ``code``,
  ``timestamp``, ``properties``; an event whose ``transaction_id`` was already received for
  the subscription is ignored.
- OpenMeter (https://openmeter.io/docs/api ingest): ``application/cloudevents-batch+json``;
  CloudEvents 1.0 with ``id``, ``source``, ``type``, ``subject``; deduplicated on
  ``(source, id)``.
Every endpoint wants ``Authorization: Bearer <token>``. ``fail_next(n)`` answers the next n
requests with 503 (an outage).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "sk_test_entitle"


class BillingServer:
    kind = ""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.failures_left = 0
        self.events: dict[str, dict] = {}       # dedup key -> accepted event (normalized)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server.lock:
                    server.requests += 1
                    if server.failures_left:
                        server.failures_left -= 1
                        return self._answer(503, {"error": {"message": "service unavailable"}})
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        return self._answer(401, {"error": {"message": "invalid api key"}})
                    status, answer = server.handle(self.path, self.headers.get("Content-Type", ""), body)
                self._answer(status, answer)

            def _answer(self, status, answer):
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, n: int) -> None:
        with self.lock:
            self.failures_left = n

    def handle(self, path: str, content_type: str, body: bytes) -> tuple[int, dict]:
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


def _bad(message: str) -> tuple[int, dict]:
    return 400, {"error": {"type": "invalid_request_error", "message": message}}


class StripeServer(BillingServer):
    kind = "stripe"

    def handle(self, path, content_type, body):
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return _bad("Stripe takes form-encoded parameters")
        form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        if path == "/v1/billing/meter_events":
            for required in ("event_name", "payload[stripe_customer_id]", "payload[value]"):
                if not form.get(required):
                    return _bad(f"Missing required param: {required}.")
            if len(form["event_name"]) > 100 or len(form.get("identifier", "")) > 100:
                return _bad("event_name and identifier are at most 100 characters")
            try:
                value = float(form["payload[value]"])
                timestamp = int(form.get("timestamp", "0"))
            except ValueError:
                return _bad("payload[value] must be a number and timestamp an integer")
            if value < 0:
                return _bad("payload[value] must not be negative")
            identifier = form.get("identifier") or f"auto-{len(self.events)}"
            if identifier in self.events:
                return 400, {"error": {"type": "invalid_request_error", "code": "resource_already_exists",
                                       "message": f"An event with identifier {identifier} already exists."}}
            self.events[identifier] = {"customer": form["payload[stripe_customer_id]"], "meter": form["event_name"],
                                       "value": value, "hour": timestamp}
            return 200, {"object": "billing.meter_event", "identifier": identifier, "event_name": form["event_name"],
                         "timestamp": timestamp, "payload": {"value": form["payload[value]"]}}
        if path == "/v1/billing/meter_event_adjustments":
            if form.get("type") != "cancel" or not form.get("cancel[identifier]") or not form.get("event_name"):
                return _bad("an adjustment needs event_name, type=cancel and cancel[identifier]")
            event = self.events.get(form["cancel[identifier]"])
            if event is None or event["meter"] != form["event_name"]:
                return _bad(f"No meter event with identifier {form['cancel[identifier]']}")
            event["cancelled"] = True
            return 200, {"object": "billing.meter_event_adjustment", "status": "pending", "type": "cancel"}
        return 404, {"error": {"message": f"Unrecognized request URL (POST: {path})"}}


class LagoServer(BillingServer):
    kind = "lago"

    def handle(self, path, content_type, body):
        if path != "/api/v1/events/batch":
            return 404, {"status": 404, "error": "Not Found"}
        if not content_type.startswith("application/json"):
            return 400, {"status": 400, "error": "BadRequest: JSON body expected"}
        try:
            events = json.loads(body)["events"]
            assert isinstance(events, list)
        except (ValueError, KeyError, AssertionError, TypeError):
            return 400, {"status": 400, "error": "BadRequest: events is required"}
        if len(events) > 100:
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "too_many_events"}
        for event in events:
            for required in ("transaction_id", "external_subscription_id", "code", "timestamp", "properties"):
                if event.get(required) in (None, ""):
                    return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                                 "error_details": {required: ["value_is_mandatory"]}}
            if not isinstance(event["properties"].get("value"), (int, float)):
                return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                             "error_details": {"properties": ["value_is_invalid"]}}
        for event in events:
            key = f"{event['external_subscription_id']}|{event['transaction_id']}"
            if key not in self.events:     # a transaction_id already received is ignored
                self.events[key] = {"customer": event["external_subscription_id"], "meter": event["code"],
                                    "value": float(event["properties"]["value"]), "hour": int(event["timestamp"])}
        return 200, {"events": [{"transaction_id": e["transaction_id"], "code": e["code"]} for e in events]}


class OpenMeterServer(BillingServer):
    kind = "openmeter"

    def handle(self, path, content_type, body):
        if path != "/api/v1/events":
            return 404, {"title": "Not Found"}
        if not content_type.startswith("application/cloudevents-batch+json"):
            return 400, {"type": "about:blank", "title": "Bad Request", "detail": "expected a CloudEvents batch"}
        try:
            events = json.loads(body)
            assert isinstance(events, list)
        except (ValueError, AssertionError):
            return 400, {"title": "Bad Request", "detail": "not a JSON array of CloudEvents"}
        from datetime import datetime

        for event in events:
            if event.get("specversion") != "1.0" or not all(event.get(k) for k in ("id", "source", "type", "subject")):
                return 400, {"title": "Bad Request", "detail": "CloudEvents 1.0 with id, source, type, subject"}
            if not isinstance((event.get("data") or {}).get("value"), (int, float)):
                return 400, {"title": "Bad Request", "detail": "data.value must be a number"}
        for event in events:
            key = f"{event['source']}|{event['id']}"
            if key not in self.events:
                hour = int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
                self.events[key] = {"customer": event["subject"], "meter": event["type"].rsplit(".", 1)[-1],
                                    "value": float(event["data"]["value"]), "hour": hour}
        return 204, {}


SERVERS = {"stripe": StripeServer, "lago": LagoServer, "openmeter": OpenMeterServer}
