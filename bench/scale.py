"""Fleet scale: how a starting operator copes with many stored Workloads (issue "Fleet scale").

    python bench/scale.py [--workloads 50000] [--tenants 500]

On one local control plane (kube-apiserver + etcd on loopback, as the tests use), creates N
Workloads over T tenants (replicas 1-3, users from a pool of 40 per tenant, a feature on every
third) with the usage-record finalizer the webhook would have given them, then measures, in one
run:

0. baseline, in the same run: one operator over the same tenants and Licenses and no
   Workload yet -- time to ``/readyz``, RSS, dry-run review p50/p99 (10 concurrent);
1. first start (empty ledger) over the N Workloads: dry-run reviews sent while it primes (each
   waits for the primed state: the time they were answered); time from process start to
   ``/readyz`` 200 and where it went (the operator's "state primed" log line); RSS when ready and
   after the first minute; Kubernetes Events and ledger records written in that minute; the
   status loop's mean tick; status writes per second (the highest second of the minute, from
   ``entitle_status_writes_total``); dry-run review p50/p99 posted straight to the webhook once
   ready and again after the minute (10 concurrent);
2. restart (ledger present): the same figures.

Prints a table; docs/performance.md ("Fleet scale") keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402

from entitle.devenv.controlplane import ControlPlane, free_port  # noqa: E402

G, V = "entitle.dev", "v1alpha1"


def kubectl(kc, *args, input=None):
    from entitle.devenv.assets import assets_dir

    out = subprocess.run([str(assets_dir() / "kubectl"), f"--kubeconfig={kc}", *args], input=input,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


def pct(samples, q):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * q / 100))] if samples else float("nan")


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def readyz(port: int) -> int | None:
    """``/readyz``'s status (503 while priming, 200 once primed); None while nothing listens."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=1, context=ctx) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception:  # noqa: BLE001
        return None


def ready(port: int) -> bool:
    return readyz(port) == 200


def listening(port: int) -> bool:
    return readyz(port) is not None


