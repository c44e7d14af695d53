"""``entitle run``: the operator process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf

from entitle.adapters.admission import SharedAdmission
from entitle.adapters.holds import HoldStore
from entitle.adapters.kube import KubeApi
from entitle.adapters.lease import LeaseElector
from entitle.adapters.ledger import Ledger
from entitle.domain.state import ClusterState
from entitle.operator import config as configmod
from entitle.operator.controller import Controller
from entitle.operator.handlers import register
from entitle.operator.logs import setup_logging

log = logging.getLogger("entitle")


def webhook_certificates(cfg: configmod.OperatorConfig) -> tuple[str, str, bytes]:
    """(cert file, key file, CA PEM): configured ones, or generated for loopback development."""
    if cfg.webhook.cert_file and cfg.webhook.key_file:
        ca = Path(cfg.webhook.ca_file or cfg.webhook.cert_file).read_bytes()
        return cfg.webhook.cert_file, cfg.webhook.key_file, ca
    from entitle.devenv.certs import CertificateAuthority

    ca = CertificateAuthority("entitle-webhook-ca")
    pair = ca.issue("entitle-webhook", hosts=["127.0.0.1", "localhost"])
    directory = Path(tempfile.mkdtemp(prefix="entitle-webhook-"))
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    os.chmod(directory / "tls.key", 0o600)
    return str(directory / "tls.crt"), str(directory / "tls.key"), ca.cert_pem


async def leadership(controller: Controller, elector: LeaseElector, period: float = 2.0) -> None:
    """Hold (or wait for) the controller Lease; the leader writes status and events and runs
    the sinks. Every replica watches, records its own ledger and serves the webhook."""
    while True:
        try:
            leader = await asyncio.to_thread(elector.try_acquire_or_renew)
        except Exception as exc:  # API unreachable: step down until renewed
            log.warning("lease renewal failed: %s", exc)
            leader = False
        if leader != controller.leader:
            log.info("controller leadership %s", "acquired" if leader else "lost")
            controller.set_leader(leader)
        await asyncio.sleep(period)


def run(args: argparse.Namespace) -> int:
    setup_logging()
    cfg = configmod.load(args.config)
    api = KubeApi()
    ledger = Ledger(cfg.ledger_path)
    state = ClusterState(cfg.instance_table())
    controller = Controller(cfg, state, ledger, api)
    holds = HoldStore(api.api_client, cfg.namespace)
    controller.admission = SharedAdmission(state, holds, timedelta(seconds=cfg.reservation_seconds))
    registry = kopf.OperatorRegistry()
    register(registry, controller)
    certfile, keyfile, ca_pem = webhook_certificates(cfg)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry does not inherit Kopf's default login handlers.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.admission.managed = None  # entitle registers its own configuration (see KubeApi)
        settings.admission.server = kopf.WebhookServer(
            addr=cfg.webhook.listen_host, port=cfg.webhook.port, certfile=certfile, pkeyfile=keyfile,
            cadata=ca_pem)
        settings.persistence.finalizer = "entitle.dev/finalizer"
        await asyncio.to_thread(controller.prime)
        if cfg.webhook.register_url:
            await asyncio.to_thread(api.ensure_webhooks, cfg.webhook.register_url, ca_pem,
                                    cfg.webhook.timeout_seconds, cfg.webhook.failure_policy)
        if cfg.metrics_port:
            from prometheus_client import start_http_server
            start_http_server(cfg.metrics_port, addr="0.0.0.0")
        from entitle.adapters.pump import SinkPump
        from entitle.adapters.sinks import build_sink
        from entitle.operator.metrics import LEDGER_LAG, SINK_ERRORS

        controller.pump_factory = lambda: [SinkPump(
            ledger, build_sink(spec),
            on_error=lambda name: SINK_ERRORS.labels(sink=name).inc(),
            on_lag=lambda name, lag: LEDGER_LAG.labels(sink=name).set(lag)) for spec in cfg.sinks]
        await asyncio.to_thread(holds.ensure_namespace)
        loop = asyncio.get_running_loop()
        loop.create_task(controller.status_loop())
        loop.create_task(leadership(controller, LeaseElector(api.api_client, cfg.namespace, "entitle-controller",
                                                              f"{socket.gethostname()}-{os.getpid()}",
                                                              timedelta(seconds=cfg.lease_seconds)),
                                    period=max(0.5, cfg.lease_seconds / 5)))
        log.info("entitle operator started", extra={"webhook_port": cfg.webhook.port,
                                                    "ledger": cfg.ledger_path})

    kopf.run(registry=registry, clusterwide=True, standalone=True,
             liveness_endpoint=os.environ.get("ENTITLE_LIVENESS"))
    return 0
