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
from entitle.adapters.async_api import AsyncApi
from entitle.adapters.holds import AsyncHoldStore, HoldStore
from entitle.adapters.kube import KubeApi
from entitle.adapters.lease import LeaseElector
from entitle.adapters.webhook_server import AdmissionServer, ReloadableTLS
from entitle.adapters.ledger import Ledger
from entitle.domain.state import ClusterState
from entitle.operator import config as configmod
from entitle.operator.controller import Controller
from entitle.operator.handlers import register
from entitle.operator.logs import setup_logging
from entitle.operator.webhooks import routes as webhook_routes

log = logging.getLogger("entitle")


class ServingCertificate:
    """Where the webhook's certificate comes from, and how it is kept fresh while serving:
    ``generated`` (the operator's own, in a Secret, rotated), mounted files (cert-manager;
    re-read when they change), or — neither configured — a loopback certificate for development."""

    def __init__(self, cfg: configmod.OperatorConfig, api: KubeApi) -> None:
        self.cfg, self.directory = cfg, Path(tempfile.mkdtemp(prefix="entitle-webhook-"))
        hook = cfg.webhook
        self.keeper = None
        if hook.generated is not None:
            from entitle.adapters.webhook_certs import WebhookCertificates

            self.keeper = WebhookCertificates(api.api_client, cfg.namespace, hook.generated.secret_name,
                                              hook.generated.hosts, hook.configuration_name)
            bundle = self.keeper.ensure()
            self.certfile, self.keyfile = self._write(bundle.cert_pem, bundle.key_pem)
            self.ca_pem = bundle.ca_bundle
        elif hook.cert_file and hook.key_file:
            self.certfile, self.keyfile = hook.cert_file, hook.key_file
            self.ca_pem = Path(hook.ca_file or hook.cert_file).read_bytes()
        else:
            from entitle.adapters.certs import CertificateAuthority

            ca = CertificateAuthority("entitle-webhook-ca")
            pair = ca.issue("entitle-webhook", hosts=["127.0.0.1", "localhost"])
            self.certfile, self.keyfile = self._write(pair.cert_pem, pair.key_pem)
            self.ca_pem = ca.cert_pem
        self.tls = ReloadableTLS(self.certfile, self.keyfile)
        self._loaded = self._fingerprint()

    def _write(self, cert: bytes, key: bytes) -> tuple[str, str]:
        (self.directory / "tls.crt").write_bytes(cert)
        (self.directory / "tls.key").write_bytes(key)
        os.chmod(self.directory / "tls.key", 0o600)
        return str(self.directory / "tls.crt"), str(self.directory / "tls.key")

    def _fingerprint(self) -> bytes:
        return Path(self.certfile).read_bytes() + Path(self.keyfile).read_bytes()

    def refresh(self) -> bool:
        """Re-check the source; reload the serving context when the certificate changed."""
        if self.keeper is not None:
            bundle = self.keeper.ensure()
            if bundle.cert_pem + bundle.key_pem != self._loaded:
                self._write(bundle.cert_pem, bundle.key_pem)
        current = self._fingerprint()
        if current == self._loaded:
            return False
        self.tls.load(self.certfile, self.keyfile)
        self._loaded = current
        log.info("webhook serving certificate reloaded")
        return True

    async def keep_fresh(self) -> None:
        generated = self.cfg.webhook.generated
        period = generated.check_seconds if generated else 30.0
        while True:
            await asyncio.sleep(period)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # keep serving the current certificate; try again later
                log.warning("webhook certificate check failed: %s", exc)


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
    async_api = AsyncApi(api.api_client.configuration)
    controller.async_api = async_api
    hold_writer = AsyncHoldStore(async_api, cfg.namespace)
    controller.admission = SharedAdmission(state, hold_writer, timedelta(seconds=cfg.reservation_seconds),
                                           settle=timedelta(seconds=cfg.hold_settle_seconds))
    registry = kopf.OperatorRegistry()
    register(registry, controller)
    certificate = ServingCertificate(cfg, api)
    server = AdmissionServer(webhook_routes(controller), cfg.webhook.listen_host, cfg.webhook.port,
                             certificate.tls, ready=controller.ready.is_set)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry does not inherit Kopf's default login handlers.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.persistence.finalizer = "entitle.dev/finalizer"
        # Strict mode: serve the resources present at start (the chart installs the CRDs
        # first) instead of watching CRDs, which would need a cluster-wide CRD read grant.
        settings.scanning.disabled = True
        # Serve at once (requests wait for the primed state), so readiness follows listening.
        await server.start()
        await asyncio.to_thread(controller.prime)
        if cfg.webhook.register_url:
            await asyncio.to_thread(api.ensure_webhooks, cfg.webhook.configuration_name, cfg.webhook.register_url,
                                    certificate.ca_pem, cfg.webhook.timeout_seconds, cfg.webhook.failure_policy)
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
        loop.create_task(certificate.keep_fresh())
        loop.create_task(leadership(controller, LeaseElector(api.api_client, cfg.namespace, "entitle-controller",
                                                              f"{socket.gethostname()}-{os.getpid()}",
                                                              timedelta(seconds=cfg.lease_seconds)),
                                    period=max(0.5, cfg.lease_seconds / 5)))
        log.info("entitle operator started", extra={"webhook_port": cfg.webhook.port,
                                                    "ledger": cfg.ledger_path})

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        await server.stop()
        await async_api.close()
        await asyncio.to_thread(controller.writer.close)

    # uvloop, as Kopf's own CLI does when it is installed (kopf.run leaves the loop to us).
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        kopf.run(loop=runner.get_loop(), registry=registry, clusterwide=True, standalone=True,
                 liveness_endpoint=os.environ.get("ENTITLE_LIVENESS"))
    return 0
