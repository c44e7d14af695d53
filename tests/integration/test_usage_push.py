"""``entitle usage push | amend | reconcile`` against local billing APIs written to each
vendor's API reference (tests/billing_servers.py) and Stripe's own stripe-mock: a repeated
push changes no downstream total, a late record makes exactly one adjustment, an outage or a
kill loses nothing, amendments reach export and push, reconcile finds what a sink missed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from entitle.adapters.metering.ledger import Ledger
from entitle.cli import main
from entitle.domain.meters import parse_time
from tests.billing_servers import SERVERS, TOKEN
from tests.conftest import ROOT, free_port, wait_for

H0 = "2026-11-02T00:00:00Z"
T0 = parse_time(H0)
END = "2026-11-02T03:00:00Z"


def at(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + seconds))


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


def additive(server, meter: str) -> float:
    return server.totals().get(("cus_acme", meter), 0.0)


def assert_matches_export(server, ledger: str) -> None:
    totals = export_totals(ledger)
    for meter in ("instance_hours", "seat_hours"):
        assert additive(server, meter) == pytest.approx(totals[meter], abs=1e-5), meter
    assert additive(server, "feature_workload_hours:sso") == pytest.approx(totals["feature_workload_hours"]["sso"],
                                                                          abs=1e-5)


def test_a_push_delivers_hourly_quantities_and_a_repeat_changes_nothing(server, ledger, customers, tmp_path, capsys):
    assert push(server.kind, server.url, ledger, customers) == 0
    assert_matches_export(server, ledger)
    assert server.hourly("cus_acme", "instance_hours") == {T0: 2.5, T0 + 3600: 4.0, T0 + 7200: 4.0}
    assert not any(c == "zeta" or c.startswith("zeta") for c, _ in server.totals()), "a tenant without a customer id"
    assert "tenant zeta: not in --customers, skipped" in capsys.readouterr().err
    before, sent = server.totals(), server.requests
    # Same window again: the receipts say everything is acknowledged -- nothing is sent.
    assert push(server.kind, server.url, ledger, customers) == 0
    assert server.requests == sent and server.totals() == before
    # Receipts lost (a fresh state file): everything goes again under the same keys, and
    # the vendor's own dedup rule keeps its totals unchanged.
    assert push(server.kind, server.url, ledger, customers, "--state", str(tmp_path / "fresh.db")) == 0
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
    assert any(e["meter"] == "instance_hours" and e["hour"] == T0 and e["value"] == pytest.approx(1 / 6, abs=1e-6)
               for e in added)
    assert_matches_export(server, ledger)
    sent = server.requests
    assert push(server.kind, server.url, ledger, customers) == 0 and server.requests == sent


def test_a_lower_correction_reaches_stripe_as_cancel_and_new_event(ledger, customers):
    stripe = SERVERS["stripe"]()
    try:
        assert push("stripe", stripe.url, ledger, customers) == 0
        # A late deletion: b went away at 02:30 (its update at 01:30 stays; generation 2).
        late = Ledger(ledger)
        late.append([workload("b", 2, "deleted", at(9000), units=3, users=("bob", "cy"))])
        late.close()
        assert push("stripe", stripe.url, ledger, customers) == 0
        cancelled = [e for e in stripe.events.values() if e.get("cancelled")]
        assert cancelled and all(e["hour"] == T0 + 7200 for e in cancelled)
        assert_matches_export(stripe, ledger)
    finally:
        stripe.close()


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
        assert push("stripe", f"http://127.0.0.1:{port}", ledger, customers) == 0
        late = Ledger(ledger)
        late.append([workload("b", 2, "deleted", at(9000), units=3, users=("bob", "cy"))])
        late.close()
        # A lower hour: cancel adjustments and new events, all valid for Stripe.
        assert push("stripe", f"http://127.0.0.1:{port}", ledger, customers) == 0
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
