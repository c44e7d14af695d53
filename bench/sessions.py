"""Concurrent sessions (floating seats) against the running operator and a real control plane:
check-outs, heartbeats and check-ins per second with p50/p99, next to OFREP single-flag
evaluations on the same port, process and control plane, measured in the same run (the
baseline: same identity check, no store write).

    python bench/sessions.py [--requests 1000]

Per concurrency (1, 10, 100 callers): ``--requests`` check-outs for one tenant (distinct users,
perUser off, so each takes a seat), as many heartbeats over those sessions, then every
check-in; and the same check-outs spread over 10 tenants at once. "writes/1k" is the session
objects written per 1,000 operations (entitle_session_store_writes_total{outcome="ok"}): group
commit turns concurrent operations of one tenant into one compare-and-swap write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from scale import Run, kubectl, metric, pct  # noqa: E402

TENANTS = 10


async def load(calls: list[tuple[str, str, dict | None, str]], concurrency: int, expect: int
               ) -> tuple[list[float], float, list[dict]]:
    """``calls``: (method, url, json body, token). Latencies (ms), calls/s, answers (JSON, in
    the order of ``calls``)."""
    import aiohttp

    sem, samples, answers = asyncio.Semaphore(concurrency), [], [None] * len(calls)

    async def one(index, session, method, url, body, token):
        async with sem:
            start = time.perf_counter()
            async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
                raw = await resp.read()
                if resp.status != expect:
                    raise SystemExit(f"{method} {url}: {resp.status} {raw[:300]!r}")
            samples.append((time.perf_counter() - start) * 1000)
            if raw:
                answers[index] = json.loads(raw)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        began = time.perf_counter()
        await asyncio.gather(*[one(i, session, *call) for i, call in enumerate(calls)])
        elapsed = time.perf_counter() - began
    return samples, len(calls) / elapsed, answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    n = args.requests
    work = Path(tempfile.mkdtemp(prefix="entitle-bench-sessions-"))
    plane = ControlPlane.create(work / "cp").start()
    kc = str(plane.kubeconfig)
    run = None
    try:
        kubectl(kc, "apply", "-f", str(ROOT / "crds"))
        kubectl(kc, "wait", "--for=condition=established", "crd/workloads.entitle.dev", "crd/licenses.entitle.dev")
        kubectl(kc, "create", "namespace", "entitle-system")
        docs = []
        for i in range(TENANTS):
            docs.append({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": f"ns-t{i}", "labels": {"entitle.dev/tenant": f"t{i}"}}})
            docs.append({"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": f"lic-t{i}"},
                         "spec": {"tenant": f"t{i}", "features": [{"name": "sso"}],
                                  "sessions": {"max": 4000, "ttlSeconds": 3600, "perUser": False}}})
        kubectl(kc, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
        tokens = []
        for i in range(TENANTS):
            kubectl(kc, "create", "serviceaccount", "app", "-n", f"ns-t{i}")
            tokens.append(kubectl(kc, "create", "token", "app", "-n", f"ns-t{i}", "--audience", "entitle").strip())
        ofrep_port = free_port()
        run = Run(work, kc, work / "ledger.db", "sessions",
                  extra={"ofrep": {"port": ofrep_port, "listenHost": "127.0.0.1", "audience": "entitle"}})
        run.wait_ready()
        url = f"http://127.0.0.1:{ofrep_port}"
        # Warm up: the token reviews are cached, the session objects exist.
        asyncio.run(load([("POST", f"{url}/ofrep/v1/evaluate/flags/sso", {}, t) for t in tokens], 10, 200))
        warm, _, answers = asyncio.run(load([("POST", f"{url}/sessions/v1/checkout", {"user": f"w{i}"}, t)
                                             for i, t in enumerate(tokens)], 10, 200))
        asyncio.run(load([("DELETE", f"{url}/sessions/v1/{a['id']}", None, tokens[i])
                          for i, a in enumerate(answers)], 10, 204))

        def writes() -> float:
            return metric(run.metrics_port, 'entitle_session_store_writes_total{outcome="ok"}')

        rows = []

        def measure(label, concurrency, calls, expect):
            before = writes()
            samples, rate, answers = asyncio.run(load(calls, concurrency, expect))
            per_k = (writes() - before) * 1000 / len(calls)
            rows.append((label, concurrency, rate, statistics.median(samples), pct(samples, 99), per_k))
            return answers

        for concurrency in (1, 10, 100):
            measure("OFREP single flag (baseline)", concurrency,
                    [("POST", f"{url}/ofrep/v1/evaluate/flags/sso", {}, tokens[0])] * n, 200)
            t0 = tokens[0]
            got = measure("check-out, 1 tenant", concurrency,
                          [("POST", f"{url}/sessions/v1/checkout", {"user": f"u{concurrency}-{i}"}, t0)
                           for i in range(n)], 200)
            ids = [a["id"] for a in got]
            measure("heartbeat, 1 tenant", concurrency,
                    [("POST", f"{url}/sessions/v1/{sid}/heartbeat", None, t0) for sid in ids], 200)
            measure("check-in, 1 tenant", concurrency, [("DELETE", f"{url}/sessions/v1/{sid}", None, t0)
                                                        for sid in ids], 204)
            spread = [(i % TENANTS, i) for i in range(n)]
            got = measure(f"check-out, {TENANTS} tenants", concurrency,
                          [("POST", f"{url}/sessions/v1/checkout", {"user": f"s{concurrency}-{i}"}, tokens[t])
                           for t, i in spread], 200)
            asyncio.run(load([("DELETE", f"{url}/sessions/v1/{a['id']}", None, tokens[t])
                              for (t, _), a in zip(spread, got)], 100, 204))
        base = {c: p50 for label, c, _, p50, _, _ in rows if label.startswith("OFREP")}
        print(f"\n{n} operations per row; warm-up check-out p50 {statistics.median(warm):.1f} ms\n")
        print("| what | concurrent | ops/s | p50 | p99 | p50 / baseline p50 | writes/1k ops |")
        print("|---|---|---|---|---|---|---|")
        for label, concurrency, rate, p50, p99, per_k in rows:
            print(f"| {label} | {concurrency} | {rate:,.0f} | {p50:.2f} ms | {p99:.2f} ms | "
                  f"{p50 / base[concurrency]:.1f}x | {per_k:,.0f} |")
    finally:
        if run is not None:
            run.stop()
        plane.stop()


if __name__ == "__main__":
    main()
