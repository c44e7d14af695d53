"""OpenFeature (OFREP) evaluations against the running operator, next to the webhook's
dry-run reviews measured in the same run, on the same process and control plane.

    python bench/ofrep.py [--requests 3000]

Load: single-flag evaluations (POST /ofrep/v1/evaluate/flags/sso with a ServiceAccount token,
reviewed once and cached) and the bulk evaluation, at 1, 10 and 100 concurrent callers; then
dry-run AdmissionReviews posted to the webhook at the same concurrency. Evaluations/s and
p50/p99 latency per row. Target (issue 17): OFREP p99 <= 5 ms at 10 concurrent.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from entitle.devenv.controlplane import ControlPlane, free_port  # noqa: E402
from scale import Run, kubectl, pct, reviews  # noqa: E402


async def ofrep_load(url: str, token: str, count: int, concurrency: int, path: str) -> tuple[list[float], float]:
    import aiohttp

    sem, samples = asyncio.Semaphore(concurrency), []
    headers = {"Authorization": f"Bearer {token}"}

    async def one(session, record):
        async with sem:
            start = time.perf_counter()
            async with session.post(url + path, json={"context": {"targetingKey": "bench"}}, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            if record:
                samples.append((time.perf_counter() - start) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*[one(session, False) for _ in range(100)])
        began = time.perf_counter()
        await asyncio.gather(*[one(session, True) for _ in range(count)])
        elapsed = time.perf_counter() - began
    return samples, count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="entitle-bench-ofrep-"))
    plane = ControlPlane.create(work / "cp").start()
    kc = str(plane.kubeconfig)
    run = None
    try:
        kubectl(kc, "apply", "-f", str(ROOT / "crds"))
        kubectl(kc, "wait", "--for=condition=established", "crd/workloads.entitle.dev", "crd/licenses.entitle.dev")
        kubectl(kc, "create", "namespace", "entitle-system")
        docs = []
        for i in range(20):
            docs.append({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": f"ns-t{i}", "labels": {"entitle.dev/tenant": f"t{i}"}}})
            docs.append({"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": f"lic-t{i}"},
                         "spec": {"tenant": f"t{i}", "instances": {"max": 1000}, "seats": {"max": 100},
                                  "features": [{"name": f"f{j}"} for j in range(20)] + [{"name": "sso"}]}})
        kubectl(kc, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
        kubectl(kc, "create", "serviceaccount", "app", "-n", "ns-t0")
        token = kubectl(kc, "create", "token", "app", "-n", "ns-t0").strip()
        ofrep_port = free_port()
        run = Run(work, kc, work / "ledger.db", "ofrep", extra={"ofrep": {"port": ofrep_port, "listenHost": "127.0.0.1"}})
        run.wait_ready()
        url = f"http://127.0.0.1:{ofrep_port}"
        rows = []
        for concurrency in (1, 10, 100):
            for label, path in (("OFREP single flag", "/ofrep/v1/evaluate/flags/sso"),
                                ("OFREP bulk (42 flags)", "/ofrep/v1/evaluate/flags")):
                samples, rate = asyncio.run(ofrep_load(url, token, args.requests, concurrency, path))
                rows.append((label, concurrency, rate, statistics.median(samples), pct(samples, 99)))
            began = time.perf_counter()
            samples = asyncio.run(reviews(run.port, args.requests, concurrency, "ns-t0"))
            rate = args.requests / (time.perf_counter() - began)
            rows.append(("webhook dry-run review (baseline)", concurrency, rate, statistics.median(samples),
                         pct(samples, 99)))
        print("\n| what | concurrent | requests/s | p50 | p99 |")
        print("|---|---|---|---|---|")
        for label, concurrency, rate, p50, p99 in rows:
            print(f"| {label} | {concurrency} | {rate:,.0f} | {p50:.2f} ms | {p99:.2f} ms |")
    finally:
        if run is not None:
            run.stop()
        plane.stop()


if __name__ == "__main__":
    main()
