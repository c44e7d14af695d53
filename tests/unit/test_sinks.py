"""Sinks: at least once, in ledger order, through failures, with the cursor kept in the ledger."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from entitle.adapters.metering.ledger import Ledger
from entitle.adapters.metering.pump import SinkPump
from entitle.adapters.metering.sinks import MemorySink, build_sink
from tests.conftest import wait_for


def records(n, start=0):
    return [{"specversion": "1.0", "source": "test", "id": f"r{i}", "type": "dev.entitle.workload.v1",
             "subject": f"t{i % 3}", "time": f"2026-11-01T00:00:{i % 60:02d}Z", "data": {"i": i}}
            for i in range(start, start + n)]


def test_memory_sink_retries_and_keeps_order(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.append(records(1200))
    sink = MemorySink(fail_next=3)
    pump = SinkPump(ledger, sink, batch=500, min_backoff=0.01, max_backoff=0.05)
    pump.start()
    wait_for(lambda: len(sink.records) == 1200, message="all records delivered")
    pump.stop()
    assert [r["id"] for r in sink.records] == [f"r{i}" for i in range(1200)]
    assert sink.attempts >= 3 + 3   # three failures, then three batches
    assert ledger.cursor("memory") == ledger.last_seq()
    # A restarted pump resumes from the stored cursor: nothing is sent twice.
    ledger.append(records(10, start=1200))
    sink2 = MemorySink()
    SinkPump(ledger, sink2).pump_once()
    assert [r["id"] for r in sink2.records] == [f"r{i}" for i in range(1200, 1210)]


class _FlakyIngest(BaseHTTPRequestHandler):
    received: list = []
    calls = 0

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).calls % 3 == 0 or self.headers["Content-Type"] != "application/cloudevents-batch+json":
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.extend(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_sink_posts_cloudevents_batches_through_failures(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyIngest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ledger = Ledger(tmp_path / "l.db")
        ledger.append(records(1000))
        sink = build_sink({"type": "http", "url": f"http://127.0.0.1:{server.server_port}/api/v1/events"})
        errors = []
        pump = SinkPump(ledger, sink, batch=100, min_backoff=0.01, max_backoff=0.05, on_error=errors.append)
        pump.start()
        wait_for(lambda: len(_FlakyIngest.received) == 1000, message="all records ingested")
        pump.stop()
        assert [r["id"] for r in _FlakyIngest.received] == [f"r{i}" for i in range(1000)]
        assert errors, "the flaky server failed some requests"
        assert pump.lag() == 0
    finally:
        server.shutdown()


def test_jsonl_sink_appends_lines(tmp_path):
    sink = build_sink({"type": "jsonl", "path": str(tmp_path / "out" / "usage.jsonl")})
    sink.send(records(3))
    sink.send(records(2, start=3))
    lines = (tmp_path / "out" / "usage.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["r0", "r1", "r2", "r3", "r4"]
