"""``entitle usage push | amend | reconcile | dismiss`` against local billing APIs that behave as
each vendor documents (tests/billing_servers.py: Stripe's whole numbers, identifier and cancel
windows and 35-day timestamps; Lago's 422 on a repeated transaction_id; OpenMeter's dedupe only
when configured) and Stripe's own stripe-mock: totals equal the export (to the second for
Stripe), a repeated push changes nothing downstream, a late record -- a day later too -- makes
exactly one signed adjustment, a refused meter blocks no other and a rerun delivers it once it
exists, an outage or a kill loses nothing, two installations in one account never collide."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from entitle.adapters.metering.ledger import Ledger
from entitle.cli import main
from tests.billing_servers import SERVERS, TOKEN
from tests.conftest import ROOT, free_port, wait_for

def _fmt(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# A window of whole hours that are over, recent enough for Stripe's 35 days.
T0 = int(time.time()) // 3600 * 3600 - 12 * 3600
H0 = _fmt(T0)
END = _fmt(T0 + 3 * 3600)


def at(seconds: int) -> str:
    return _fmt(T0 + seconds)


def workload(uid: str, generation: int, op: str, when: str, units: int = 1, users=("ann",), features=("sso",),
             tenant: str = "acme") -> dict:
    return {"specversion": "1.0", "source": "entitle.dev/operator", "id": f"{uid}-{generation}-{op}",
            "type": "dev.entitle.workload.v1", "subject": tenant, "time": when,
            "data": {"tenant": tenant, "namespace": "ns", "name": uid, "uid": uid, "generation": generation,
                     "operation": op, "instanceKind": "container", "replicas": units, "units": units,
                     "users": list(users), "guests": [], "features": list(features), "licenses": []}}


BASE = [workload("a", 1, "created", at(-600), units=2),                 # running before the window
        workload("b", 1, "created", at(1800), users=("bob",)),
        workload("b", 2, "updated", at(5400), units=3, users=("bob", "cy")),
        workload("z", 1, "created", at(60), tenant="zeta"),              # no customer id
        workload("a", 1, "deleted", at(9000), units=2)]


@pytest.fixture
def ledger(tmp_path) -> str:
    path = tmp_path / "ledger.db"
    store = Ledger(path)
    store.append(BASE)
    store.close()
    return str(path)


@pytest.fixture
def customers(tmp_path) -> str:
    path = tmp_path / "customers.yaml"
    path.write_text("acme: cus_acme\n")
    return str(path)


@pytest.fixture(params=sorted(SERVERS))
def server(request):
    s = SERVERS[request.param]()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("ENTITLE_PUSH_TOKEN", TOKEN)


def push(server_kind: str, url: str, ledger: str, customers: str, *extra: str, start: str = H0, end: str = END) -> int:
    return main(["usage", "push", "--to", server_kind, "--ledger", ledger, "--from", start, "--to", end,
                 "--customers", customers, "--endpoint", url, "--no-progress", *extra])


def export_totals(ledger: str, start: str = H0, end: str = END) -> dict:
    out = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--ledger", ledger, "--from", start, "--to", end,
                          "--tenant", "acme"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["tenants"]["acme"]


def additive(server, meter: str, customer: str = "cus_acme") -> float:
    """What the vendor holds for an hours meter, in hours (Stripe's is in whole seconds)."""
    if server.kind == "stripe":
        name = meter.replace("_hours", "_seconds")
        value = server.totals().get((customer, name), 0)
        assert value == int(value)
        return value / 3600
    return server.totals().get((customer, meter), 0.0)


def assert_matches_export(server, ledger: str, start: str = H0, end: str = END) -> None:
    """Vendor totals equal the export: to the second for Stripe, to 6 decimal hours elsewhere."""
    totals = export_totals(ledger, start, end)
    tolerance = 0.5 / 3600 if server.kind == "stripe" else 1e-5
    for meter in ("instance_hours", "seat_hours"):
        assert additive(server, meter) == pytest.approx(totals[meter], abs=tolerance), meter
    assert additive(server, "feature_workload_hours:sso") == pytest.approx(totals["feature_workload_hours"]["sso"],
                                                                          abs=tolerance)


def test_a_push_delivers_hourly_quantities_and_a_repeat_changes_nothing(server, ledger, customers, tmp_path, capsys):
    assert push(server.kind, server.url, ledger, customers) == 0
    assert_matches_export(server, ledger)
    if server.kind == "stripe":
        assert server.hourly("cus_acme", "instance_seconds") == {T0: 9000, T0 + 3600: 14400, T0 + 7200: 14400}
    else:
        assert server.hourly("cus_acme", "instance_hours") == {T0: 2.5, T0 + 3600: 4.0, T0 + 7200: 4.0}
    assert not any(c == "zeta" or c.startswith("zeta") for c, _ in server.totals()), "a tenant without a customer id"
    err = capsys.readouterr().err
    assert "tenant zeta: not in --customers, skipped" in err
    installation = err.split("installation ", 1)[1].split()[0]
    before, sent = server.totals(), server.requests
    # Same window again: the receipts say everything is acknowledged -- nothing is sent.
    assert push(server.kind, server.url, ledger, customers) == 0
    assert server.requests <= sent + 2 and server.totals() == before      # (the meter listing at most)
    # Receipts lost (a fresh state file) with the installation pinned: everything goes again under
    # the same keys, and the vendor's own rule keeps its totals (Stripe: the identifier within
    # 24 h; Lago: its 422 on known transaction_ids, read as acknowledged; OpenMeter: dedupe).
    assert push(server.kind, server.url, ledger, customers, "--state", str(tmp_path / "fresh.db"),
                "--installation", installation) == 0
    assert server.requests > sent and server.totals() == before
    if server.kind == "openmeter":
        assert server.totals()[("cus_acme", "peak_instances")] == 5 and server.totals()[("cus_acme", "peak_seats")] == 3


def test_a_late_record_makes_exactly_one_adjustment(server, ledger, customers):
    assert push(server.kind, server.url, ledger, customers) == 0
    before = len(server.events)
    late = Ledger(ledger)   # a Workload that ran 10 minutes in the first hour, recorded late
    late.append([workload("c", 1, "created", at(600), users=(), features=()),
                 workload("c", 1, "deleted", at(1200), users=(), features=())])
    late.close()
    assert push(server.kind, server.url, ledger, customers) == 0
    added = [e for e in list(server.events.values())[before:]]
    assert len(added) == 1, added     # (the hour's peak, 3, did not rise: c ran before b)
    meter, value = ("instance_seconds", 600) if server.kind == "stripe" else ("instance_hours", 1 / 6)
    assert any(e["meter"] == meter and e["hour"] == T0 and e["value"] == pytest.approx(value, abs=1e-6) for e in added)
    assert_matches_export(server, ledger)
    sent = server.requests
    assert push(server.kind, server.url, ledger, customers) == 0 and server.requests == sent


def test_a_lower_correction_a_day_later_lands_exactly_as_a_negative_delta(server, ledger, customers):
    """A day later Stripe would refuse a cancel (24 h) and takes the identifier again: the
    correction goes as a signed delta under a new key, and lands exactly."""
    assert push(server.kind, server.url, ledger, customers) == 0
    real_now = server.now
    server.now = lambda: real_now() + 25 * 3600
    # A late deletion: b went away at 02:30 (its update at 01:30 stays; generation 2).
    late = Ledger(ledger)
    late.append([workload("b", 2, "deleted", at(9000), units=3, users=("bob", "cy"))])
    late.close()
    assert push(server.kind, server.url, ledger, customers) == 0
    negative = [e for e in server.events.values() if e["value"] < 0]
    assert negative and all(e["hour"] == T0 + 7200 for e in negative)
    assert not any(e.get("cancelled") for e in server.events.values())
    assert_matches_export(server, ledger)


def test_an_outage_exits_1_and_a_rerun_sends_what_was_not_acknowledged(server, ledger, customers):
    server.fail_next(10_000)
    assert push(server.kind, server.url, ledger, customers) == 1
    assert server.totals() == {}
    server.fail_next(0)
    assert push(server.kind, server.url, ledger, customers) == 0
    assert_matches_export(server, ledger)


def test_a_push_killed_after_sending_resends_the_same_keys_first(server, ledger, customers, monkeypatch):
    from entitle.adapters.metering.push.receipts import ReceiptStore

    real = ReceiptStore.mark_acked

    def killed(self, destination, keys):
        raise SystemExit("killed between the vendor's answer and the receipt")

    monkeypatch.setattr(ReceiptStore, "mark_acked", killed)
    with pytest.raises(SystemExit):
        push(server.kind, server.url, ledger, customers)
    monkeypatch.setattr(ReceiptStore, "mark_acked", real)
    held = server.totals()
    assert held     # the vendor got the first batch
    # Meanwhile a late record: it must come as an adjustment, not vanish under a key the
    # vendor already holds.
    late = Ledger(ledger)
    late.append([workload("c", 1, "created", at(600), users=(), features=()),
                 workload("c", 1, "deleted", at(1200), users=(), features=())])
    late.close()
    assert push(server.kind, server.url, ledger, customers) == 0
    assert_matches_export(server, ledger)


def test_stripe_mock_accepts_every_request_of_a_push(ledger, customers, tmp_path):
    """Stripe's own mock validates each request against Stripe's OpenAPI document."""
    binary = subprocess.run(["bash", str(ROOT / "hack/build-stripe-mock.sh")], capture_output=True, text=True,
                            check=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen([binary, "-http-port", str(port), "-https-port", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=30, message="stripe-mock to listen")
        # (stripe-mock's meter list is a fixture: the meter check is skipped against it.)
        url = f"http://127.0.0.1:{port}"
        assert push("stripe", url, ledger, customers, "--skip-meter-check") == 0
        late = Ledger(ledger)
        late.append([workload("b", 2, "deleted", at(9000), units=3, users=("bob", "cy"))])
        late.close()
        # A lower hour: a negative whole-number delta, valid for Stripe.
        assert push("stripe", url, ledger, customers, "--skip-meter-check") == 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_amendments_reach_export_and_push_and_are_stored_once(server, ledger, customers):
    assert push(server.kind, server.url, ledger, customers) == 0
    before = export_totals(ledger)["instance_hours"]
    argv = ["usage", "amend", "--ledger", ledger, "--tenant", "acme", "--meter", "instance_hours",
            "--from", at(3600), "--to", at(7200), "--quantity", "-0.5", "--reason", "outage credit INC-42"]
    assert main(argv) == 0 and main(argv) == 0
    amendments = [r for _, r in Ledger(ledger).read() if r["type"] == "dev.entitle.amendment.v1"]
    assert len(amendments) == 1 and amendments[0]["data"]["reason"] == "outage credit INC-42"
    assert export_totals(ledger)["instance_hours"] == pytest.approx(before - 0.5)
    assert push(server.kind, server.url, ledger, customers) == 0
    assert_matches_export(server, ledger)


def test_amend_refuses_what_cannot_be_amended(ledger, capsys):
    base = ["usage", "amend", "--ledger", ledger, "--tenant", "acme", "--from", H0, "--to", END, "--reason", "x"]
    assert main([*base, "--meter", "peak_seats", "--quantity", "1"]) == 2
    assert main([*base, "--meter", "instance_hours", "--quantity", "nan"]) == 2
    assert main(["usage", "amend", "--ledger", ledger + ".typo", "--tenant", "acme", "--meter", "seat_hours",
                 "--from", H0, "--to", END, "--quantity", "1", "--reason", "x"]) == 2
    assert "only additive meters" in capsys.readouterr().err


def test_reconcile_finds_a_sink_that_missed_records_and_an_unpushed_late_record(ledger, customers, capsys):
    lago = SERVERS["lago"]()
    try:
        store = Ledger(ledger)
        store.set_cursor("jsonl:/var/lib/entitle/usage.jsonl", store.last_seq() - 1)   # one record not delivered
        store.close()
        reconcile = ["usage", "reconcile", "--ledger", ledger, "--from", H0, "--to", END, "--customers", customers]
        assert main(reconcile) == 1
        assert "jsonl:/var/lib/entitle/usage.jsonl  tenant acme" in capsys.readouterr().out
        store = Ledger(ledger)
        store.set_cursor("jsonl:/var/lib/entitle/usage.jsonl", store.last_seq())
        store.close()
        assert push("lago", lago.url, ledger, customers) == 0
        assert main(reconcile) == 0
        late = Ledger(ledger)
        late.append([workload("c", 1, "created", at(600), users=(), features=())])
        late.set_cursor("jsonl:/var/lib/entitle/usage.jsonl", late.last_seq())
        late.close()
        assert main(reconcile) == 1
        assert "lago:" in capsys.readouterr().out
        assert push("lago", lago.url, ledger, customers) == 0
        assert main(reconcile) == 0
    finally:
        lago.close()


def test_bad_input_exits_2(ledger, customers, tmp_path, monkeypatch, capsys):
    assert push("lago", "http://127.0.0.1:1", ledger, customers, start="2026-11-02T00:30:00Z") == 2
    assert "whole UTC hours" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    assert push("lago", "http://127.0.0.1:1", ledger, str(bad)) == 2
    monkeypatch.delenv("ENTITLE_PUSH_TOKEN")
    assert push("lago", "http://127.0.0.1:1", ledger, customers) == 2
    assert "ENTITLE_PUSH_TOKEN" in capsys.readouterr().err
    assert main(["usage", "push", "--to", "lago", "--events", str(tmp_path / "x.jsonl"), "--from", H0, "--to", END,
                 "--customers", customers]) == 2


def test_push_keeps_its_receipts_in_a_postgres_ledger(postgres_dsn, customers):
    from entitle.adapters.metering.postgres import PostgresLedger

    store = PostgresLedger(postgres_dsn)
    store.append(BASE)
    store.close()
    server = SERVERS["openmeter"]()
    try:
        assert push("openmeter", server.url, postgres_dsn, customers) == 0
        sent = server.requests
        assert push("openmeter", server.url, postgres_dsn, customers) == 0 and server.requests == sent
        assert_matches_export(server, postgres_dsn)
    finally:
        server.close()


def test_last_hours_is_the_cron_window(ledger, customers, capsys):
    lago = SERVERS["lago"]()
    try:
        argv = ["usage", "push", "--to", "lago", "--ledger", ledger, "--customers", customers, "--endpoint", lago.url]
        assert main([*argv, "--last-hours", "2"]) == 0       # b (3 units) still runs: its last two hours
        now_hour = int(time.time()) // 3600 * 3600
        assert lago.hourly("cus_acme", "instance_hours") in (
            {now_hour - 7200: 3.0, now_hour - 3600: 3.0}, {now_hour - 10800: 3.0, now_hour - 7200: 3.0})
        assert main([*argv, "--last-hours", "0"]) == 2
        assert main([*argv, "--last-hours", "2", "--from", H0]) == 2
    finally:
        lago.close()


def stream(seed: int, tenant: str = "acme", hours: int = 6, prefix: str = "") -> list[dict]:
    """A six-hour churn: workloads created, scaled, given users and features and deleted at
    arbitrary seconds."""
    import random

    rnd = random.Random(seed)
    out, live, t = [], {}, T0 - 900
    for i in range(400):
        t += rnd.randint(1, hours * 3600 // 400 * 2)
        if t >= T0 + hours * 3600:
            break
        if live and rnd.random() < 0.25:
            uid = rnd.choice(sorted(live))
            gen, units, users, features = live.pop(uid)
            out.append(workload(uid, gen, "deleted", _fmt(t), units, users, features, tenant))
            continue
        uid = f"{prefix}w{rnd.randint(0, 25)}"
        gen = live[uid][0] + 1 if uid in live else 1
        units = rnd.randint(0, 7)
        users = tuple(rnd.sample(["ann", "bob", "cy", "dee"], rnd.randint(0, 3)))
        features = tuple(rnd.sample(["sso", "audit"], rnd.randint(0, 2)))
        live[uid] = (gen, units, users, features)
        out.append(workload(uid, gen, "created" if gen == 1 else "updated", _fmt(t), units, users, features, tenant))
    return out


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_a_six_hour_stream_delivers_the_export_to_the_second(kind, customers, tmp_path):
    path = tmp_path / "six.db"
    store = Ledger(path)
    store.append(stream(7))
    store.close()
    end = _fmt(T0 + 6 * 3600)
    server = SERVERS[kind]()
    try:
        assert push(kind, server.url, str(path), customers, end=end) == 0
        totals = export_totals(str(path), H0, end)
        if kind == "stripe":
            for meter in ("instance", "seat", "overage_instance"):
                held = server.totals().get(("cus_acme", f"{meter}_seconds"), 0)
                assert held == round(totals[f"{meter}_hours"] * 3600), meter      # to the second
            for feature, hours in totals["feature_workload_hours"].items():
                assert server.totals().get(("cus_acme", f"feature_workload_seconds:{feature}"), 0) == round(hours * 3600)
            assert all(e["value"] == int(e["value"]) for e in server.events.values())
            assert server.overlapping == 0       # one call at a time per customer and meter
        else:
            assert_matches_export(server, str(path), H0, end)
    finally:
        server.close()


def test_a_meter_the_vendor_lacks_is_refused_and_holds_back_nothing_else(server, ledger, customers, capsys):
    meter = "feature_workload_seconds:sso" if server.kind == "stripe" else "feature_workload_hours:sso"
    server.meters.discard(meter)
    assert push(server.kind, server.url, ledger, customers) == 1
    err = capsys.readouterr().err
    assert "refused: tenant acme " + meter in err and "has no meter" in err
    # Everything else arrived; nothing was taken and dropped (a vendor bills nothing for it).
    totals = export_totals(ledger)
    assert additive(server, "instance_hours") == pytest.approx(totals["instance_hours"], abs=1e-3)
    assert additive(server, "seat_hours") == pytest.approx(totals["seat_hours"], abs=1e-3)
    assert not server.dropped and ("cus_acme", meter) not in server.totals()
    reconcile = ["usage", "reconcile", "--ledger", ledger, "--from", H0, "--to", END, "--customers", customers]
    assert main(reconcile) == 1
    assert "REFUSED" in capsys.readouterr().out
    # The meter is created: the next push delivers what waited for it, and only that.
    server.meters.add(meter)
    before = len(server.events)
    assert push(server.kind, server.url, ledger, customers) == 0
    assert len(server.events) - before == len({e["hour"] for e in server.events.values() if e["meter"] == meter})
    assert_matches_export(server, ledger)
    assert main(reconcile) == 0


def test_two_installations_in_one_account_never_collide(server, customers, tmp_path):
    """Two clusters of one customer, each with a tenant acme, push into one account: both count."""
    paths = []
    for n in range(2):
        path = tmp_path / f"cluster{n}.db"
        store = Ledger(path)
        store.append(stream(100 + n, prefix=f"c{n}-"))
        store.close()
        paths.append(str(path))
    end = _fmt(T0 + 6 * 3600)
    for path in paths:
        assert push(server.kind, server.url, path, customers, end=end) == 0
    both = [export_totals(p, H0, end) for p in paths]
    tolerance = 1.5 / 3600 if server.kind == "stripe" else 2e-5
    for meter in ("instance_hours", "seat_hours"):
        assert additive(server, meter) == pytest.approx(sum(t[meter] for t in both), abs=tolerance)


def test_stripe_hours_older_than_35_days_are_caught_before_sending(ledger, customers, capsys):
    stripe = SERVERS["stripe"]()
    try:
        old = T0 - 40 * 86400
        late = Ledger(ledger)
        late.append([workload("old", 1, "created", _fmt(old), units=1), workload("old", 1, "deleted", _fmt(old + 3600))])
        late.close()
        assert push("stripe", stripe.url, ledger, customers, start=_fmt(old), end=END) == 1
        err = capsys.readouterr().err
        assert "past 35 days only" in err and "entitle usage dismiss --key" in err
        assert_matches_export(stripe, ledger, _fmt(old + 3600), END)     # every other hour went
        assert all(e["hour"] > old for e in stripe.events.values())
        import re

        keys = sorted(set(re.findall(r"entitle usage dismiss --key (\S+)`", err)))
        assert len(keys) == 3                                  # instance, seat and sso seconds of that hour
        for key in keys:
            dismiss = ["usage", "dismiss", "--ledger", ledger, "--to", "stripe", "--endpoint", stripe.url, "--key", key]
            assert main([*dismiss, "--reason", "credit note CN-7 in Stripe"]) == 0
        assert main([*dismiss, "--reason", "again"]) == 1       # nothing refused by that key any more
        assert push("stripe", stripe.url, ledger, customers, start=_fmt(old), end=END) == 0
    finally:
        stripe.close()


def test_a_rate_limit_is_waited_out(server, ledger, customers):
    server.limit_next(3)
    assert push(server.kind, server.url, ledger, customers) == 0
    assert_matches_export(server, ledger)


def test_openmeter_without_dedupe_is_asked_before_a_killed_push_resends(ledger, customers, monkeypatch):
    from entitle.adapters.metering.push.receipts import ReceiptStore
    from tests.billing_servers import OpenMeterServer

    server = OpenMeterServer(dedupe=False)
    try:
        real = ReceiptStore.mark_acked
        monkeypatch.setattr(ReceiptStore, "mark_acked", lambda self, d, keys: (_ for _ in ()).throw(SystemExit("killed")))
        with pytest.raises(SystemExit):
            push("openmeter", server.url, ledger, customers)
        monkeypatch.setattr(ReceiptStore, "mark_acked", real)
        assert server.events
        assert push("openmeter", server.url, ledger, customers) == 0
        assert_matches_export(server, ledger)           # nothing counted twice
    finally:
        server.close()
