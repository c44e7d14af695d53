"""A real Apache Kafka broker for the tests: KRaft, one node acting as broker and controller,
from the jars hack/fetch-kafka.sh resolves from Maven Central, on free loopback ports in a
temporary directory. Or an existing one: ``ENTITLE_TEST_KAFKA`` (bootstrap servers)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from entitle.devenv.controlplane import free_port

ROOT = Path(__file__).resolve().parents[1]


class KafkaBroker:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc: subprocess.Popen | None = None
        self.bootstrap = os.environ.get("ENTITLE_TEST_KAFKA", "")

    def _java(self, *args: str) -> list[str]:
        return ["java", "-Xmx512m", "-XX:+UseSerialGC", "-cp", f"{self.libs}/*", *args]

    def start(self) -> KafkaBroker:
        if os.environ.get("ENTITLE_TEST_KAFKA"):
            return self
        self.libs = subprocess.run(["bash", str(ROOT / "hack/fetch-kafka.sh")], capture_output=True, text=True,
                                   check=True).stdout.strip()
        self.port, controller = free_port(), free_port()
        config = self.directory / "server.properties"
        config.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.directory / 'logs'}",
            "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0", "num.partitions=3", ""]))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
                       check=True, capture_output=True)
        self.config = config
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.resume()
        return self

    def resume(self) -> None:
        """Start (again) on the same ports and data: a broker restart."""
        log = open(self.directory / "broker.log", "ab")
        self.proc = subprocess.Popen(self._java("kafka.Kafka", str(self.config)), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kafka exited: {(self.directory / 'broker.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("kafka did not listen within 90 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def consume(self, topic: str, expected: int, timeout: float = 60) -> list:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=2000)
        messages: list = []
        deadline = time.monotonic() + timeout
        try:
            while len(messages) < expected and time.monotonic() < deadline:
                messages.extend(consumer)
        finally:
            consumer.close()
        return messages
