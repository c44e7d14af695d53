"""Fixtures shared by the end-to-end tests: two operator replicas behind a round-robin proxy."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from entitle.adapters.pki import CertificateAuthority
from tests.conftest import Operator, free_port


async def pipe(reader, writer) -> None:
    """Copy one direction of a proxied TCP connection until either side closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, server) -> None:
    """Stop a proxy's event loop thread cleanly: its server closed and every connection's task
    cancelled while the loop still runs (no coroutine is left to be finalized on a closed loop)."""
    async def shutdown() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


class RoundRobinProxy:
    """TLS passes through untouched; each connection goes to the next live backend."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.port = free_port()
        self._cycle = itertools.cycle(range(len(ports)))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, client_reader, client_writer):
        for _ in range(len(self.ports)):
            port = self.ports[next(self._cycle)]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    def start(self) -> RoundRobinProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", self.port),
                                                       self.loop).result(10)
        return self

    def stop(self) -> None:
        stop_loop(self.loop, self.thread, self.server)


@pytest.fixture
def replicas(cluster, tmp_path):
    ca = CertificateAuthority("entitle-test-ca")
    pair = ca.issue("entitle-webhook", hosts=["127.0.0.1"])
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    ports = [free_port(), free_port()]
    proxy = RoundRobinProxy(ports).start()
    ops = []
    for i, port in enumerate(ports):
        (tmp_path / f"r{i}").mkdir()
        ops.append(Operator(cluster, tmp_path / f"r{i}", port=port, webhook={
            "port": port, "certFile": str(tmp_path / "tls.crt"), "keyFile": str(tmp_path / "tls.key"),
            "caFile": str(tmp_path / "ca.crt"), "registerURL": f"https://127.0.0.1:{proxy.port}"}).start())
    yield ops
    for op in ops:
        op.stop()
    proxy.stop()
    cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "entitle",
                    "--ignore-not-found", check=False)


