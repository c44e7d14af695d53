"""The Kafka sink against a real broker (tests/kafka.py: Apache Kafka, KRaft, from Maven
Central): every ledger record arrives at least once, keyed by its id, and a broker killed
mid-stream costs nothing -- the pump backs off, the cursor never passes an unacknowledged
record, and after the broker returns the topic holds every record."""

from __future__ import annotations

import json
import threading
import time

from entitle.adapters.metering.ledger import Ledger
from entitle.adapters.metering.pump import SinkPump
from entitle.adapters.metering.sinks.factory import build_sinks
from tests.conftest import wait_for


def record(i: int) -> dict:
    return {"specversion": "1.0", "source": "entitle.dev/operator", "id": f"rec-{i}", "type": "dev.entitle.workload.v1",
            "subject": f"t{i % 3}", "time": "2026-11-01T00:00:00Z", "data": {"tenant": f"t{i % 3}", "i": i}}


def test_every_record_arrives_keyed_by_its_id_across_a_broker_kill(kafka_broker, tmp_path):
    topic = f"usage-{int(time.time() * 1000)}"
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.append([record(i) for i in range(300)])
    [sink] = build_sinks([{"type": "kafka", "bootstrapServers": kafka_broker.bootstrap, "topic": topic}])
    errors: list[str] = []
    pump = SinkPump(ledger, sink, batch=50, min_backoff=0.2, max_backoff=2, idle=0.1, on_error=errors.append).start()
    try:
        wait_for(lambda: ledger.cursor(sink.name) == ledger.last_seq(), timeout=90, message="first 300 delivered")
        kafka_broker.kill()
        ledger.append([record(i) for i in range(300, 600)])
        wait_for(lambda: errors, timeout=60, message="the pump to see the broker gone")
        stuck_at = ledger.cursor(sink.name)
        assert stuck_at == 300, "nothing acknowledged while the broker is down"
        kafka_broker.resume()
        wait_for(lambda: ledger.cursor(sink.name) == ledger.last_seq(), timeout=120, message="the rest delivered")
    finally:
        pump.stop()
        ledger.close()
    messages = kafka_broker.consume(topic, 600)
    ids = {m.key.decode() for m in messages}
    assert ids == {f"rec-{i}" for i in range(600)}, f"missing: {600 - len(ids)}"
    for message in messages:
        body = json.loads(message.value)
        assert body["id"] == message.key.decode() and dict(message.headers)["content-type"] == b"application/cloudevents+json"


def test_a_broker_down_at_start_is_a_retried_sink_error_not_a_crash(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.append([record(1)])
    [sink] = build_sinks([{"type": "kafka", "bootstrapServers": "127.0.0.1:1", "topic": "usage"}])
    errors: list[str] = []
    done = threading.Event()
    pump = SinkPump(ledger, sink, min_backoff=0.1, max_backoff=0.5, idle=0.1, on_error=lambda n: (errors.append(n), done.set()))
    pump.start()
    try:
        assert done.wait(60)
        assert ledger.cursor(sink.name) == 0
    finally:
        pump.stop()
        ledger.close()
