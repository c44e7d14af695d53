"""Engine decision latency as a tenant grows: 100, 1,000 and 10,000 workloads, 10 CEL rules.

    python bench/engine.py [--requests N]

The baseline, measured in the same run on the same data, is a naive engine that recounts
the tenant's usage from every workload on each request (what an API-lookup policy does).
The ratio shows the cost staying flat with entitle's incremental usage while the recount grows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from entitle.api import License, Workload  # noqa: E402
from entitle.domain.admission import CREATE  # noqa: E402
from entitle.domain.state import ClusterState, WorkloadRequest  # noqa: E402

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
RULES = [
    {"name": f"rule-{i}", "expression": expr}
    for i, expr in enumerate([
        "workload.spec.replicas <= 100",
        "tenant.usage.instances <= 1000000",
        "tenant.usage.seats <= 1000000",
        "size(workload.spec.users) <= 50",
        "!('forbidden' in workload.spec.features)",
        "workload.metadata.name.size() < 64",
        "workload.spec.instanceKind in ['container', 'vm', 'processCluster']",
        "now > timestamp('2020-01-01T00:00:00Z')",
        "license.tenant == tenant.name",
        "tenant.entitlement.instances == null || tenant.usage.instances <= tenant.entitlement.instances",
    ])
]


def build(n: int) -> ClusterState:
    state = ClusterState()
    state.set_namespace("team", {"entitle.dev/tenant": "acme"})
    state.set_license(License.model_validate({"metadata": {"name": "base"}, "spec": {
        "tenant": "acme", "instances": {"max": 10 * n + 1000}, "seats": {"max": 10 * n},
        "features": [{"name": "sso"}, {"name": "audit", "requires": ["sso"]}], "rules": RULES}}))
    for i in range(n):
        wl = Workload.model_validate({"metadata": {"name": f"w{i}", "namespace": "team"}, "spec": {
            "replicas": 1 + i % 3, "users": [f"user{i % 500}", f"user{(i * 7) % 900}"],
            "features": ["sso"] if i % 2 else ["sso", "audit"]}})
        state.observe_workload(wl)
    return state


def request(i: int) -> WorkloadRequest:
    wl = Workload.model_validate({"metadata": {"name": f"new{i}", "namespace": "team"}, "spec": {
        "replicas": 2, "users": ["alice", f"user{i % 50}"], "features": ["sso"]}})
    return WorkloadRequest(CREATE, "team", f"new{i}", wl, None, dry_run=True)


def naive_recount(state: ClusterState) -> None:
    """Baseline: recount the tenant from every workload, the way a lookup-based policy does."""
    units, users, features = 0, set(), {}
    for entry in state.workloads.values():
        spec = entry.workload.spec
        units += state.table.units(spec.instance_kind, spec.replicas)
        users.update(spec.users)
        for f in spec.features:
            features[f] = features.get(f, 0) + 1


def measure(fn, count: int) -> list[float]:
    samples = []
    for i in range(count):
        start = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'workloads':>10} {'engine p50 µs':>14} {'engine p99 µs':>14} {'recount+engine p50 µs':>22} {'ratio':>7}")
    rows = []
    for n in (100, 1_000, 10_000):
        state = build(n)
        reqs = [request(i) for i in range(args.requests)]
        for r in reqs[:200]:  # warm up (CEL programs are compiled once, on license read)
            state.admit(r, NOW)
        engine = measure(lambda i: state.admit(reqs[i], NOW), args.requests)
        baseline = measure(lambda i: (naive_recount(state), state.admit(reqs[i], NOW)), min(args.requests, 300))
        p50, p99, b50 = pct(engine, 50), pct(engine, 99), pct(baseline, 50)
        rows.append((n, p50, p99, b50))
        print(f"{n:>10} {p50:>14.1f} {p99:>14.1f} {b50:>22.1f} {b50 / p50:>6.1f}x")
    flat = rows[-1][1] / rows[0][1]
    print(f"engine p50 at 10,000 workloads / at 100 workloads: {flat:.2f}x (flat = ~1)")


if __name__ == "__main__":
    main()
