"""Crash safety of metering: a churn of Workload changes while the operator is SIGKILLed at
random moments. Afterwards the ledger holds exactly one record per change (none missing,
none doubled), each dated no earlier than the change and no later than the next process could
see it, and the export equals totals computed here from the test's own log.

(An update is billed from when the operator first observed it -- DESIGN "Usage records": the
apiserver dates nothing but creations and deletions, and managedFields are a client's words. A
change admitted just before a kill is observed by the next process once it has primed.)"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest
from kubernetes.client.rest import ApiException

from entitle.domain.records import record_id
from tests.conftest import Operator, wait_for
from tests.e2e.helpers import api_client, apply, get, license, namespace, unique

pytestmark = pytest.mark.e2e
GROUP, VERSION, PLURAL = "entitle.dev", "v1alpha1", "workloads"
MANAGER = "churn-test"
CHANGES = 2000
KILLS = 10
# A change made just before a kill is observed by the next process once it has primed.
OBSERVED_WITHIN = 60
WEIGHTS = {"container": 1, "vm": 4}


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _own_change_time(obj: dict) -> str:
    return max(m["time"] for m in obj["metadata"]["managedFields"] if m.get("manager") == MANAGER)


class Churn:
    def __init__(self, api, ns: str, rnd: random.Random) -> None:
        self.api, self.ns, self.rnd = api, ns, rnd
        self.live: dict[str, dict] = {}     # name -> last stored object
        self.log: list[dict] = []           # what was done, with the API's own timestamps
        self.created = 0

    def _retry(self, call):
        """Retry while the webhook is down (the operator is being restarted)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                return call()
            except ApiException as exc:
                if exc.status in (500, 503, 504) and time.monotonic() < deadline:
                    time.sleep(0.05)   # polling the apiserver until the webhook is back
                    continue
                raise

    def spec(self) -> dict:
        r = self.rnd
        return {"instanceKind": r.choice(list(WEIGHTS)), "replicas": r.randint(0, 5),
                "users": sorted(r.sample(["ann", "bob", "cy", "dee", "eve", "fay"], r.randint(0, 3))),
                "guests": [], "features": sorted(r.sample(["sso", "audit"], r.randint(0, 2)))}

    def step(self) -> None:
        r = self.rnd
        action = "create" if len(self.live) < 5 else r.choices(
            ["create", "scale", "users", "features", "delete"], [2, 4, 2, 2, 1])[0]
        if action == "create" and len(self.live) >= 40:
            action = "scale"
        if action == "create":
            self.created += 1
            name = f"w{self.created}"
            spec = self.spec()
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Workload",
                    "metadata": {"name": name, "namespace": self.ns}, "spec": spec}
            obj = self._retry(lambda: self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, body, field_manager=MANAGER))
            self.live[name] = obj
            self.log.append({"op": "created", "uid": obj["metadata"]["uid"], "generation": 1,
                             "time": obj["metadata"]["creationTimestamp"], "spec": obj["spec"]})
            return
        name = r.choice(sorted(self.live))
        if action == "delete":
            obj = self._retry(lambda: self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name))
            del self.live[name]
            self.log.append({"op": "deleted", "uid": obj["metadata"]["uid"],
                             "time": obj["metadata"]["deletionTimestamp"]})
            return
        current = self.live[name]["spec"]
        patch = {}
        if action == "scale":
            patch["replicas"] = r.choice([n for n in range(0, 6) if n != current.get("replicas")])
        elif action == "users":
            users = sorted(set(current.get("users", [])) ^ {r.choice(["ann", "bob", "cy", "dee", "eve", "fay"])})
            patch["users"] = users
        else:
            patch["features"] = sorted(set(current.get("features", [])) ^ {r.choice(["sso", "audit"])})
        obj = self._retry(lambda: self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": patch}, field_manager=MANAGER))
        self.live[name] = obj
        self.log.append({"op": "updated", "uid": obj["metadata"]["uid"], "generation": obj["metadata"]["generation"],
                         "time": _own_change_time(obj), "spec": obj["spec"]})


def expected_ids(log: list[dict]) -> set[str]:
    ids = set()
    for entry in log:
        if entry["op"] == "deleted":
            ids.add(record_id("workload", entry["uid"], "deleted", "deleted"))
        else:
            ids.add(record_id("workload", entry["uid"], entry["generation"], entry["op"]))
    return ids


def totals_from_log(log: list[dict], start: int, end: int) -> dict:
    """Meters computed independently, second by change point, from what the test did."""
    points: dict[int, list[dict]] = {}
    for entry in log:
        points.setdefault(_epoch(entry["time"]), []).append(entry)
    state: dict[str, dict] = {}
    meters = {"instance_hours": 0, "peak_instances": 0, "overage_instance_hours": 0, "peak_seats": 0,
              "seat_hours": 0, "feature_workload_hours": {}}
    feature_seconds: dict[str, int] = {}

    def snapshot():
        units = sum(WEIGHTS[s["instanceKind"]] * s["replicas"] for s in state.values())
        seats = len({u for s in state.values() for u in s.get("users", [])})
        features: dict[str, int] = {}
        for s in state.values():
            for f in set(s.get("features", [])):
                features[f] = features.get(f, 0) + 1
        return units, seats, features

    times = sorted(points)
    unit_s = seat_s = 0
    for i, t in enumerate(times):
        for entry in sorted(points[t], key=lambda e: (e["op"] == "deleted", e.get("generation", 0))):
            if entry["op"] == "deleted":
                state.pop(entry["uid"], None)
            else:
                state[entry["uid"]] = entry["spec"]
        units, seats, features = snapshot()
        if start <= t < end:
            meters["peak_instances"] = max(meters["peak_instances"], units)
            meters["peak_seats"] = max(meters["peak_seats"], seats)
        nxt = times[i + 1] if i + 1 < len(times) else end
        lo, hi = max(t, start), min(nxt, end)
        if hi > lo:
            unit_s += units * (hi - lo)
            seat_s += seats * (hi - lo)
            for f, n in features.items():
                feature_seconds[f] = feature_seconds.get(f, 0) + n * (hi - lo)
    meters["instance_hours"] = round(unit_s / 3600, 6)
    meters["seat_hours"] = round(seat_s / 3600, 6)
    meters["overage_instance_hours"] = 0.0
    meters["feature_workload_hours"] = {f: round(s / 3600, 6) for f, s in sorted(feature_seconds.items())}
    return meters


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_config(request) -> dict:
    if request.param == "sqlite":
        return {}
    return {"ledger": {"postgres": request.getfixturevalue("postgres_dsn")}}


def test_churn_with_random_sigkills_loses_and_doubles_nothing(cluster, tmp_path, ledger_config):
    rnd = random.Random(20261127)
    tenant, ns, lic = unique("crash"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 1_000_000},
                                                  features=[{"name": "sso"}, {"name": "audit"}]))
    operator = Operator(cluster, tmp_path, extra_config=ledger_config).start()
    wait_for(lambda: ((get(cluster, "license", lic) or {}).get("status") or {}).get("summary"), message="license seen")
    churn = Churn(api_client(cluster), ns, rnd)

    kill_points = sorted(rnd.sample(range(100, CHANGES - 100), KILLS))
    kill_now = threading.Event()
    kills = []
    finished = threading.Event()

    def killer():
        while not finished.is_set():
            if not kill_now.wait(timeout=1):
                continue
            kill_now.clear()
            operator.stop(signal.SIGKILL)
            kills.append(time.monotonic())
            operator.start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        for n in range(CHANGES):
            if kill_points and n == kill_points[0]:
                kill_points.pop(0)
                kill_now.set()      # the kill lands while the next changes are in flight
            churn.step()
        wait_for(lambda: len(kills) == KILLS and operator.proc.poll() is None, timeout=120, message="all kills done")
    finally:
        finished.set()
        thread.join(30)

    assert len(kills) >= 10
    expected = expected_ids(churn.log)
    assert len(churn.log) == CHANGES

    def ledger_ids():
        records = [r for r in operator.records() if r["type"] == "dev.entitle.workload.v1" and r["subject"] == tenant]
        return records if {r["id"] for r in records} >= expected else None

    records = wait_for(ledger_ids, timeout=120, message="every change recorded")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a record is duplicated by id"
    assert set(ids) == expected, f"unexpected records: {len(set(ids) - expected)}"
    by_id = {r["id"]: r for r in records}
    for entry in churn.log:
        if entry["op"] == "deleted":
            continue
        data = by_id[record_id("workload", entry["uid"], entry["generation"], entry["op"])]["data"]
        spec = entry["spec"]
        assert data["units"] == WEIGHTS[spec["instanceKind"]] * spec["replicas"]
        assert data["users"] == sorted(spec.get("users", []))
        assert data["features"] == sorted(spec.get("features", []))

    # Each record dated no earlier than the change (the apiserver's own time, which this test --
    # the client -- knows to be honest) and no later than a restarted operator could observe it.
    late = 0
    for entry in churn.log:
        rid = record_id("workload", entry["uid"], "deleted", "deleted") if entry["op"] == "deleted" else \
            record_id("workload", entry["uid"], entry["generation"], entry["op"])
        recorded = _epoch(by_id[rid]["time"])
        assert recorded >= _epoch(entry["time"]), (entry, by_id[rid]["time"])
        assert recorded - _epoch(entry["time"]) <= OBSERVED_WITHIN, (entry, by_id[rid]["time"])
        late += recorded - _epoch(entry["time"]) > 2
        entry["time"] = by_id[rid]["time"]      # what the export integrates over
    print(f"\n{late} of {len(churn.log)} changes recorded more than 2 s after they happened ({KILLS} kills)")
    # Export from the ledger equals the independent computation.
    times = sorted(_epoch(e["time"]) for e in churn.log)
    start, end = times[len(times) // 10], times[-1] + 1800
    fmt = lambda t: datetime.utcfromtimestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--ledger", operator.ledger_location,
                           "--from", fmt(start), "--to", fmt(end), "--tenant", tenant],
                          capture_output=True, text=True)
    operator.stop()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tenants"][tenant] == totals_from_log(churn.log, start, end)
