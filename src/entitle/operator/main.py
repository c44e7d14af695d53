"""``entitle run``: the operator process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import Any

import kopf

from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.adapters.kube.async_api import AsyncApi
from entitle.adapters.kube.holds import AsyncHoldStore
from entitle.adapters.kube.client import KubeApi
from entitle.adapters.kube.lease import LeaseElector
from entitle.adapters.webhook.server import AdmissionServer
from entitle.domain.state import ClusterState
from entitle.operator import config as configmod
from entitle.operator.controller import Controller
from entitle.operator import metrics
from entitle.operator.handlers import register
from entitle.operator.logs import setup_logging
from entitle.operator.serving import ServingCertificate
from entitle.operator.webhooks import routes as webhook_routes
from entitle.operator.license_webhooks import license_routes, tenant_view_guard

log = logging.getLogger("entitle")


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
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as exc:
        log.error("entitle run: %s", exc)
        return 2
    worker = bool(getattr(args, "webhook_worker", False))
    if not cfg.webhook.client_ca_file and not worker:
        log.warning("webhook.clientCAFile is not set: any client that reaches the webhook port can send admission "
                    "reviews (a forged CREATE holds a tenant's capacity; a dry run reads its usage). Give the "
                    "apiserver a webhook client certificate (docs/operations.md, Threat model)")
    if worker:
        from entitle.operator.workers import bind_to_parent

        bind_to_parent()
    try:
        # Before anything else: a damaged ledger (LedgerDamaged) is never used as a whole one.
        ledger = cfg.open_ledger()
    except Exception as exc:   # LedgerUnavailable, LedgerDamaged, an unreadable DSN file, a bad SQLite path
        log.error("entitle run: cannot open the ledger (%s): %s", cfg.ledger_name(), exc)
        return 2
    api = KubeApi()
    try:
        pseudonym_key = cfg.privacy.key()
    except ValueError as exc:
        log.error("entitle run: %s", exc)
        return 2
    state = ClusterState(cfg.instance_table())
    state.signing_keys = cfg.public_keys()
    controller = Controller(cfg, state, ledger, api)
    # A webhook worker (operator.workers) decides only: no records, no status, never the leader.
    controller.records_enabled = not worker
    controller.pseudonym_key = pseudonym_key
    async_api = AsyncApi(api.api_client.configuration)
    controller.async_api = async_api
    hold_writer = AsyncHoldStore(async_api, cfg.namespace)
    controller.admission = SharedAdmission(state, hold_writer, timedelta(seconds=cfg.reservation_seconds),
                                           escrow=cfg.escrow, chunk=cfg.escrow_initial_chunk,
                                           max_chunk=cfg.escrow_max_chunk)
    registry = kopf.OperatorRegistry()
    register(registry, controller)
    certificate = ServingCertificate(cfg, api)
    server = AdmissionServer({**webhook_routes(controller), **license_routes(controller),
                              **tenant_view_guard(controller)},
                             cfg.webhook.listen_host, cfg.webhook.port,
                             certificate.tls, ready=controller.ready.is_set, drain_seconds=cfg.webhook.drain_seconds,
                             reuse_port=cfg.webhook.workers > 1 or worker,
                             on_refused=metrics.ADMISSION_REFUSED.inc)
    workers = None
    if cfg.webhook.workers > 1 and not worker:
        from entitle.operator.workers import Workers, worker_config

        workers = Workers(cfg.webhook.workers - 1,
                          worker_config(cfg, certificate.certfile, certificate.keyfile, certificate.directory))

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry does not inherit Kopf's default login handlers.
        return kopf.login_via_client(**kwargs)

    tasks: list[asyncio.Task] = []
    started: set[str] = set()
    ofreps: list[Any] = []
    side_servers: list[Any] = []

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Kopf retries a start-up handler that raises: every step here is idempotent, so a
        # retry (the apiserver was unreachable, say) never fails on what already succeeded.
        settings.posting.level = logging.WARNING
        settings.persistence.finalizer = "entitle.dev/finalizer"
        # Strict mode: serve the resources present at start (the chart installs the CRDs
        # first) instead of watching CRDs, which would need a cluster-wide CRD read grant.
        settings.scanning.disabled = True
        # Serve at once (requests wait for the primed state), so readiness follows listening.
        await server.start()
        if cfg.ofrep.port and not worker and not ofreps:
            from entitle.operator.ofrep import OfrepServer

            ofrep_server = OfrepServer(controller, cfg, async_api)
            await ofrep_server.start()
            ofreps.append(ofrep_server)
        if controller.own_username is None:
            controller.own_username = await asyncio.to_thread(api.whoami)
            if controller.own_username is None:
                log.warning("own username unknown (SelfSubjectReview failed): the TenantEntitlement guard allows all")
        await controller.prime_async()
        if cfg.webhook.register_url and not worker:
            await asyncio.to_thread(api.ensure_webhooks, cfg.webhook.configuration_name, cfg.webhook.register_url,
                                    certificate.ca_pem, cfg.webhook.timeout_seconds, cfg.webhook.failure_policy,
                                    cfg.webhook.license_failure_policy)
        if cfg.metrics_port and "metrics" not in started:
            from entitle.operator.metrics_server import metrics_server

            metrics_endpoint = metrics_server(cfg, async_api, certificate)
            await metrics_endpoint.start()
            side_servers.append(metrics_endpoint)
            started.add("metrics")
        from entitle.adapters.metering.pump import SinkPump
        from entitle.adapters.metering.sinks import build_sinks
        from entitle.operator.metrics import LEDGER_LAG, SINK_ERRORS

        controller.pump_factory = lambda: [SinkPump(
            ledger, sink,
            on_error=lambda name: SINK_ERRORS.labels(sink=name).inc(),
            on_lag=lambda name, lag: LEDGER_LAG.labels(sink=name).set(lag)) for sink in build_sinks(cfg.sinks)]
        if not worker:
            await asyncio.to_thread(api.ensure_namespace, cfg.namespace)
        if not tasks:
            loop = asyncio.get_running_loop()
            tasks.append(loop.create_task(controller.status_loop()))
            tasks.append(loop.create_task(certificate.keep_fresh()))
            if workers is not None:
                tasks.append(loop.create_task(workers.supervise()))
            if not worker:     # a worker never leads: status, Events and sinks stay here
                tasks.append(loop.create_task(leadership(
                    controller, LeaseElector(api.api_client, cfg.namespace, "entitle-controller",
                                             f"{socket.gethostname()}-{os.getpid()}",
                                             timedelta(seconds=cfg.lease_seconds)),
                    period=max(0.5, cfg.lease_seconds / 5))))
        log.info("entitle operator started", extra={"webhook_port": cfg.webhook.port,
                                                    "ledger": cfg.ledger_name()})

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        if workers is not None:
            await asyncio.to_thread(workers.stop)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        controller.set_leader(False)
        await controller.stop_watching_workloads()
        for side in side_servers:
            await side.stop()
        for ofrep in ofreps:
            await ofrep.stop()      # flushes the open hour's feature counts before the writer closes
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
