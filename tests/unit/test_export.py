"""``entitle usage export`` against totals computed by hand."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from entitle.adapters.metering import export as exporter
from entitle.adapters.metering.ledger import Ledger


def wl(id_, time, name, op, units, users=(), features=(), gen=1, tenant="acme", uid=None):
    return {"specversion": "1.0", "id": id_, "source": "test", "type": "dev.entitle.workload.v1", "subject": tenant,
            "time": time, "data": {"tenant": tenant, "namespace": "ns", "name": name, "uid": uid or f"uid-{name}",
                                   "generation": gen, "operation": op, "instanceKind": "container",
                                   "replicas": units, "units": units, "users": list(users), "guests": [],
                                   "features": list(features), "licenses": ["base"]}}


def lic(id_, time, maximum, op="activated", tenant="acme"):
    return {"specversion": "1.0", "id": id_, "source": "test", "type": "dev.entitle.license.v1", "subject": tenant,
            "time": time, "data": {"tenant": tenant, "name": "base", "operation": op,
                                   "entitlement": {"instances": {"max": maximum, "burstExtra": 0},
                                                   "seats": {"max": None, "burstExtra": 0}, "features": ["sso"]}}}


RECORDS = [
    lic("l1", "2026-11-01T00:00:00Z", 4),
    wl("a", "2026-11-01T00:00:00Z", "w1", "created", 2, ["a", "b"], ["sso"]),
    wl("b", "2026-11-01T01:00:00Z", "w2", "created", 4, ["b", "c"]),
    wl("c", "2026-11-01T02:00:00Z", "w1", "updated", 3, ["a", "b"], ["sso"], gen=2),
    wl("d", "2026-11-01T03:00:00Z", "w2", "deleted", 4, ["b", "c"]),
    # Another tenant, and a record after the period that must not count.
    wl("e", "2026-10-31T23:00:00Z", "x", "created", 1, ["z"], tenant="other"),
    wl("f", "2026-11-01T05:00:00Z", "w3", "created", 100),
]
EXPECTED = {
    "acme": {"instance_hours": 17.0, "peak_instances": 7, "overage_instance_hours": 5.0, "peak_seats": 3,
             "seat_hours": 9.0, "feature_workload_hours": {"sso": 3.5}},
    "other": {"instance_hours": 3.5, "peak_instances": 1, "overage_instance_hours": 0.0, "peak_seats": 1,
              "seat_hours": 3.5, "feature_workload_hours": {}},
}


def _run(path, *extra):
    return subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--events", str(path),
                           "--from", "2026-11-01T00:30:00Z", "--to", "2026-11-01T04:00:00Z", *extra],
                          capture_output=True, text=True)


def test_hand_computed_totals_with_shuffled_and_duplicated_lines(tmp_path):
    lines = [json.dumps(r) for r in RECORDS + RECORDS[1:4]]
    random.Random(7).shuffle(lines)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    proc = _run(path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"from": "2026-11-01T00:30:00Z", "to": "2026-11-01T04:00:00Z", "tenants": EXPECTED}


def test_csv_and_tenant_filter(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS))
    proc = _run(path, "--format", "csv", "--tenant", "acme")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "tenant,meter,quantity", "acme,instance_hours,17.0", "acme,peak_instances,7",
        "acme,overage_instance_hours,5.0", "acme,peak_seats,3", "acme,seat_hours,9.0",
        "acme,feature_workload_hours:sso,3.5"]


def test_ledger_input_gives_the_same_numbers(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.append(RECORDS)
    assert ledger.append(RECORDS) == 0   # deduplicated on (source, id)
    ledger.close()
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--ledger", str(tmp_path / "ledger.db"),
                           "--from", "2026-11-01T00:30:00Z", "--to", "2026-11-01T04:00:00Z"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tenants"] == EXPECTED


def test_external_sort_spills_runs_and_gives_the_same_result(monkeypatch):
    events = [exporter.to_event(r) for r in RECORDS * 3]
    random.Random(1).shuffle(events)
    whole = exporter.export(iter(events), exporter.parse_bound("--from", "2026-11-01T00:30:00Z"),
                            exporter.parse_bound("--to", "2026-11-01T04:00:00Z"), None)
    monkeypatch.setattr(exporter, "RUN_SIZE", 2)
    spilled = list(exporter.sorted_unique(iter(events), run_size=2))
    assert len(spilled) == len(RECORDS)
    assert whole == EXPECTED


def test_same_second_delete_and_create_make_no_false_peak(tmp_path):
    records = [wl("1", "2026-11-01T00:00:00Z", "a", "created", 5),
               wl("2", "2026-11-01T01:00:00Z", "b", "created", 5),
               wl("3", "2026-11-01T01:00:00Z", "a", "deleted", 5)]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in reversed(records)))
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--events", str(path),
                           "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-01T02:00:00Z"], capture_output=True, text=True)
    assert json.loads(proc.stdout)["tenants"]["acme"]["peak_instances"] == 5


@pytest.mark.parametrize("content,fragment", [
    ("{not json}\n", "events.jsonl:1: not valid JSON"),
    (json.dumps({"type": "dev.entitle.workload.v1", "id": "x", "time": "yesterday", "subject": "a", "data": {}}) + "\n",
     "events.jsonl:1: bad record 'x'"),
])
def test_bad_input_exits_2_naming_the_line(tmp_path, content, fragment):
    path = tmp_path / "events.jsonl"
    path.write_text(content)
    proc = _run(path)
    assert proc.returncode == 2
    assert fragment in proc.stderr


def test_several_replicas_ledgers_merge_with_shared_records_counted_once(tmp_path):
    """Each replica keeps its own ledger (the chart's StatefulSet); both saw most changes, each
    saw some alone (it was up while the other restarted). Export over both = export over all."""
    rnd = random.Random(7)
    first, second = Ledger(tmp_path / "ledger-0.db"), Ledger(tmp_path / "ledger-1.db")
    for record in RECORDS:
        where = rnd.choice(["both", "first", "second"]) if record["id"] not in ("l1",) else "both"
        if where in ("both", "first"):
            first.append([record])
        if where in ("both", "second"):
            second.append([record])
    first.close()
    second.close()
    events = tmp_path / "all.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    common = ["--from", "2026-11-01T00:00:00Z", "--to", "2026-11-01T04:00:00Z", "--format", "json"]
    merged = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--ledger",
                             str(tmp_path / "ledger-0.db"), "--ledger", str(tmp_path / "ledger-1.db"), *common],
                            capture_output=True, text=True)
    reference = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--events", str(events),
                                *common], capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout) == json.loads(reference.stdout)
