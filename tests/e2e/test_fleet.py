"""Fleet mode with real clusters: the session's control plane is the hub (fleet Licenses and the
lease books; no entitle runs there), two more local control planes are members, each with its
own operator. One member reaches the hub through a proxy the test can cut (a partition).

The members' operators run with skewed wall clocks -- m1 30 s ahead of the hub, m2 30 s behind
(libfaketime, Debian's ``faketime``) -- so every test here holds with a minute between the two
members' clocks: the protocol compares only durations each side measured. docs/fleet.md has
the protocol."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import Operator, free_port, local_cluster, wait_for
from tests.e2e.conftest import pipe, stop_loop
from tests.e2e.helpers import apply, license, namespace, unique, workload
from tests.e2e.skew import skewed_clock

pytestmark = pytest.mark.e2e

LEASE, GRACE = 12, 3
SKEW = {"m1": 30, "m2": -30}


class CuttableProxy:
    """TCP to the hub's apiserver; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target, self.port = target_port, free_port()
        self.loop = asyncio.new_event_loop()
        self.open = True
        self.writers: set = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", self.port),
                                                       self.loop).result(10)

    async def _handle(self, reader, writer):
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        def close():
            self.open = False
            for w in list(self.writers):
                w.close()
            self.writers.clear()
        self.loop.call_soon_threadsafe(close)

    def heal(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "open", True)

    def stop(self) -> None:
        stop_loop(self.loop, self.thread, self.server)


