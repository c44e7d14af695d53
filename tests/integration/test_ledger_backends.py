"""Both ledger backends behave alike: SQLite (embedded default) and PostgreSQL (a real server
started by the ``postgres_server`` fixture). Same interface, same answers."""

from __future__ import annotations

import threading

import pytest

from entitle.adapters.metering.export import events_from_ledger, export
from entitle.adapters.metering.ledger import Ledger, LedgerWriter
from entitle.adapters.metering.backends import open_ledger, open_ledger_at
from entitle.adapters.metering.postgres import LedgerUnavailable, PostgresLedger
from entitle.domain.meters import parse_time


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_dsn")


def opened(location: str):
    return open_ledger_at(location)


def workload(uid: str, generation: int, op: str, time: str = "2026-11-01T00:00:00Z", units: int = 1,
             tenant: str = "acme") -> dict:
    return {"specversion": "1.0", "source": "entitle.dev/operator", "id": f"{uid}-{generation}-{op}",
            "type": "dev.entitle.workload.v1", "subject": tenant, "time": time,
            "data": {"tenant": tenant, "namespace": "ns", "name": uid, "uid": uid, "generation": generation,
                     "operation": op, "instanceKind": "container", "replicas": units, "units": units,
                     "users": ["ann"], "guests": [], "features": ["sso"], "licenses": []}}


def test_append_is_deduplicated_on_source_and_id(location):
    ledger = opened(location)
    assert ledger.append([workload("a", 1, "created"), workload("b", 1, "created"), workload("a", 1, "created")]) == 2
    assert ledger.append([workload("a", 1, "created")]) == 0
    assert ledger.count() == 2 and ledger.last_seq() >= 2
    assert [r["id"] for _, r in ledger.read()] == ["a-1-created", "b-1-created"]
    assert ledger.has("entitle.dev/operator", "a-1-created") and not ledger.has("entitle.dev/operator", "zz")
    assert [r["id"] for _, r in ledger.read(ledger.read()[0][0])] == ["b-1-created"]
    ledger.close()


def test_live_rows_keep_the_newest_generation_and_go_with_a_deletion(location):
    ledger = opened(location)
    ledger.append([workload("a", 2, "updated"), workload("a", 1, "created"), workload("b", 1, "created")])
    live = ledger.live("workload")
    assert set(live) == {"a", "b"} and live["a"]["data"]["generation"] == 2
    ledger.append([workload("b", 1, "deleted")])
    assert set(ledger.live("workload")) == {"a"}
    ledger.forget_live("workload", "a")
    assert ledger.live("workload") == {}
    ledger.close()


def test_cursors(location):
    ledger = opened(location)
    assert ledger.cursor("jsonl:x") == 0
    ledger.set_cursor("jsonl:x", 5)
    assert ledger.cursor("jsonl:x") == 5 and ledger.cursors() == {"jsonl:x": 5}
    ledger.close()


def test_the_writer_group_commits_on_either_backend(location):
    writer = LedgerWriter(opened(location))
    for i in range(300):
        writer.submit(workload(f"w{i}", 1, "created"))
    writer.barrier().result(timeout=30)
    assert [r["id"] for _, r in writer.ledger.read()] == [f"w{i}-1-created" for i in range(300)]
    writer.close()


def test_export_reads_either_backend_to_the_same_numbers(location, tmp_path):
    records = [workload("a", 1, "created", "2026-11-01T00:00:00Z", units=2),
               workload("b", 1, "created", "2026-11-01T00:30:00Z"),
               workload("a", 1, "deleted", "2026-11-01T01:00:00Z", units=2)]
    ledger = opened(location)
    ledger.append(records)
    ledger.close()
    start = parse_time("2026-11-01T00:00:00Z")
    end = start + 7200
    tenants = export(events_from_ledger(location, None), start, end, None)
    assert tenants["acme"]["instance_hours"] == 3.5 and tenants["acme"]["peak_instances"] == 3
    assert tenants["acme"]["feature_workload_hours"] == {"sso": 2.5}  # workloads, not units


def test_postgres_writers_in_parallel_never_let_a_reader_skip_a_record(postgres_dsn):
    """Sinks read ``seq > cursor``: with several replicas appending to one database, a number
    must never become visible after a larger one was read (the append lock's reason)."""
    writers = [PostgresLedger(postgres_dsn) for _ in range(3)]
    reader = PostgresLedger(postgres_dsn)
    done = threading.Event()
    delivered: list[str] = []

    def write(n: int) -> None:
        for batch in range(40):
            writers[n].append([workload(f"p{n}-{batch}-{i}", 1, "created") for i in range(25)])

    def pump() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            rows = reader.read(cursor, 97)
            for seq, record in rows:
                delivered.append(record["id"])
                cursor = seq
            if finished and not rows:
                return

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    pumper = threading.Thread(target=pump)
    pumper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    pumper.join(60)
    assert len(delivered) == len(set(delivered)) == 3 * 40 * 25


def test_an_unreachable_postgres_is_a_clear_error_without_the_password():
    with pytest.raises(LedgerUnavailable) as caught:
        PostgresLedger("postgresql://entitle:s3cret@127.0.0.1:1/entitle", connect_timeout=2)
    assert "s3cret" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_sqlite_stays_the_default(tmp_path):
    assert isinstance(open_ledger(tmp_path / "l.db"), Ledger)
