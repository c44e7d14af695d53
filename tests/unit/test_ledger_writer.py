"""The ledger writer: appends leave the caller's thread, keep their order, group-commit, and a
barrier means durable."""

from __future__ import annotations

import sqlite3

from entitle.adapters.metering.ledger import Ledger, LedgerWriter


def rec(i: int) -> dict:
    return {"specversion": "1.0", "source": "test", "id": f"r{i}", "type": "t", "subject": "s",
            "time": "2026-11-27T00:00:00Z", "data": {"tenant": "acme", "i": i}}


def stored_ids(path) -> list[str]:
    db = sqlite3.connect(str(path))
    try:
        return [i for (i,) in db.execute("SELECT id FROM records ORDER BY seq")]
    finally:
        db.close()


def test_barrier_means_every_submitted_record_is_committed_in_order(tmp_path):
    added = []
    writer = LedgerWriter(Ledger(tmp_path / "l.db"), on_added=added.append)
    for i in range(500):
        writer.submit(rec(i))
    writer.submit(rec(3))  # a duplicate id is stored once
    writer.barrier().result(timeout=10)
    assert stored_ids(tmp_path / "l.db") == [f"r{i}" for i in range(500)]
    assert sum(added) == 500
    assert len(added) < 500, "records that queued meanwhile share a transaction"
    writer.close()


def test_barrier_with_nothing_pending_is_done_at_once(tmp_path):
    writer = LedgerWriter(Ledger(tmp_path / "l.db"))
    assert writer.barrier().done()
    writer.close()


def test_a_failing_append_is_retried_not_dropped(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    real, calls = ledger.append, []

    def flaky(records):
        calls.append(len(records))
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(records)

    ledger.append = flaky
    writer = LedgerWriter(ledger)
    writer.submit(rec(1))
    writer.barrier().result(timeout=10)
    assert stored_ids(tmp_path / "l.db") == ["r1"] and len(calls) == 2
    writer.close()


def test_the_live_row_keeps_the_newest_generation_whatever_the_append_order(tmp_path):
    """Two replicas share one ledger; the lagging one may append generation 2 after 3."""
    ledger = Ledger(tmp_path / "l.db")

    def workload_record(generation: int) -> dict:
        return {"specversion": "1.0", "source": "test", "id": f"w-{generation}", "type": "dev.entitle.workload.v1",
                "subject": "acme", "time": "2026-11-27T00:00:00Z",
                "data": {"uid": "u1", "generation": generation, "operation": "updated", "tenant": "acme"}}

    ledger.append([workload_record(3)])
    ledger.append([workload_record(2)])
    assert ledger.live("workload")["u1"]["data"]["generation"] == 3
    ledger.append([workload_record(4)])
    assert ledger.live("workload")["u1"]["data"]["generation"] == 4