def _hub_kubeconfig(hub, path: Path, port: int | None = None) -> str:
    config = yaml.safe_load(Path(hub.kubeconfig).read_text())
    if port is not None:
        for c in config["clusters"]:
            c["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def fleet(cluster, tmp_path_factory):
    hub, work = cluster, tmp_path_factory.mktemp("fleet")
    hub.kubectl("create", "namespace", "entitle-fleet", check=False)
    hub_port = int(yaml.safe_load(Path(hub.kubeconfig).read_text())["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1])
    proxy = CuttableProxy(hub_port)
    members, planes, ops = {}, [], {}
    try:
        for name in ("m1", "m2"):
            member, plane = local_cluster(work / name)
            planes.append(plane)
            members[name] = member
            hub_config = _hub_kubeconfig(hub, work / f"{name}-hub.kubeconfig", proxy.port if name == "m1" else None)
            (work / name / "op").mkdir()
            ops[name] = Operator(member, work / name / "op", extra_config={"fleet": {
                "hubKubeconfig": hub_config, "cluster": name, "leaseSeconds": LEASE, "graceSeconds": GRACE,
                "floor": {"instances": 2}, "chunk": {"instances": 4, "seats": 1}}},
                env=skewed_clock(SKEW[name], work / "shim")).start()
        yield {"hub": hub, "members": members, "ops": ops, "proxy": proxy}
    finally:
        for op in ops.values():
            op.stop()
        for plane in planes:
            plane.stop()
        proxy.stop()


def _tenant(fleet, cap: int) -> tuple[str, str]:
    tenant, ns = unique("fl"), unique("fns")
    apply(fleet["hub"], license(unique("fleet"), tenant, fleet=True, instances={"max": cap}))
    for member in fleet["members"].values():
        apply(member, namespace(ns, tenant))
    return tenant, ns


def _create(member, ns: str, name: str) -> bool:
    """True when admitted, False when denied; anything else (a timeout on a loaded machine) is
    retried, as a client would."""
    for _ in range(4):
        proc = apply(member, workload(name, ns, replicas=1), check=False)
        if proc.returncode == 0:
            return True
        if "denied the request" in proc.stderr:
            print(f"{name}: denied: {proc.stderr.strip()[:300]}")
            return False
        print(f"{name}: retrying after {proc.stderr.strip()[:300]}")
    raise AssertionError(f"{name}: neither admitted nor denied: {proc.stderr}")


def _tent(member, ns: str) -> dict:
    got = member.kubectl("get", "tent", "entitlement", "-n", ns, "-o", "json", check=False)
    return (json.loads(got.stdout).get("status") or {}) if got.returncode == 0 else {}


def _hub_view(fleet, tenant: str) -> dict:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "entitle.cli", "fleet", "status", "--hub-kubeconfig",
                          fleet["hub"].kubeconfig, "-o", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["tenants"].get(tenant) or {}


def _log(fleet, name: str) -> list[dict]:
    """The member operator's JSON log lines."""
    lines = []
    for raw in fleet["ops"][name].log.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def _reported(fleet, tenant: str, cluster: str) -> int:
    return ((_hub_view(fleet, tenant).get("clusters") or {}).get(cluster) or {}).get("instances", {}).get("used", -1)


def _settled_lease(member, ns: str) -> int:
    """The member's lease as its view shows it, once it stopped changing (a growth ahead of
    demand may still be on its way)."""
    seen, since = None, time.monotonic()
    deadline = since + 30
    while time.monotonic() < deadline:
        now = (_tent(member, ns).get("instances") or {}).get("max")
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= 2.0:
            return now
        time.sleep(0.2)
    raise AssertionError(f"the lease kept changing: {seen}")


def _ready(fleet, tenant: str, ns: str) -> None:
    """Each member knows the fleet License and holds its floor (its tenant view says so)."""
    for member in fleet["members"].values():
        wait_for(lambda: (_tent(member, ns).get("instances") or {}).get("max") == 2, timeout=60,
                 message=lambda: f"member to hold its floor for {tenant}: {_tent(member, ns)}")


def test_two_hundred_creates_across_two_members_admit_exactly_the_fleet_cap(fleet):
    before = time.time()
    tenant, ns = _tenant(fleet, 50)
    _ready(fleet, tenant, ns)
    after = time.time()
    # The skew is real: each member logged joining the tenant's lease book on its own clock, a
    # minute between the two.
    for name, skew in SKEW.items():
        joined = [datetime.fromisoformat(line["time"]).timestamp() for line in _log(fleet, name)
                  if line.get("message") == f"joined the fleet lease book of tenant {tenant}"]
        assert joined and before + skew - 1 <= joined[0] <= after + skew + 1, (name, before, after, joined)
    m1, m2 = fleet["members"]["m1"], fleet["members"]["m2"]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: (i % 2, _create(m1 if i % 2 == 0 else m2, ns, f"w{i}")), range(200)))
    admitted = [sum(1 for m, ok in results if ok and m == k) for k in (0, 1)]
    assert sum(admitted) == 50, admitted
    stored = [len(json.loads(m.kubectl("get", "workloads", "-n", ns, "-o", "json").stdout)["items"]) for m in (m1, m2)]
    assert stored == admitted
    # `entitle fleet status` reads the hub: the cap, each cluster's lease (within it) and usage.
    view = wait_for(lambda: (v := _hub_view(fleet, tenant))["used"]["instances"] == 50 and v, timeout=30,
                    message="the members' usage in the hub's lease book")
    assert view["caps"]["instances"] == 50
    assert sum(c["instances"]["lease"] for c in view["clusters"].values()) <= 50
    assert {k: c["instances"]["used"] for k, c in view["clusters"].items()} == {"m1": admitted[0], "m2": admitted[1]}
    # Each member's TenantEntitlement shows the fleet totals (as the members last reported them).
    for name, member in fleet["members"].items():
        wait_for(lambda: (_tent(member, ns).get("fleet") or {}).get("instancesUsed") == 50, timeout=30,
                 message=lambda: f"fleet totals in {name}'s tenant view: {_tent(member, ns).get('fleet')}")
        totals = _tent(member, ns)["fleet"]
        assert totals["instancesMax"] == 50 and totals["cluster"] == name and totals["clusters"] == 2
    # Every record says which member wrote it (a fleet export over both ledgers breaks down by cluster).
    for name in ("m1", "m2"):
        mine = [r for r in fleet["ops"][name].records() if (r.get("data") or {}).get("tenant") == tenant]
        assert mine and {r["data"].get("cluster") for r in mine} == {name}
    # One export over both members' ledgers gives the fleet's meters.
    import subprocess
    import sys

    def exported():
        out = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export",
                              "--ledger", fleet["ops"]["m1"].ledger_location, "--ledger", fleet["ops"]["m2"].ledger_location,
                              "--from", "2020-01-01T00:00:00Z", "--to", "2099-01-01T00:00:00Z", "--tenant", tenant,
                              "--format", "json", "--no-progress"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    wait_for(lambda: (exported()["tenants"].get(tenant) or {}).get("peak_instances") == 50, timeout=30,
             message=lambda: f"a fleet peak of 50 in the export over both ledgers: {exported()}")


def test_a_member_cut_off_keeps_to_its_lease_then_its_floor_and_the_other_gets_its_share_after_the_grace(fleet):
    tenant, ns = _tenant(fleet, 20)
    _ready(fleet, tenant, ns)
    m1, m2 = fleet["members"]["m1"], fleet["members"]["m2"]
    for i in range(8):
        assert _create(m1, ns, f"a{i}")
    held = _settled_lease(m1, ns)
    assert 8 < held < 20, held                 # grown ahead of demand: more than it runs
    wait_for(lambda: _reported(fleet, tenant, "m1") == 8, timeout=30, message="m1's usage in the hub")
    fleet["proxy"].cut()
    cut_at = time.monotonic()
    # Within its lease, m1 goes on admitting what it holds (and no more: the hub is out of
    # reach); m2 gets only what m1 does not hold.
    assert all(_create(m1, ns, f"b{i}") for i in range(held - 8))
    assert not _create(m1, ns, "b-over")
    m2_before = sum(_create(m2, ns, f"c{i}") for i in range(20))
    assert m2_before == 20 - held, (m2_before, held)
    # m1's lease lapses on its own clock: its floor only (2), and it is over it.
    wait_for(lambda: (_tent(m1, ns).get("instances") or {}).get("max") == 2, timeout=LEASE + 10,
             message="m1 to fall to its floor")
    assert not _create(m1, ns, "late")
    assert time.monotonic() - cut_at <= LEASE + 3
    # ... and says so: the FleetLease condition and a FleetLeaseLapsed notice (an Event).
    lapsed = next(c for c in _tent(m1, ns)["conditions"] if c["type"] == "FleetLease")
    assert lapsed["status"] == "False" and lapsed["reason"] == "LeaseLapsed"
    wait_for(lambda: "FleetLeaseLapsed" in m1.kubectl("get", "events", "-n", ns, "-o",
                                                      "jsonpath={.items[*].reason}").stdout,
             timeout=30, message="the FleetLeaseLapsed Event")
    # m2 gets m1's unused share only after period + grace: what m1 held above the 8 it reported
    # running (those stay counted: units it runs are never given away).
    more = wait_for(lambda: _create(m2, ns, f"d{time.monotonic_ns()}"), timeout=LEASE + GRACE + 20,
                    message="m2 to be given m1's lapsed share")
    assert more and time.monotonic() - cut_at >= GRACE
    m2_after = 1 + sum(_create(m2, ns, f"e{i}") for i in range(20))
    assert m2_before + m2_after == 20 - 8, (m2_before, m2_after, held)
    fleet["proxy"].heal()
    # Healed: nothing deleted; m1 shows its usage above what it now holds (over the cap).
    wait_for(lambda: any(c.get("type") == "OverCap" and c.get("status") == "True"
                         for c in _tent(m1, ns).get("conditions", [])), timeout=60, message="m1 over the cap")
    assert len(json.loads(m1.kubectl("get", "workloads", "-n", ns, "-o", "json").stdout)["items"]) == held
    # ... and rebalanced as load moves: m2's workloads go, m2 gives back what idles (it keeps one
    # chunk, 4), and m1's renewals take back what it runs as the cap makes room -- over the cap
    # no more, with nothing created -- then new demand grows into the rest, exactly to the cap.
    for item in json.loads(m2.kubectl("get", "workloads", "-n", ns, "-o", "json").stdout)["items"]:
        m2.kubectl("delete", "workload", item["metadata"]["name"], "-n", ns, "--wait=false")
    wait_for(lambda: ((_hub_view(fleet, tenant).get("clusters") or {}).get("m2") or {}).get("instances", {}).get("lease") == 4,
             timeout=60, message=lambda: f"m2 to give back what idles: {_hub_view(fleet, tenant)}")
    wait_for(lambda: not any(c.get("type") == "OverCap" and c.get("status") == "True"
                             for c in _tent(m1, ns).get("conditions", [])), timeout=60,
             message=lambda: f"m1 within the cap again: {_tent(m1, ns)}, {_hub_view(fleet, tenant)}")
    assert _hub_view(fleet, tenant)["clusters"]["m1"]["instances"]["lease"] >= held
    regained = sum(_create(m1, ns, f"f{i}") for i in range(20 - held + 1))
    assert regained == 20 - 4 - held, (regained, held)
    view = wait_for(lambda: (v := _hub_view(fleet, tenant))["used"]["instances"] == 16 and v, timeout=30,
                    message=lambda: f"the fleet's usage in the hub: {_hub_view(fleet, tenant)}")
    assert sum(c["instances"]["lease"] for c in view["clusters"].values()) <= 20


def test_a_members_operator_sigkilled_strands_nothing_beyond_one_lease_period(fleet):
    import signal

    tenant, ns = _tenant(fleet, 20)
    _ready(fleet, tenant, ns)
    m1, m2, op2 = fleet["members"]["m1"], fleet["members"]["m2"], fleet["ops"]["m2"]
    for i in range(8):
        assert _create(m2, ns, f"a{i}")
    held = _settled_lease(m2, ns)
    assert held > 8, held
    wait_for(lambda: _reported(fleet, tenant, "m2") == 8, timeout=30, message="m2's usage in the hub")
    op2.stop(signal.SIGKILL)
    killed = time.monotonic()
    try:
        first = sum(_create(m1, ns, f"b{i}") for i in range(20))
        assert first == 20 - held, (first, held)  # what m2 does not hold
        # m2's share above its floor comes free once its lease lapsed in m1's eyes.
        wait_for(lambda: _create(m1, ns, f"c{time.monotonic_ns()}"), timeout=LEASE + GRACE + 20,
                 message="m1 to be given the killed member's share")
        assert time.monotonic() - killed <= LEASE + GRACE + 20
        extra = 1 + sum(_create(m1, ns, f"d{i}") for i in range(20))
        assert first + extra == 20 - 8, (first, extra)   # all but the 8 m2 runs (it reported them)
    finally:
        op2.start()


def test_a_member_restarted_while_cut_off_from_the_hub_still_admits_within_its_floor(fleet):
    tenant, ns = _tenant(fleet, 20)
    _ready(fleet, tenant, ns)
    m1, op1 = fleet["members"]["m1"], fleet["ops"]["m1"]

    def cached() -> str:
        return m1.kubectl("get", "configmaps", "-n", "entitle-system", "-l", "entitle.dev/fleet-cache=true",
                          "-o", "json", check=False).stdout
    # What m1 read from the hub is kept in its own cluster (the fleet License, its floor).
    wait_for(lambda: tenant in cached(), timeout=30, message="m1's fleet cache to hold the tenant")
    fleet["proxy"].cut()
    try:
        op1.stop()
        op1.start()
        # Restarted with the hub out of reach: it knows the fleet License from its cache and
        # admits within its floor (2), no more; its lease shows as lapsed.
        wait_for(lambda: (f := _tent(m1, ns).get("fleet") or {}).get("leaseValid") is False
                 and f.get("instancesLease") == 2, timeout=30, message=lambda: f"m1's view after the restart: {_tent(m1, ns)}")
        assert [_create(m1, ns, f"r{i}") for i in range(3)] == [True, True, False]
    finally:
        fleet["proxy"].heal()
    # The hub back: m1 renews and grows as before.
    assert wait_for(lambda: _create(m1, ns, f"h{time.monotonic_ns()}"), timeout=LEASE + 20,
                    message="m1 to grow again once the hub answers")
