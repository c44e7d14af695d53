"""Metering throughput: ledger appends per second (SQLite and PostgreSQL; one record per
transaction, and the operator's group-committing writer under load), and `entitle usage
export` over 1,000,000 records (time and peak memory) against baselines measured in the same
run.

    python bench/metering.py [--records 1000000] [--big 10000000] [--postgres DSN] [--dir D]

Baselines: appending the same records to a plain file with one fsync per record; reading the
same JSONL with the standard json module and summing units per tenant naively (no sorting, no
dedup, no time integration); the export's Python reference engine (ENTITLE_EXPORT_ENGINE=python).
Without --postgres a server is started from the Debian package's binaries (tests/postgres.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from entitle.adapters.metering.ledger import Ledger  # noqa: E402


def make_records(n: int, seed: int = 1):
    rnd = random.Random(seed)
    base = 1_793_491_200  # 2026-11-01T00:00:00Z
    uids = [f"uid-{i}" for i in range(2000)]
    generation = {u: 0 for u in uids}
    for i in range(n):
        uid = rnd.choice(uids)
        generation[uid] += 1
        t = base + i * 2 + rnd.randint(0, 1)
        tenant = f"t{int(uid[4:]) % 50}"
        op = "created" if generation[uid] == 1 else ("deleted" if rnd.random() < 0.02 else "updated")
        if op == "deleted":
            generation[uid] = 0
        yield {"specversion": "1.0", "id": f"{uid}-{i}", "source": "bench", "type": "dev.entitle.workload.v1",
               "subject": tenant, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
               "data": {"tenant": tenant, "namespace": "ns", "name": uid, "uid": uid, "generation": generation[uid],
                        "operation": op, "instanceKind": "container", "replicas": rnd.randint(0, 5),
                        "units": rnd.randint(0, 5), "users": rnd.sample(["a", "b", "c", "d", "e"], 2),
                        "guests": [], "features": ["sso"] if rnd.random() < 0.5 else [], "licenses": ["l"]}}


NAIVE = r"""
import json, sys
totals = {}
with open(sys.argv[1]) as f:
    for line in f:
        r = json.loads(line)
        d = r["data"]
        totals[d["tenant"]] = totals.get(d["tenant"], 0) + d["units"]
print(len(totals))
"""


def export_argv(events: Path, out: Path) -> list[str]:
    return ["sh", "-c", f'"{sys.executable}" -m entitle.cli usage export --events "{events}" '
            f'--from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --no-progress > "{out}"']


def timed_subprocess(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of a child process."""
    wrapper = ("import resource, subprocess, sys, time; s = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); t = time.perf_counter() - s; "
               "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(p.returncode)")
    out = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, check=True)
    seconds, mib = out.stdout.split()
    return float(seconds), float(mib)


def bench_writer(make_ledger, label: str, count: int = 50_000, producers: int = 4) -> float:
    """The operator's path: many producers submit, one writer thread group-commits."""
    import threading

    from entitle.adapters.metering.ledger import LedgerWriter

    records = list(make_records(count, seed=3))
    writer = LedgerWriter(make_ledger())
    start = time.perf_counter()

    def produce(part: list) -> None:
        for r in part:
            writer.submit(r)

    threads = [threading.Thread(target=produce, args=(records[i::producers],)) for i in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.barrier().result(timeout=600)
    rate = count / (time.perf_counter() - start)
    writer.close()
    print(f"{label}: group commit under load ({producers} producers, {count:,} records): {rate:,.0f} records/s")
    return rate


def bench_postgres(dsn: str, count: int = 2000) -> None:
    from entitle.adapters.metering.postgres import PostgresLedger

    import psycopg

    def fresh() -> PostgresLedger:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("DROP TABLE IF EXISTS records, live, cursors")
        return PostgresLedger(dsn)

    records = list(make_records(count, seed=2))
    ledger = fresh()
    start = time.perf_counter()
    for r in records:
        ledger.append([r])
    single = count / (time.perf_counter() - start)
    ledger.close()
    print(f"postgres: one record per transaction (commit each): {single:,.0f} records/s")
    bench_writer(fresh, "postgres")


def bench_appends(directory: Path, count: int = 2000) -> None:
    records = list(make_records(count, seed=2))
    ledger = Ledger(directory / "append.db")
    start = time.perf_counter()
    for r in records:
        ledger.append([r])
    single = count / (time.perf_counter() - start)
    ledger2 = Ledger(directory / "append-batch.db")
    start = time.perf_counter()
    for i in range(0, count, 100):
        ledger2.append(records[i:i + 100])
    batched = count / (time.perf_counter() - start)
    path = directory / "plain.jsonl"
    start = time.perf_counter()
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
    plain = count / (time.perf_counter() - start)
    print(f"ledger appends/s, one record per transaction (fsync each): {single:,.0f}")
    print(f"ledger appends/s, 100 records per transaction:            {batched:,.0f}")
    print(f"baseline: plain file append + fsync per record:            {plain:,.0f}  "
          f"(ledger/plain = {single / plain:.2f}x)")
    counter = iter(range(1000))
    bench_writer(lambda: Ledger(directory / f"writer-{next(counter)}.db"), "sqlite")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--big", type=int, default=0, help="also export this many records (memory bound)")
    parser.add_argument("--postgres", default=None, help="DSN of a PostgreSQL database to bench appends on")
    parser.add_argument("--skip-appends", action="store_true")
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="entitle-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    if not args.skip_appends:
        bench_appends(directory)
        server = None
        dsn = args.postgres
        if dsn is None:
            sys.path.insert(0, str(ROOT))
            from tests.postgres import PostgresServer

            server = PostgresServer(directory / "postgres").start()
            dsn = server.new_database()
        try:
            bench_postgres(dsn)
        finally:
            if server is not None:
                server.stop()

    events = directory / "events.jsonl"
    with open(events, "w") as f:
        for r in make_records(args.records):
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    size_mib = events.stat().st_size / 2**20
    print(f"export input: {args.records:,} records, {size_mib:.0f} MiB JSONL")
    naive_s, naive_mib = timed_subprocess([sys.executable, "-c", NAIVE, str(events)])
    export_s, export_mib = timed_subprocess(export_argv(events, directory / "columnar.json"))
    os.environ["ENTITLE_EXPORT_ENGINE"] = "python"
    reference_s, reference_mib = timed_subprocess(export_argv(events, directory / "reference.json"))
    del os.environ["ENTITLE_EXPORT_ENGINE"]
    same = (directory / "reference.json").read_text() == (directory / "columnar.json").read_text()
    print(f"baseline (json.loads + naive sum):  {naive_s:6.1f} s  peak {naive_mib:6.0f} MiB")
    print(f"export, Python reference engine:    {reference_s:6.1f} s  peak {reference_mib:6.0f} MiB")
    print(f"entitle usage export (columnar):    {export_s:6.1f} s  peak {export_mib:6.0f} MiB  "
          f"({export_s / naive_s:.2f}x the naive pass, {reference_s / export_s:.1f}x faster than the reference, "
          f"{args.records / export_s:,.0f} records/s); same numbers as the reference: {same}")
    if args.big:
        big = directory / "big.jsonl"
        with open(big, "w") as f:
            for r in make_records(args.big, seed=5):
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        big_s, big_mib = timed_subprocess(export_argv(big, directory / "big.json"))
        print(f"export of {args.big:,} records ({big.stat().st_size / 2**30:.1f} GiB): {big_s:6.1f} s  "
              f"peak {big_mib:6.0f} MiB")
        big.unlink()


if __name__ == "__main__":
    main()
