"""Lifecycle notices over a simulated 90-day clock (DESIGN "Tenant view"): each crossing is
noticed exactly once -- as an Event, a metric and a ``dev.entitle.notice.v1`` record -- while
leadership moves between two replicas that restart from what is stored in the cluster (the
License's status, the TenantEntitlements), never from their own memory."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from entitle.domain.notices import notices
from entitle.domain.records import NOTICE_TYPE
from entitle.operator.controller import Controller
from tests.kube_double import KubeDouble
from tests.unit.builders import lic, make_controller, state_with, wl

START = datetime(2027, 1, 1, tzinfo=timezone.utc)
NOT_AFTER = START + timedelta(days=90)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Cluster:
    """What the apiserver stores: the License's status and each namespace's TenantEntitlement."""

    def __init__(self) -> None:
        self.license_status: dict = {}
        self.api = KubeDouble()
        self.replicas = 2

    def store_view(self, namespace: str, status: dict) -> None:
        self.api.put({"kind": "TenantEntitlement", "metadata": {"name": "entitlement", "namespace": namespace},
                      "status": status})

    def license_body(self) -> dict:
        spec = lic("gold", notAfter=NOT_AFTER.isoformat().replace("+00:00", "Z"), gracePeriod="3d",
                   instances={"max": 10, "burst": {"extra": 2, "window": "1h"}}).model_dump(by_alias=True, mode="json",
                                                                                           exclude_none=True)
        spec["metadata"]["uid"] = "uid-gold"
        return {**spec, "status": self.license_status} if self.license_status else spec


def replica(cluster: Cluster, tmp_path, name: str, now: datetime) -> Controller:
    """A replica that starts now and becomes leader: it knows only what the cluster stores."""
    state = state_with(namespaces={"team-a": "acme", "team-b": "acme"})
    state.observe_workload(wl("app", replicas=cluster.replicas))
    controller = make_controller(tmp_path / f"{name}.db", state=state, async_api=cluster.api, clock=Clock(now),
                                 leader=True)
    controller.on_license(cluster.license_body())
    asyncio.run(controller.tenant_views.list())
    return controller


def notice_records(controller: Controller) -> list[dict]:
    ledger = controller.writer.ledger
    controller.writer.close()
    return [r for r in ledger.iter_records() if r["type"] == NOTICE_TYPE]


def tick(controller: Controller, cluster: Cluster, now: datetime) -> None:
    controller.clock.now = now
    for kind, args in controller.status.refresh(controller.state.tenants(), now):
        if kind == "license":
            cluster.license_status = args[1]
        elif kind == "tent":
            cluster.store_view(*args)
    # The watch echoes our License write (the conditions as stored).
    controller.on_license(cluster.license_body())


def test_ninety_days_each_crossing_once_across_two_replicas_and_restarts(tmp_path):
    cluster = Cluster()
    plan = {2: 8, 4: 10, 6: 11, 12: 5, 40: 9}   # day -> replicas of the tenant's one workload
    seen: list[tuple[str, str, str]] = []      # (notice, object kind, when)
    records: list[dict] = []
    leader, serving = None, None
    for hour in range(96 * 24):
        now = START + timedelta(hours=hour)
        day = hour // 24
        if hour % 24 == 0 and day in plan:
            cluster.replicas = plan[day]
            if leader is not None:
                leader.state.observe_workload(wl("app", replicas=cluster.replicas))
        if hour % (24 * 7) == 0 or hour % (24 * 11) == 5:   # leadership moves: another replica starts
            if leader is not None:
                records += notice_records(leader)
            serving = "b" if serving == "a" else "a"
            leader = replica(cluster, tmp_path, f"{serving}{hour}", now)
        leader.events.queued.clear()
        tick(leader, cluster, now)
        seen += [(e["reason"], e["kind"], e["namespace"] or "") for e in leader.events.queued
                 if e["reason"] in ("UsageAbove80Percent", "UsageAt100Percent", "BurstStarted", "OverCap",
                                    "BurstBudgetUsedUp", "ExpiresIn30Days", "ExpiresIn7Days", "ExpiresIn1Day",
                                    "GraceStarted")]
    records += notice_records(leader)

    tenant = [(r, ns) for r, kind, ns in seen if kind == "TenantEntitlement"]
    license = [r for r, kind, _ in seen if kind == "License"]
    per_ns = lambda ns: [r for r, n in tenant if n == ns]  # noqa: E731
    assert per_ns("team-a") == per_ns("team-b") == [
        "UsageAbove80Percent", "UsageAt100Percent", "BurstStarted", "OverCap", "BurstBudgetUsedUp",
        "UsageAbove80Percent"], tenant
    assert license == ["ExpiresIn30Days", "ExpiresIn7Days", "ExpiresIn1Day", "GraceStarted"], license
    # One record per crossing (not per namespace), each with its own id, in the replicas' ledgers.
    assert [r["data"]["notice"] for r in sorted(records, key=lambda r: r["time"])] == [
        "UsageAbove80Percent", "UsageAt100Percent", "BurstStarted", "OverCap", "BurstBudgetUsedUp",
        "UsageAbove80Percent", "ExpiresIn30Days", "ExpiresIn7Days", "ExpiresIn1Day", "GraceStarted"]
    assert len({r["id"] for r in records}) == len(records)
    assert {r["data"]["kind"] for r in records[-4:]} == {"License"} and records[-1]["data"]["uid"] == "uid-gold"


def test_a_new_threshold_is_a_notice_a_repeated_one_is_not():
    now = START
    before = [{"type": "UsageHigh", "status": "True", "reason": "Above80Percent"}]
    after = [{"type": "UsageHigh", "status": "True", "reason": "AtMax", "message": "at or above max on seats"}]
    assert [n.kind for n in notices(before, after, "acme", "TenantEntitlement", "acme", now)] == ["UsageAt100Percent"]
    assert notices(after, after, "acme", "TenantEntitlement", "acme", now) == []
    # A License's OverCap is not a tenant notice (the TenantEntitlement's is).
    over = [{"type": "OverCap", "status": "True", "reason": "OverCap"}]
    assert notices([], over, "acme", "License", "gold", now) == []
    assert [n.kind for n in notices([], over, "acme", "TenantEntitlement", "acme", now)] == ["OverCap"]
    # Going back re-arms: the next crossing is a notice again.
    below = [{"type": "UsageHigh", "status": "False", "reason": "Below80Percent"}]
    assert notices(after, below, "acme", "TenantEntitlement", "acme", now) == []
    assert [n.kind for n in notices(below, after, "acme", "TenantEntitlement", "acme", now)] == ["UsageAt100Percent"]
    record = notices(below, after, "acme", "TenantEntitlement", "acme", now)[0].record("entitle.dev/operator")
    assert record["type"] == NOTICE_TYPE and record["subject"] == "acme" and record["data"]["notice"] == "UsageAt100Percent"
    assert record["id"] == notices(below, after, "acme", "TenantEntitlement", "acme", now)[0].record("entitle.dev/operator")["id"]
