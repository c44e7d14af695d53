"""The dashboard's model and pages without a server: what a tenant's TenantEntitlement,
denial Events and Licenses become, escaped and in words."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

from entitle.adapters.dashboard import render
from entitle.adapters.dashboard.model import Dashboard

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def status(tenant: str, used: int = 6, cap: int = 10, **extra) -> dict:
    return {"tenant": tenant, "active": True, "renewal": "2027-01-31T00:00:00Z",
            "instances": {"used": used, "max": cap, "burstExtra": 2, "burstWindow": "3d", "burstLeftSeconds": 7800.0},
            "seats": {"used": 2, "max": None},
            "licenses": [{"name": "base", "phase": "Active", "edition": "pro", "notAfter": "2027-01-31T00:00:00Z",
                          "graceEnds": "2027-02-07T00:00:00Z", "revision": 2}],
            "features": [{"name": "sso", "used": 2}, {"name": "audit", "requires": ["sso", "vault"], "limit": 3}],
            "history": [{"day": "2026-12-04", "instances": 8, "seats": 2}, {"day": "2026-12-05", "instances": 6}],
            "conditions": [{"type": "UsageHigh", "status": "True", "message": "at 80% of max or more on instances"}],
            **extra}


def tent(ns: str, st: dict, rv: str = "1") -> dict:
    return {"metadata": {"name": "entitlement", "namespace": ns, "resourceVersion": rv}, "status": st}


def denial(ns: str, reason: str, message: str, at: datetime) -> dict:
    return {"metadata": {"namespace": ns}, "type": "Warning", "reason": reason, "message": message,
            "source": {"component": "entitle"}, "lastTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "involvedObject": {"kind": "Workload", "name": "web", "namespace": ns}}


class Checker(HTMLParser):
    VOID = {"meta", "link", "br", "img", "input", "hr", "path", "rect", "line", "meter"}

    def __init__(self):
        super().__init__()
        self.stack, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (self.stack[-5:], tag)
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _check(html: str) -> str:
    c = Checker()
    c.feed(html)
    assert not c.stack, c.stack
    return " ".join(" ".join(c.text).split())


def test_a_tenant_page_says_usage_trend_renewal_denials_and_features_in_words():
    dash = Dashboard()
    dash.view_event("ADDED", tent("shop", status("acme")))
    dash.event_event("ADDED", denial("shop", "InstanceCapExceeded", "denied create: tenant acme: instances 6 + 5 "
                                     "would exceed 10", NOW - timedelta(minutes=5)), NOW)
    dash.event_event("ADDED", denial("shop", "Old", "denied create: old", NOW - timedelta(days=2)), NOW)
    dash.event_event("ADDED", {**denial("shop", "X", "a notice, not a denial", NOW), "type": "Normal"}, NOW)
    dash.license_event("ADDED", {"metadata": {"name": "ent"}, "spec": {"edition": "enterprise",
                                                                       "features": [{"name": "vault"}]}})
    text = _check(render.document("t", render.tenant_page(dash, "acme", NOW), dash.version))
    assert "6 of 10" in text and "2 (unlimited)" in text and "2h 10m" in text
    assert "Next renewal: 2027-01-31 (56 days)" in text
    assert "instances 6 + 5 would exceed 10" in text and "old" not in text.split("Denials")[1].split("Features")[0]
    assert "vault" in text and "not entitled · in edition enterprise" in text
    assert "UsageHigh" in text and "2026-12-04" in text


def test_the_index_lists_each_tenant_once_and_escapes_what_the_cluster_says():
    dash = Dashboard()
    dash.view_event("ADDED", tent("a1", status("acme"), "5"))
    dash.view_event("ADDED", tent("a2", status("acme", used=7), "9"))
    dash.view_event("ADDED", tent("b1", status("<script>alert(1)</script>")))
    html = render.index(dash, NOW)
    _check(html)
    assert html.count('href="/t/acme"') == 1 and "7 of 10" in html          # the newest written
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    dash.view_event("DELETED", tent("b1", {}))
    assert "alert" not in render.index(dash, NOW)
    assert render.tenant_page(dash, "nobody", NOW) is None


def test_with_a_ledger_every_tenant_has_its_daily_peaks(tmp_path):
    from entitle.adapters.dashboard.cli import ledger_days
    from entitle.adapters.metering.ledger import Ledger

    def rec(i, tenant, uid, op, at, units, users=()):
        return {"specversion": "1.0", "source": "s", "id": f"r{i}", "type": "dev.entitle.workload.v1",
                "subject": tenant, "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": {"tenant": tenant, "uid": uid, "generation": 1, "operation": op, "units": units,
                         "users": list(users), "features": []}}

    ledger = Ledger(tmp_path / "ledger.db")
    day = NOW.replace(hour=0)
    ledger.append([rec(1, "acme", "w1", "created", day - timedelta(days=2, hours=-3), 4, ["ann"]),
                   rec(2, "acme", "w2", "created", day - timedelta(days=1, hours=-1), 3),
                   rec(3, "acme", "w2", "deleted", day - timedelta(days=1, hours=-5), 3),
                   rec(4, "globex", "w3", "created", day - timedelta(days=40), 2)])
    ledger.close()
    days = ledger_days(str(tmp_path / "ledger.db"), NOW)
    acme = {e["day"]: (e.get("instances"), e.get("seats")) for e in days["acme"]}
    assert acme["2026-12-03"] == (4, 1) and acme["2026-12-04"] == (7, 1) and acme["2026-12-05"] == (4, 1)
    assert min(acme) >= "2026-11-01"
    # globex's workload, created 40 days ago and never deleted, still runs: within the window.
    assert {e.get("instances") for e in days["globex"]} == {2}
    dash = Dashboard(ledger_days=days)
    assert list(dash.tenants()) == ["acme", "globex"] and dash.days_of("acme") == days["acme"]
    page = render.tenant_page(dash, "acme", NOW)
    _check(page)
    assert "Daily peaks from the usage ledger" in page
