"""The dashboard at 500 tenants: rendering its pages, in process and over HTTP, next to the
baseline of serializing the same TenantEntitlement statuses as JSON (what ``kubectl get tent -A
-o json`` carries), measured in the same run.

    python bench/dashboard.py [--tenants 500] [--requests 300]

Each tenant: two namespaces, 35 days of history, 20 features with dependencies, one license, and
50 denials in the last day for one tenant in ten; Licenses readable (the feature catalogue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from entitle.adapters.dashboard import render  # noqa: E402
from entitle.adapters.dashboard.model import Dashboard  # noqa: E402

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def scene(tenants: int) -> Dashboard:
    dash = Dashboard()
    for t in range(tenants):
        history = [{"day": (NOW.date() - timedelta(days=34 - d)).isoformat(), "instances": (t + d) % 40,
                    "seats": d % 9} for d in range(35)]
        status = {"tenant": f"tenant-{t:03d}", "active": True, "renewal": "2027-03-01T00:00:00Z",
                  "instances": {"used": t % 40, "max": 40, "burstExtra": 5, "burstWindow": "3d",
                                "burstLeftSeconds": 3600.0 * (t % 72)},
                  "seats": {"used": t % 9, "max": 10},
                  "licenses": [{"name": f"lic-{t}", "phase": "Active", "edition": "pro", "revision": 3,
                                "notAfter": "2027-03-01T00:00:00Z", "graceEnds": "2027-03-15T00:00:00Z"}],
                  "features": [{"name": f"f{j}", "requires": [f"f{j - 1}"] if j % 3 else [], "used": j % 4}
                               for j in range(20)],
                  "history": history, "conditions": []}
        for n in range(2):
            dash.view_event("ADDED", {"metadata": {"name": "entitlement", "namespace": f"ns-{t}-{n}",
                                                   "resourceVersion": str(t * 2 + n)}, "status": status})
        if t % 10 == 0:
            for k in range(50):
                dash.event_event("ADDED", {"metadata": {"namespace": f"ns-{t}-0"}, "type": "Warning",
                                           "reason": "InstanceCapExceeded", "source": {"component": "entitle"},
                                           "message": f"denied create: tenant tenant-{t:03d}: instances 40 + {k} "
                                                      f"would exceed 40",
                                           "lastTimestamp": (NOW - timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                           "involvedObject": {"kind": "Workload", "name": f"w{k}"}}, NOW)
    for e in range(5):
        dash.license_event("ADDED", {"metadata": {"name": f"edition-{e}"},
                                     "spec": {"edition": f"e{e}", "features": [{"name": f"x{e}-{j}"} for j in range(5)]}})
    return dash


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


async def http_load(app, paths: list[str], concurrency: int) -> list[float]:
    import aiohttp
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sem, samples = asyncio.Semaphore(concurrency), []

    async def one(session, path):
        async with sem:
            began = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                await r.read()
                assert r.status == 200, r.status
            samples.append((time.perf_counter() - began) * 1000)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*[one(session, p) for p in paths])
    await runner.cleanup()
    return samples


def pct(samples: list[float], q: int) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    dash = scene(args.tenants)
    statuses = list(dash.views.values())
    rows = []
    base = timed(lambda: json.dumps(statuses), 30)
    rows.append(("baseline: JSON of every TenantEntitlement status", base, len(json.dumps(statuses))))
    index = timed(lambda: render.document("x", render.index(dash, NOW), 1), 30)
    rows.append(("index page (every tenant)", index, len(render.index(dash, NOW))))
    page = timed(lambda: render.document("x", render.tenant_page(dash, "tenant-010", NOW), 1), 30)
    rows.append(("tenant page (graph, trends, 50 denials)", page, len(render.tenant_page(dash, "tenant-010", NOW))))
    print(f"\n{args.tenants} tenants ({len(dash.views)} namespaces)\n")
    print("| what | p50 | p99 | bytes | p50 / baseline |")
    print("|---|---|---|---|---|")
    for label, samples, size in rows:
        print(f"| {label} | {statistics.median(samples):.2f} ms | {pct(samples, 99):.2f} ms | {size:,} | "
              f"{statistics.median(samples) / statistics.median(base):.1f}x |")
    from entitle.adapters.dashboard.server import dashboard_app

    print("\n| over HTTP | concurrent | p50 | p99 |")
    print("|---|---|---|---|")
    for concurrency in (1, 10):
        for label, path in (("index", "/"), ("tenant page", "/t/tenant-010")):
            samples = asyncio.run(http_load(dashboard_app(dash, lambda: NOW), [path] * args.requests, concurrency))
            print(f"| {label} | {concurrency} | {statistics.median(samples):.2f} ms | {pct(samples, 99):.2f} ms |")


if __name__ == "__main__":
    main()
