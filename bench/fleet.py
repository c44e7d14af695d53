"""Fleet mode's cost on the admission path: Workload creates through a member's apiserver with
its operator in fleet mode, against the same creates with the same operator without fleet
mode, measured in the same run on the same member control plane (and a second plane as the
hub). Also: hub writes per 1,000 creates (the lease grows by a chunk at a time).

    python bench/fleet.py [--creates 600] [--concurrency 10] [--chunk 50]

Target (issue #30): no difference at p50 while the leases cover the demand.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from entitle.devenv.controlplane import ControlPlane  # noqa: E402
from scale import Run, kubectl, metric, pct  # noqa: E402


def creates(kc: str, ns: str, count: int, concurrency: int, prefix: str) -> tuple[list[float], int]:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kc))
    denied = 0

    def one(i: int) -> float | None:
        nonlocal denied
        body = {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
                "metadata": {"name": f"{prefix}-{i}", "namespace": ns}, "spec": {"replicas": 1}}
        began = time.perf_counter()
        try:
            api.create_namespaced_custom_object("entitle.dev", "v1alpha1", ns, "workloads", body)
        except client.ApiException:
            denied += 1
            return None
        return (time.perf_counter() - began) * 1000

    with ThreadPoolExecutor(concurrency) as pool:
        samples = [s for s in pool.map(one, range(count)) if s is not None]
    return samples, denied


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="entitle-bench-fleet-"))
    hub = ControlPlane.create(work / "hub").start()
    member = ControlPlane.create(work / "member").start()
    kc, hub_kc = str(member.kubeconfig), str(hub.kubeconfig)
    run = None
    try:
        for config in (kc, hub_kc):
            kubectl(config, "apply", "-f", str(ROOT / "crds"))
            kubectl(config, "wait", "--for=condition=established", "crd/workloads.entitle.dev",
                    "crd/licenses.entitle.dev")
        kubectl(kc, "create", "namespace", "entitle-system")
        kubectl(hub_kc, "create", "namespace", "entitle-fleet")
        big = args.creates * 10
        kubectl(kc, "apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-local", "labels": {"entitle.dev/tenant": "local"}}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-fleet", "labels": {"entitle.dev/tenant": "fleet"}}},
            {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "local"},
             "spec": {"tenant": "local", "instances": {"max": big}}}]))
        kubectl(hub_kc, "apply", "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "fleet"},
             "spec": {"tenant": "fleet", "fleet": True, "instances": {"max": big}}}))
        rows = []
        for label, extra, ns in (
                ("without fleet mode (baseline)", {}, "ns-local"),
                ("fleet mode, lease grown on demand", {"fleet": {"hubKubeconfig": hub_kc, "cluster": "bench",
                                                                 "chunk": {"instances": args.chunk, "seats": 5}}},
                 "ns-fleet")):
            run = Run(work, kc, work / f"ledger-{ns}.db", ns, extra=extra)
            run.wait_ready()
            time.sleep(2)      # (the fleet member's first join; the baseline waits the same)
            writes_before = metric(run.metrics_port, 'entitle_fleet_hub_writes_total{outcome="ok"}')
            samples, denied = creates(kc, ns, args.creates, args.concurrency, ns)
            writes = metric(run.metrics_port, 'entitle_fleet_hub_writes_total{outcome="ok"}') - writes_before
            rows.append((label, samples, denied, writes))
            run.stop()
            run = None
        base = statistics.median(rows[0][1])
        print(f"\n{args.creates} creates, {args.concurrency} concurrent, chunk {args.chunk}\n")
        print("| operator | p50 | p99 | p50 / baseline | denied | hub writes per 1,000 creates |")
        print("|---|---|---|---|---|---|")
        for label, samples, denied, writes in rows:
            print(f"| {label} | {statistics.median(samples):.1f} ms | {pct(samples, 99):.1f} ms | "
                  f"{statistics.median(samples) / base:.2f}x | {denied} | {writes * 1000 / args.creates:.0f} |")
    finally:
        if run is not None:
            run.stop()
        member.stop()
        hub.stop()


if __name__ == "__main__":
    main()
