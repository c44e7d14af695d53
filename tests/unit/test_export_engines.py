"""The columnar export (DuckDB) equals the Python reference on random histories -- moves,
same-second churn, duplicates, out-of-order generations, licenses with and without a max,
amendments, windows cutting anywhere -- and declines (so the reference answers) on any input
it would read differently."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest

from entitle.adapters.metering.export import events_from_file, export
from entitle.adapters.metering.export_columnar import Declined, export_file

T0 = 1_793_491_200  # 2026-11-01T00:00:00Z


def iso(t: int, fraction: str = "", offset: str = "Z") -> str:
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        t += sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset


def history(seed: int) -> list[dict]:
    rnd = random.Random(seed)
    tenants = ["acme", "beta", "gamma"]
    out, gen, where = [], {}, {}
    t = T0 - 3600
    for i in range(rnd.randint(50, 400)):
        t += rnd.choice([0, 0, 1, 30, 600, 1800])
        kind = rnd.random()
        when = iso(t, rnd.choice(["", "", ".5", ".999999"]), rnd.choice(["Z", "Z", "+02:00", "-05:30"]))
        if kind < 0.1:
            tenant = rnd.choice(tenants)
            maximum = rnd.choice([None, 2, 5, 10])
            out.append({"specversion": "1.0", "source": "op", "id": f"l{i}", "type": "dev.entitle.license.v1",
                        "subject": tenant, "time": when,
                        "data": {"tenant": tenant, "name": rnd.choice(["base", "extra"]),
                                 "operation": rnd.choice(["activated", "updated", "expired", "deleted"]),
                                 "entitlement": {"instances": {"max": maximum, "burstExtra": 0}}}})
            continue
        if kind < 0.16 and kind >= 0.13:
            tenant = rnd.choice(tenants)
            hour = T0 + rnd.randint(-2, 12) * 3600
            out.append({"specversion": "1.0", "source": "op", "id": f"f{i}", "type": "dev.entitle.feature.v1",
                        "subject": tenant, "time": when,
                        "data": {"tenant": tenant, "feature": rnd.choice(["sso", "audit"]), "hour": iso(hour),
                                 "evaluations": rnd.randint(0, 50), "replica": "r0"}})
            continue
        if kind < 0.13:
            tenant = rnd.choice(tenants)
            start = T0 + rnd.randint(-2, 10) * 1800
            out.append({"specversion": "1.0", "source": "entitle.dev/amend", "id": f"a{i}",
                        "type": "dev.entitle.amendment.v1", "subject": tenant, "time": when,
                        "data": {"tenant": tenant, "meter": rnd.choice(["instance_hours", "seat_hours",
                                                                         "feature_workload_hours:sso"]),
                                 "from": iso(start), "to": iso(start + rnd.choice([0, 1800, 7200])),
                                 "quantity": rnd.choice([-1.5, 0.25, 3]), "reason": "r"}})
            continue
        uid = f"u{rnd.randint(0, 12)}"
        tenant = where.get(uid) or rnd.choice(tenants)
        g = gen.get(uid, 0) + rnd.choice([0, 1, 1, 1])
        gen[uid] = g
        op = rnd.choice(["created", "updated", "updated", "deleted", "movedOut", "movedIn"])
        if op == "movedIn":
            tenant = rnd.choice(tenants)
        where[uid] = tenant
        out.append({"specversion": "1.0", "source": rnd.choice(["op", "op", "other"]), "id": f"w{i}",
                    "type": "dev.entitle.workload.v1", "subject": tenant, "time": when,
                    "data": {"tenant": tenant, "uid": uid, "generation": g, "operation": op,
                             "units": rnd.randint(0, 6), "users": rnd.sample(["ann", "bob", "cy", "dee", "ann"], rnd.randint(0, 3)),
                             "features": rnd.sample(["sso", "audit"], rnd.randint(0, 2))}})
        if rnd.random() < 0.05:
            out.append(dict(out[-1]))          # a duplicate (same source and id)
        if rnd.random() < 0.05:
            # Another replica's copy, dated when it observed the change: later (the earliest counts).
            seen = int(datetime.fromisoformat(out[-1]["time"].replace("Z", "+00:00")).timestamp())
            out.append(dict(out[-1], time=iso(seen + rnd.choice([1, 7, 900]))))
    out.append({"specversion": "1.0", "source": "op", "id": "n1", "type": "dev.entitle.notice.v1", "subject": "acme",
                "time": iso(T0), "data": {"notice": "x"}})
    rnd.shuffle(out)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_columnar_export_equals_the_reference(seed, tmp_path):
    records = history(seed)
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rnd = random.Random(seed)
    for _ in range(3):
        start = T0 + rnd.randint(-3, 12) * 1200 + rnd.randint(0, 59)
        end = start + rnd.choice([0, 1, 3600, 5 * 3600, 40 * 3600])
        tenant = rnd.choice([None, None, "acme", "nobody"])
        reference = export(events_from_file(str(path), None), start, end, tenant)
        assert export_file(str(path), start, end, tenant) == reference, (start, end, tenant)


@pytest.mark.parametrize("odd", [
    {"units": 2.7}, {"units": True}, {"generation": "3"}, {"users": ["ann", 5]}, {"features": "sso"},
    {"uid": 12}, {"tenant": 5}, {"operation": "paused"},
])
def test_anything_the_reference_reads_differently_is_declined(odd, tmp_path):
    record = {"source": "op", "id": "1", "type": "dev.entitle.workload.v1", "subject": "acme",
              "time": "2026-11-01T00:00:00Z",
              "data": {"tenant": "acme", "uid": "u", "generation": 1, "operation": "created", "units": 1, **odd}}
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(Declined):
        export_file(str(path), T0, T0 + 3600, None)


@pytest.mark.parametrize("line", ['{"type": "dev.entitle.workload.v1", "data": "x"}', "{not json", "[1, 2]",
                                  json.dumps({"source": "s", "id": "1", "type": "dev.entitle.workload.v1",
                                              "time": "2026-02-30T00:00:00Z", "subject": "a",
                                              "data": {"uid": "u", "operation": "created"}})])
def test_unreadable_lines_are_declined(line, tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(Declined):
        export_file(str(path), T0, T0 + 3600, None)


def test_an_entry_replaced_exactly_at_the_window_start_counts_for_the_start_state(tmp_path):
    def w(i, t, op, units, features):
        return {"source": "op", "id": str(i), "type": "dev.entitle.workload.v1", "subject": "acme", "time": iso(t),
                "data": {"tenant": "acme", "uid": "u", "generation": 1, "operation": op, "units": units,
                         "users": ["ann"], "features": features}}

    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [w(1, T0 - 60, "created", 7, ["audit"]),
                                                          w(2, T0, "deleted", 7, ["audit"]),
                                                          w(3, T0 + 60, "created", 1, [])]))
    reference = export(events_from_file(str(path), None), T0, T0 + 3600, None)
    assert reference["acme"]["peak_instances"] == 7 and reference["acme"]["feature_workload_hours"] == {"audit": 0.0}
    assert export_file(str(path), T0, T0 + 3600, None) == reference
