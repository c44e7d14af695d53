"""``entitle run``: the operator process -- built (:func:`build`: every part, nothing running),
then started (:class:`OperatorProcess`: Kopf's start-up and clean-up, the loops, the servers)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kopf

from entitle.adapters.kube.async_api import AsyncApi
from entitle.adapters.kube.client import KubeApi
from entitle.adapters.kube.holds import AsyncHoldStore
from entitle.adapters.kube.lease import LeaseElector
from entitle.adapters.webhook.server import AdmissionServer
from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.domain.state import ClusterState
from entitle.operator import config as configmod
from entitle.operator import metrics
from entitle.operator.controller import Controller
from entitle.operator.handlers import register
from entitle.operator.leadership import leadership
from entitle.operator.license_webhooks import OwnIdentity, license_routes, tenant_view_guard
from entitle.operator.logs import setup_logging
from entitle.operator.serving import ServingCertificate
from entitle.operator.webhooks import WorkloadWebhooks

log = logging.getLogger("entitle")


class BuildFailed(Exception):
    """The operator cannot start with this configuration or ledger (logged; exit 2)."""


@dataclass
class Operator:
    """Every part of the operator process, built and not yet running."""

    cfg: configmod.OperatorConfig
    worker: bool
    api: KubeApi
    async_api: AsyncApi
    controller: Controller
    admission: SharedAdmission
    certificate: ServingCertificate
    server: AdmissionServer
    identity: OwnIdentity
    workers: Any = None
    fleet: Any = None          # operator.fleet.FleetMember in member mode (docs/fleet.md)
    hub_api: Any = None


def _open_ledger(cfg: configmod.OperatorConfig) -> Any:
    try:
        # Before anything else: a damaged ledger (LedgerDamaged) is never used as a whole one.
        return cfg.open_ledger()
    except Exception as exc:   # LedgerUnavailable, LedgerDamaged, an unreadable DSN file, a bad SQLite path
        raise BuildFailed(f"cannot open the ledger ({cfg.ledger_name()}): {exc}") from None


def build(cfg: configmod.OperatorConfig, worker: bool) -> Operator:
    """Build the operator's parts (nothing runs yet); :class:`BuildFailed` when it cannot."""
    ledger = _open_ledger(cfg)
    api = KubeApi()
    try:
        pseudonym_key = cfg.privacy.key()
    except ValueError as exc:
        raise BuildFailed(str(exc)) from None
    state = ClusterState(cfg.instance_table())
    state.signing_keys = cfg.public_keys()
    async_api = AsyncApi(api.api_client.configuration)
    controller = Controller(cfg, state, ledger, api, async_api, records_enabled=not worker,
                            pseudonym_key=pseudonym_key)
    admission = SharedAdmission(state, AsyncHoldStore(async_api, cfg.namespace),
                                timedelta(seconds=cfg.reservation_seconds), escrow=cfg.escrow,
                                chunk=cfg.escrow_initial_chunk, max_chunk=cfg.escrow_max_chunk,
                                lease_seconds=cfg.escrow_lease_seconds,
                                webhook_timeout_seconds=cfg.webhook.timeout_seconds)
    certificate = ServingCertificate(cfg, api)
    identity = OwnIdentity()
    fleet, hub_api = _fleet_member(cfg, state, controller.clock, controller.marks.tenant, async_api)
    if fleet is not None:
        controller.meter.cluster = cfg.fleet.cluster
        controller.tenant_views.fleet_view = fleet.view
    webhooks = WorkloadWebhooks(admission, controller.catalog, controller.sourced.owners, controller.events,
                                controller.ready, controller.clock, fleet=fleet)
    server = AdmissionServer({**webhooks.routes(), **license_routes(state, controller.ready, controller.clock),
                              **tenant_view_guard(identity)},
                             cfg.webhook.listen_host, cfg.webhook.port,
                             certificate.tls, ready=controller.ready.is_set, drain_seconds=cfg.webhook.drain_seconds,
                             reuse_port=cfg.webhook.workers > 1 or worker,
                             on_refused=metrics.ADMISSION_REFUSED.inc)
    workers = None
    if cfg.webhook.workers > 1 and not worker:
        from entitle.operator.workers import Workers, worker_config

        workers = Workers(cfg.webhook.workers - 1,
                          worker_config(cfg, certificate.certfile, certificate.keyfile, certificate.directory))
    return Operator(cfg, worker, api, async_api, controller, admission, certificate, server, identity, workers,
                    fleet, hub_api)


