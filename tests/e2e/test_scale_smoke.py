"""Fleet scale, smoke-sized (issue "Fleet scale"; bench/scale.py measures the real sizes): with
5,000 Workloads over 50 tenants already stored, a starting operator is ready only once its
picture is whole (its first admission sees every Workload), posts no Event for objects it merely
sees for the first time, and its usage totals equal a recount of what is stored; restarted, it
rewrites none of the statuses already stored."""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.conftest import RELEASE, Operator, wait_for
from tests.e2e.helpers import api_client, license, namespace, unique, workload

pytestmark = pytest.mark.e2e

WORKLOADS, TENANTS = 5_000, 50


def _ready(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=1, context=ctx) as resp:
            return resp.status == 200
    except Exception:  # noqa: BLE001 -- not listening yet, or 503 while priming
        return False


def _metric(op, series: str) -> float:
    """One series' value from the operator's /metrics (0 when absent)."""
    text = op.metrics()
    def matches(line: str) -> bool:
        return line.startswith(series + " ") or ("{" not in series and line.startswith(series + "{"))
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if matches(line))


def test_ready_only_when_primed_quiet_at_first_sight_and_totals_exact(cluster, tmp_path):
    run = unique("scale")
    tenants = [f"{run}-t{i}" for i in range(TENANTS)]
    namespaces = [f"{run}-n{i}" for i in range(TENANTS)]
    cap = {t: 0 for t in tenants}
    # No webhook while the fleet is stored (as if it had been admitted by an earlier operator):
    # each Workload carries the usage finalizer the mutating webhook would have given it.
    cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", RELEASE,
                    "--ignore-not-found")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [namespace(ns, t) for ns, t in zip(namespaces, tenants)]
        + [license(f"{t}-lic", t, instances={"max": 1_000_000}) for t in tenants]))
    api = api_client(cluster)
    replicas = {}

    def create(i: int) -> None:
        ns, t = namespaces[i % TENANTS], tenants[i % TENANTS]
        body = workload(f"w{i}", ns, replicas=1 + i % 3, users=[f"u{i % 7}"], features=[])
        body["metadata"]["finalizers"] = ["entitle.dev/usage-record"]
        api.create_namespaced_custom_object("entitle.dev", "v1alpha1", ns, "workloads", body)
        replicas[i] = (t, 1 + i % 3)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(WORKLOADS)))
    for t, units in replicas.values():
        cap[t] += units
    # Each tenant's max is exactly its usage now: one more unit must be denied with the full count.
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [license(f"{t}-lic", t, instances={"max": cap[t]}) for t in tenants]))

    started = time.monotonic()
    op = Operator(cluster, tmp_path)
    failure: list[BaseException] = []

    def start() -> None:
        try:
            op.start()
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    try:
        wait_for(lambda: failure or _ready(op.port), timeout=300, interval=0.05, message="the operator ready")
        assert not failure, failure
        ready_after = time.monotonic() - started
        # The first admission after ready sees all 5,000: tenant 0 is exactly at its cap.
        probe = workload("one-more", namespaces[0], replicas=1)
        thread.join(120)
        assert not failure, failure
        denied = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe), check=False)
        assert denied.returncode != 0 and f"instances {cap[tenants[0]]} + 1 would exceed {cap[tenants[0]]}" \
            in denied.stderr, denied.stderr

        # Usage totals equal a recount of what is stored (the License status' instances.used).
        def totals_match():
            got = {}
            for t in tenants:
                out = cluster.kubectl("get", "license", f"{t}-lic", "-o", "json", check=False)
                status = json.loads(out.stdout).get("status") or {} if out.returncode == 0 else {}
                got[t] = (status.get("instances") or {}).get("used")
            return got == cap or None
        wait_for(totals_match, timeout=120, interval=1, message="License status totals equal the recount")

        # Statuses written (every Workload Entitled), and no Event for a first sight of one.
        def all_entitled():
            out = cluster.kubectl("get", "workloads", "-A", "-o", "json").stdout
            items = [w for w in json.loads(out)["items"] if w["metadata"]["namespace"].startswith(run)]
            return len(items) == WORKLOADS and all(
                any(c["type"] == "Entitled" and c["status"] == "True" for c in (w.get("status") or {}).get("conditions", []))
                for w in items)
        wait_for(all_entitled, timeout=180, interval=2, message="every Workload's Entitled status written")
        events = json.loads(cluster.kubectl("get", "events", "-A", "-o", "json").stdout)["items"]
        # (Per-tenant notices -- each tenant is at 100 % of its max -- are not per-object Events.)
        ours = [e for e in events if e["metadata"]["namespace"].startswith(run)
                and e["involvedObject"]["kind"] == "Workload"]
        assert ours == [], [(e["reason"], e["involvedObject"]["name"]) for e in ours[:5]]
        print(f"ready after {ready_after:.1f} s with {WORKLOADS} workloads", file=sys.stderr)

        # A restart over a fleet whose status is current writes none of it again (it would be
        # 5,000 patches held to the write pace, and as many watch events for every watcher).
        def stored_versions():
            out = cluster.kubectl("get", "workloads", "-A", "-o", "json").stdout
            return {(w["metadata"]["namespace"], w["metadata"]["name"]): w["metadata"]["resourceVersion"]
                    for w in json.loads(out)["items"] if w["metadata"]["namespace"].startswith(run)}
        op.stop()
        before = stored_versions()
        op = Operator(cluster, tmp_path)           # the same ledger
        op.start()
        # Leading (its pass over every tenant begins: pending set to all of them), then done.
        wait_for(lambda: _metric(op, "entitle_leader") == 1
                 and _metric(op, "entitle_status_tenants_pending") == 0
                 and _metric(op, "entitle_status_writes_pending") == 0,
                 timeout=120, interval=0.5, message="the restarted leader's status pass over the fleet")
        assert _metric(op, 'entitle_status_writes_total{kind="Workload"}') == 0
        assert stored_versions() == before, "no Workload was written"
    finally:
        thread.join(120)
        op.stop()
        cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", RELEASE,
                        "--ignore-not-found", check=False)
        # The shared cluster goes on without this fleet: finalizers off (no operator runs to
        # release them), then the namespaces go, so later tests' operators see none of it.
        def release(i: int) -> None:
            try:
                api.patch_namespaced_custom_object("entitle.dev", "v1alpha1", namespaces[i % TENANTS], "workloads",
                                                   f"w{i}", {"metadata": {"finalizers": None}})
            except Exception:  # noqa: BLE001 -- not created, or already without
                pass
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(release, range(WORKLOADS)))
        cluster.kubectl("delete", "namespace", *namespaces, "--wait=false", check=False)
        cluster.kubectl("delete", "license", *[f"{t}-lic" for t in tenants], "--wait=false", check=False)
