"""Small builders for engine tests."""

from __future__ import annotations

from datetime import datetime, timezone

from entitle.api import License, Workload
from entitle.domain.admission import CREATE, DELETE, UPDATE
from entitle.domain.state import ClusterState, WorkloadRequest

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def lic(name: str, tenant: str = "acme", **spec) -> License:
    return License.model_validate({"metadata": {"name": name, "generation": 1}, "spec": {"tenant": tenant, **spec}})


def wl(name: str, ns: str = "team-a", **spec) -> Workload:
    return Workload.model_validate({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def state_with(*licenses: License, namespaces: dict | None = None) -> ClusterState:
    state = ClusterState()
    for ns, tenant in (namespaces or {"team-a": "acme"}).items():
        state.set_namespace(ns, {"entitle.dev/tenant": tenant} if tenant else {})
    for item in licenses:
        state.set_license(item)
    return state


def apply(state: ClusterState, workload: Workload, now: datetime = NOW, dry_run: bool = False):
    ns, name = workload.metadata.namespace, workload.metadata.name
    existing = state.workload(ns, name)
    op = UPDATE if existing else CREATE
    return state.admit(WorkloadRequest(op, ns, name, workload, existing, dry_run), now)


def delete(state: ClusterState, ns: str, name: str, now: datetime = NOW):
    return state.admit(WorkloadRequest(DELETE, ns, name, None, state.workload(ns, name)), now)


def make_controller(ledger_path=None, *, state: ClusterState | None = None, cfg=None, api=None, async_api=None,
                    clock=None, ledger=None, leader: bool = False):
    """The operator's controller over an in-memory (or ``ledger_path``) SQLite ledger, with no
    API server unless given one (``tests.kube_double.KubeDouble``); ``clock`` (default: the
    config's) dates what it records. Close its writer (``controller.writer.close()``) when done."""
    from entitle.adapters.metering.ledger import Ledger
    from entitle.operator.config import OperatorConfig
    from entitle.operator.controller import Controller

    cfg = cfg or OperatorConfig()
    if state is None:
        state = ClusterState(cfg.instance_table())
    if ledger is None:
        ledger = Ledger(ledger_path if ledger_path is not None else ":memory:")
    controller = Controller(cfg, state, ledger, api=api, async_api=async_api, clock=clock)
    controller.leader = leader
    return controller