def primed_phases(log: Path) -> dict:
    """Where start-up time went, from the operator's "state primed" log line."""
    import json

    for line in log.read_text().splitlines():
        if '"state primed"' in line:
            entry = json.loads(line)
            return {k: v for k, v in entry.items() if k.endswith("Seconds")}
    return {}


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def dry_run_review(ns: str, name: str, user: str) -> dict:
    """A dry-run AdmissionReview creating one Workload (one replica, one user)."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": G, "version": V, "kind": "Workload"},
        "resource": {"group": G, "version": V, "resource": "workloads"}, "operation": "CREATE",
        "namespace": ns, "name": name, "dryRun": True, "userInfo": {"username": "bench"},
        "object": {"apiVersion": f"{G}/{V}", "kind": "Workload",
                   "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4())},
                   "spec": {"replicas": 1, "users": [user]}}}}


async def reviews_while_priming(port, count, ns, started):
    """Dry-run reviews sent as soon as the port answers, while the replica primes: each waits
    for the primed state (none is decided from a partial picture). Returns (latency ms, when
    answered, in s since the process started) per review."""
    import aiohttp

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    out = []

    async def one(session, i):
        review = dry_run_review(ns, f"p-{uuid.uuid4().hex[:10]}", f"u{i % 40}")
        begin = time.perf_counter()
        async with session.post(f"https://127.0.0.1:{port}/workloads", json=review, ssl=ctx,
                                timeout=aiohttp.ClientTimeout(total=120)) as resp:
            body = await resp.json()
        assert body["response"]["allowed"] is True, body
        out.append(((time.perf_counter() - begin) * 1000, time.monotonic() - started))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*[one(session, i) for i in range(count)])
    return out


async def reviews(port, count, concurrency, ns):
    import aiohttp

    # Not verified: a restarted operator serves under a new loopback CA that the webhook
    # configuration may not carry yet; TLS verification is not what is measured here.
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    sem, samples = asyncio.Semaphore(concurrency), []

    async def one(session, i, record):
        review = dry_run_review(ns, f"r-{uuid.uuid4().hex[:10]}", f"u{i % 40}")
        async with sem:
            start = time.perf_counter()
            async with session.post(f"https://127.0.0.1:{port}/workloads", json=review, ssl=ctx) as resp:
                await resp.json()
            if record:
                samples.append((time.perf_counter() - start) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*[one(session, i, False) for i in range(50)])
        await asyncio.gather(*[one(session, i, True) for i in range(count)])
    return samples


class Run:
    """One operator process over the control plane, measured from its start."""

    def __init__(self, work: Path, kc: str, ledger: Path, label: str, extra: dict | None = None,
                 register: bool = True) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        webhook = {"listenHost": "127.0.0.1", "port": self.port}
        if register:     # (not the baseline: the Workloads are created after it stops)
            webhook["registerURL"] = f"https://127.0.0.1:{self.port}"
        # (plain HTTP /metrics: the benchmark reads it without a token)
        cfg = {"ledgerPath": str(ledger), "metricsPort": self.metrics_port, "metricsAuthentication": False, "namespace": "entitle-system",
               "webhook": webhook, **(extra or {})}
        path = work / f"config-{label}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "KUBECONFIG": kc, "ENTITLE_LOG_LEVEL": "INFO"}
        self.log = work / f"operator-{label}.log"
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "entitle.cli", "run", "--config", str(path)], env=env,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=900) -> float:
        while not ready(self.port):
            if self.proc.poll() is not None or time.monotonic() - self.started > timeout:
                raise SystemExit("operator did not become ready")
            time.sleep(0.05)
        return time.monotonic() - self.started

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=50_000)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--steady-seconds", type=int, default=60)
    args = parser.parse_args()
    n, t = args.workloads, args.tenants
    work = Path(tempfile.mkdtemp(prefix="entitle-bench-scale-"))
    plane = ControlPlane.create(work / "cp").start()
    kc = str(plane.kubeconfig)
    try:
        kubectl(kc, "apply", "-f", str(ROOT / "crds"))
        kubectl(kc, "wait", "--for=condition=established", "crd/workloads.entitle.dev", "crd/licenses.entitle.dev")
        kubectl(kc, "create", "namespace", "entitle-system")
        tenants = [f"t{i:04d}" for i in range(t)]
        docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{x}", "labels": {"entitle.dev/tenant": x}}}
                for x in tenants]
        docs += [{"apiVersion": f"{G}/{V}", "kind": "License", "metadata": {"name": f"lic-{x}"},
                  "spec": {"tenant": x, "instances": {"max": 1_000_000}, "seats": {"max": 10_000},
                           "features": [{"name": "sso"}]}} for x in tenants]
        kubectl(kc, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
        api = client.CustomObjectsApi(config.new_client_from_config(kc))
        base = Run(work, kc, work / "baseline.db", "baseline", register=False)
        base_ready = base.wait_ready()
        base_rss = rss_mib(base.proc.pid)
        base_samples = asyncio.run(reviews(base.port, 500, 10, f"ns-{tenants[0]}"))
        base.stop()
        print(f"baseline (no Workloads): ready {base_ready:.1f} s, RSS {base_rss:.0f} MiB, dry-run p50/p99 "
              f"{statistics.median(base_samples):.1f} / {pct(base_samples, 99):.1f} ms", file=sys.stderr)

        def create(i: int) -> None:
            tenant = tenants[i % t]
            body = {"apiVersion": f"{G}/{V}", "kind": "Workload",
                    "metadata": {"name": f"w{i}", "namespace": f"ns-{tenant}", "finalizers": ["entitle.dev/usage-record"]},
                    "spec": {"replicas": 1 + i % 3, "users": [f"u{i % 40}"], "features": ["sso"] if i % 3 == 0 else []}}
            api.create_namespaced_custom_object(G, V, f"ns-{tenant}", "workloads", body)

        began = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(n)))
        print(f"created {n:,} workloads over {t} tenants in {time.monotonic() - began:.0f} s", file=sys.stderr)

        rows = []
        core = client.CoreV1Api(config.new_client_from_config(kc))
        ledger = work / "ledger.db"
        for label in ("first start (empty ledger)", "restart (ledger present)"):
            events_before = len(core.list_event_for_all_namespaces().items)
            run = Run(work, kc, ledger, label.split()[0])
            while not listening(run.port):
                if run.proc.poll() is not None:
                    raise SystemExit("operator exited")
                time.sleep(0.02)
            priming = asyncio.run(reviews_while_priming(run.port, 20, f"ns-{tenants[0]}", run.started))
            ready_s = run.wait_ready()
            rss_ready = rss_mib(run.proc.pid)
            phases = primed_phases(run.log)
            print(f"{label}: ready after {ready_s:.1f} s, RSS {rss_ready:.0f} MiB; {phases}", file=sys.stderr)
            print(f"  reviews sent while priming: answered {min(w for _, w in priming):.1f}-"
                  f"{max(w for _, w in priming):.1f} s after start (ready at {ready_s:.1f} s), "
                  f"latency max {max(ms for ms, _ in priming):.0f} ms", file=sys.stderr)
            samples = asyncio.run(reviews(run.port, 500, 10, f"ns-{tenants[0]}"))
            # The first minute of steady state (a benchmark, not a test): status writes sampled
            # each second for the highest rate the apiserver saw from entitle.
            writes_max, backlog_max, last = 0.0, 0.0, metric(run.metrics_port, "entitle_status_writes_total")
            first_writes = last
            for _ in range(args.steady_seconds):
                time.sleep(1)
                now_w = metric(run.metrics_port, "entitle_status_writes_total")
                writes_max, last = max(writes_max, now_w - last), now_w
                backlog_max = max(backlog_max, metric(run.metrics_port, "entitle_status_writes_pending"))
            late = asyncio.run(reviews(run.port, 500, 10, f"ns-{tenants[0]}"))
            rss_steady = rss_mib(run.proc.pid)
            ticks = metric(run.metrics_port, "entitle_status_tick_seconds_count")
            tick_ms = 1000 * metric(run.metrics_port, "entitle_status_tick_seconds_sum") / max(1, ticks)
            events = len(core.list_event_for_all_namespaces().items) - events_before
            db = sqlite3.connect(str(ledger))
            records = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            db.close()
            print(f"  status writes: {last:,.0f} in the first minute and a bit (max {writes_max:.0f}/s, "
                  f"backlog max {backlog_max:,.0f}); dry-run after the minute p50/p99 "
                  f"{statistics.median(late):.1f} / {pct(late, 99):.1f} ms", file=sys.stderr)
            rows.append((label, ready_s, rss_ready, rss_steady, tick_ms, events, records,
                         statistics.median(samples), pct(samples, 99), writes_max,
                         statistics.median(late), pct(late, 99), max(ms for ms, _ in priming), phases))
            run.stop()
        print(f"\n{n:,} workloads, {t} tenants (2 cores; one operator process)")
        print("| start | ready | RSS ready | RSS +1 min | mean status tick | Events in the first minute | ledger records | "
              "status writes/s (max) | dry-run p50 / p99 once ready | dry-run p50 / p99 after 1 min | review sent while priming: answered after |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, ready_s, r1, r2, tick, ev, rec, p50, p99, wmax, l50, l99, pmax, _ in rows:
            print(f"| {label} | {ready_s:.1f} s | {r1:.0f} MiB | {r2:.0f} MiB | {tick:.1f} ms | {ev:,} | {rec:,} | "
                  f"{wmax:.0f} | {p50:.1f} / {p99:.1f} ms | {l50:.1f} / {l99:.1f} ms | {pmax / 1000:.1f} s |")
        print(f"| baseline (no Workloads, same run) | {base_ready:.1f} s | {base_rss:.0f} MiB | | | | | | "
              f"{statistics.median(base_samples):.1f} / {pct(base_samples, 99):.1f} ms | | |")
        print("\nwhere start-up time went (seconds, from the operator's 'state primed' log):")
        for row in rows:
            print(f"  {row[0]}: " + ", ".join(f"{k.removesuffix('Seconds')} {v:.2f}" for k, v in row[-1].items()))
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
