"""The TenantEntitlement status (domain.tenant_view): a tenant's own entitlement, usage,
licenses and renewal -- pure, no server."""

from __future__ import annotations

from datetime import timedelta

from entitle.domain.tenant_view import tenant_view
from tests.unit.builders import NOW, apply, lic, state_with, wl


def _view(state, tenant="acme", now=NOW, previous=None):
    return tenant_view(tenant, state.entitlement(tenant, now), state.usage[tenant], {}, state.licenses_of(tenant),
                       {"base": 3}, now, previous or [])


def test_entitlement_usage_licenses_and_renewal():
    state = state_with(
        lic("base", instances={"max": 8}, seats={"max": 5}, notAfter="2027-03-01T00:00:00Z", edition="pro",
            features=[{"name": "sso"}, {"name": "ai", "trialEnds": "2026-11-01T00:00:00Z"}]),
        lic("addon", instances={"max": 2, "burst": {"extra": 2, "window": "1h"}}, notAfter="2027-01-01T00:00:00Z"),
        lic("later", instances={"max": 100}, notBefore="2027-06-01T00:00:00Z"))
    apply(state, wl("a", replicas=6, users=["ann", "bob"], features=["sso"]))
    view = _view(state)
    assert view["active"] and not view["inGrace"] and view["enforcement"] == "Enforce"
    assert view["instancesSummary"] == "6/10" and view["seatsSummary"] == "2/5"
    assert view["instances"]["burstExtra"] == 2 and view["instances"]["burstLeftSeconds"] == 3600
    assert view["renewal"] == "2027-01-01T00:00:00Z"           # the earliest notAfter in force
    phases = {entry["name"]: entry["phase"] for entry in view["licenses"]}
    assert phases == {"addon": "Active", "base": "Active", "later": "Pending"}
    # Today's peaks start the history; a later pass with less usage keeps the peak.
    assert view["history"] == [{"day": NOW.date().isoformat(), "instances": 6, "seats": 2}]
    apply(state, wl("a", replicas=1, users=["ann", "bob"], features=["sso"]))
    later = tenant_view("acme", state.entitlement("acme", NOW), state.usage["acme"], {}, state.licenses_of("acme"),
                        {}, NOW + timedelta(minutes=5), [], view["history"])
    assert later["instancesSummary"] == "1/10" and later["history"] == view["history"]
    assert next(e for e in view["licenses"] if e["name"] == "base")["revision"] == 3
    features = {f["name"]: f for f in view["features"]}
    assert features["ai"]["trialOver"] and features["sso"]["used"] == 1
    assert all(None not in entry.values() for entry in view["licenses"] + view["features"])
    assert {c["type"]: c["status"] for c in view["conditions"]} == {
        "Active": "True", "InGrace": "False", "OverCap": "False", "InBurst": "False", "UsageHigh": "False",
        "BurstBudgetUsedUp": "False"}


def test_grace_over_cap_and_no_license():
    state = state_with(lic("base", instances={"max": 2}, notAfter="2026-11-20T00:00:00Z", gracePeriod="30d"))
    apply(state, wl("a", replicas=2))
    state.set_license(lic("base", instances={"max": 1}, notAfter="2026-11-20T00:00:00Z", gracePeriod="30d"))
    view = _view(state)
    assert view["inGrace"] and view["instancesSummary"] == "2/1"
    conditions = {c["type"]: c for c in view["conditions"]}
    assert conditions["OverCap"]["status"] == "True" and "instances" in conditions["OverCap"]["message"]
    assert view["renewal"] == "2026-11-20T00:00:00Z"
    later = _view(state, now=NOW + timedelta(days=60), previous=view["conditions"])
    assert not later["active"] and later["renewal"] is None and later["instancesSummary"] == "2/-"
    assert {c["type"]: c["reason"] for c in later["conditions"]}["Active"] == "NoActiveLicense"