def _fleet_member(cfg: configmod.OperatorConfig, state: ClusterState, clock: Any,
                  on_change: Any, async_api: Any) -> tuple[Any, Any]:
    """Member mode: a client of the hub's apiserver and this member's lease keeper, or (None, None)."""
    if not cfg.fleet.hub_kubeconfig:
        return None, None
    from kubernetes import client, config

    from entitle.adapters.kube.fleet_cache import FleetCache
    from entitle.adapters.kube.fleet_leases import HubLeaseStore
    from entitle.operator.fleet import FleetMember

    hub = client.Configuration()
    try:
        config.load_kube_config(config_file=cfg.fleet.hub_kubeconfig, client_configuration=hub)
    except Exception as exc:  # noqa: BLE001 -- a missing or broken file: say which, exit 2
        raise BuildFailed(f"fleet.hubKubeconfig {cfg.fleet.hub_kubeconfig}: {exc}") from None
    hub_api = AsyncApi(hub)
    return FleetMember(state, HubLeaseStore(hub_api, cfg.fleet.hub_namespace), cfg.fleet, clock,
                       on_change=on_change, cache=FleetCache.in_cluster(async_api, cfg.namespace)), hub_api


@dataclass
class OperatorProcess:
    """Kopf's start-up and clean-up of a built :class:`Operator`. Every start-up step is
    idempotent: Kopf retries a start-up handler that raises (the apiserver was unreachable,
    say), and a retry never fails on what already succeeded."""

    op: Operator
    tasks: list[asyncio.Task] = field(default_factory=list)
    side_servers: list[Any] = field(default_factory=list)
    ofreps: list[Any] = field(default_factory=list)
    fleet_informers: list[Any] = field(default_factory=list)
    fleet_tasks: list[asyncio.Task] = field(default_factory=list)

    async def startup(self, settings: kopf.OperatorSettings) -> None:
        op, cfg, controller = self.op, self.op.cfg, self.op.controller
        settings.posting.level = logging.WARNING
        settings.persistence.finalizer = "entitle.dev/finalizer"
        # Strict mode: serve the resources present at start (the chart installs the CRDs
        # first) instead of watching CRDs, which would need a cluster-wide CRD read grant.
        settings.scanning.disabled = True
        # Serve at once (requests wait for the primed state), so readiness follows listening.
        await op.server.start()
        await self._start_ofrep()
        await self._start_fleet()
        if op.identity.username is None:
            op.identity.username = await asyncio.to_thread(op.api.whoami)
            if op.identity.username is None:
                log.warning("own username unknown (SelfSubjectReview failed): the TenantEntitlement guard allows all")
        await controller.prime_async()
        if cfg.webhook.register_url and not op.worker:
            await asyncio.to_thread(op.api.ensure_webhooks, cfg.webhook.configuration_name, cfg.webhook.register_url,
                                    op.certificate.ca_pem, cfg.webhook.timeout_seconds, cfg.webhook.failure_policy,
                                    cfg.webhook.license_failure_policy, cfg.webhook.usage_finalizer)
        await self._start_metrics()
        self._set_sinks()
        if not op.worker:
            await asyncio.to_thread(op.api.ensure_namespace, cfg.namespace)
        if not self.tasks:
            self._start_loops()
        log.info("entitle operator started", extra={"webhook_port": cfg.webhook.port, "ledger": cfg.ledger_name()})

    async def _start_ofrep(self) -> None:
        op = self.op
        if op.cfg.ofrep.port and not op.worker and not self.ofreps:
            from entitle.operator.ofrep import OfrepServer

            ledger = op.controller.ledger
            ofrep = OfrepServer(op.controller.state, op.controller.meter.append, op.controller.ready,
                                op.controller.clock, op.cfg, op.async_api,
                                ledger_sessions=lambda: ledger.iter_live("session"))
            await ofrep.start()
            self.ofreps.append(ofrep)

    async def _start_fleet(self) -> None:
        """Member mode: fleet Licenses and lease books watched in the hub, the lease loop started.
        The first listing of fleet Licenses is waited for (bounded): deciding without them would
        deny a fleet tenant everything."""
        op = self.op
        if op.fleet is None or self.fleet_informers:
            return
        from entitle.adapters.kube.fleet_leases import LABEL as LEASE_LABEL
        from entitle.adapters.kube.informer import Informer
        from entitle.api import GROUP, VERSION

        member, ns = op.fleet, op.cfg.fleet.hub_namespace
        # What this member last read from the hub, first: restarted during a hub outage, it still
        # knows its fleet tenants and admits within its floors (adapters/kube/fleet_cache).
        restored = 0
        try:
            restored = member.restore(await member.cache.load()) if member.cache is not None else 0
        except Exception as exc:  # noqa: BLE001 -- unreadable or unreachable: start from the hub alone
            log.warning("fleet: the fleet cache could not be read: %s", exc)
        warn = lambda what: (lambda exc: exc and log.warning("fleet: watching %s in the hub: %s", what, exc))  # noqa: E731
        licenses = Informer(op.hub_api, f"apis/{GROUP}/{VERSION}/licenses", on_event=member.license_event,
                            on_error=warn("Licenses"))
        licenses.on_synced = lambda: member.hub_listed(
            {str((body.get("metadata") or {}).get("name")) for body in licenses.known.values()})
        licenses.start()
        books = Informer(op.hub_api, f"api/v1/namespaces/{ns}/configmaps?labelSelector={LEASE_LABEL}%3Dtrue",
                         on_event=member.lease_event, on_error=warn("lease books")).start()
        self.fleet_informers += [licenses, books]
        wait = 5 if restored else 30
        try:
            # With the cache restored, a hub that does not answer delays the start only briefly.
            await asyncio.wait_for(licenses.synced.wait(), wait)
        except TimeoutError:
            log.error("fleet: the hub's Licenses could not be listed within %d s; %s", wait,
                      f"deciding on the {restored} fleet licenses and floors restored from the cache" if restored
                      else "fleet tenants are denied until they are")
        # (Not in ``tasks``: an empty ``tasks`` is what starts the loops below.)
        self.fleet_tasks.append(asyncio.get_running_loop().create_task(member.run()))
        log.info("fleet member started", extra={"cluster": member.me, "hubNamespace": ns})

    async def _start_metrics(self) -> None:
        op = self.op
        if op.cfg.metrics_port and not self.side_servers:
            from entitle.operator.metrics_server import metrics_server

            endpoint = metrics_server(op.cfg, op.async_api, op.certificate)
            await endpoint.start()
            self.side_servers.append(endpoint)

    def _set_sinks(self) -> None:
        from entitle.adapters.metering.pump import SinkPump
        from entitle.adapters.metering.sinks import build_sinks
        from entitle.operator.metrics import LEDGER_LAG, SINK_ERRORS

        ledger, sinks = self.op.controller.ledger, self.op.cfg.sinks
        self.op.controller.pumps.factory = lambda: [SinkPump(
            ledger, sink,
            on_error=lambda name: SINK_ERRORS.labels(sink=name).inc(),
            on_lag=lambda name, lag: LEDGER_LAG.labels(sink=name).set(lag)) for sink in build_sinks(sinks)]

    def _start_loops(self) -> None:
        op, cfg, controller = self.op, self.op.cfg, self.op.controller
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(controller.scheduler.run()))
        self.tasks.append(loop.create_task(op.certificate.keep_fresh()))
        if op.workers is not None:
            self.tasks.append(loop.create_task(op.workers.supervise()))
        if not op.worker:     # a worker never leads: status, Events and sinks stay here
            elector = LeaseElector(op.api.api_client, cfg.namespace, "entitle-controller",
                                   f"{socket.gethostname()}-{os.getpid()}", timedelta(seconds=cfg.lease_seconds))
            self.tasks.append(loop.create_task(leadership(controller.term, controller.set_leader, elector,
                                                          period=max(0.5, cfg.lease_seconds / 5))))

    async def shutdown(self) -> None:
        op = self.op
        if op.workers is not None:
            await asyncio.to_thread(op.workers.stop)
        for task in self.tasks + self.fleet_tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.fleet_tasks, return_exceptions=True)
        op.controller.set_leader(False)
        await op.controller.stop()
        for side in self.side_servers:
            await side.stop()
        for ofrep in self.ofreps:
            await ofrep.stop()      # flushes the open hour's feature counts before the writer closes
        for informer in self.fleet_informers:
            await informer.stop()
        if op.hub_api is not None:
            await op.hub_api.close()
        await op.server.stop()
        await op.async_api.close()
        await asyncio.to_thread(op.controller.writer.close)

    def registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        register(registry, self.op.controller)

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            # A private registry does not inherit Kopf's default login handlers.
            return kopf.login_via_client(**kwargs)

        @kopf.on.startup(registry=registry)
        async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            await self.startup(settings)

        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            await self.shutdown()

        return registry

    def run(self) -> None:
        registry = self.registry()
        # uvloop, as Kopf's own CLI does when it is installed (kopf.run leaves the loop to us).
        try:
            import uvloop
            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            kopf.run(loop=runner.get_loop(), registry=registry, clusterwide=True, standalone=True,
                     liveness_endpoint=os.environ.get("ENTITLE_LIVENESS"))


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
        operator = build(cfg, worker)
    except BuildFailed as exc:
        log.error("entitle run: %s", exc)
        return 2
    OperatorProcess(operator).run()
    return 0
