"""Entitlements as flags (pure), the token reviewer's cache, and pseudonymization."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from entitle.adapters.kube.token_review import TokenReviewer, TokenReviewUnavailable
from entitle.domain.entitlement import Entitlement, FeatureEntitlement, PoolEntitlement
from entitle.domain.flags import FlagNotFound, evaluate, evaluate_all
from entitle.domain.privacy import MARK, pseudonym, pseudonymize_record
from entitle.domain.usage import TenantUsage

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
ENT = Entitlement("acme", ("base",), PoolEntitlement(10), PoolEntitlement(None),
                  {"sso": FeatureEntitlement("sso"),
                   "audit": FeatureEntitlement("audit", trial_ends=NOW - timedelta(days=1)),
                   "export": FeatureEntitlement("export", trial_ends=NOW + timedelta(days=1), limit=3,
                                                requires=frozenset({"sso"}))})


def test_features_granted_trial_over_not_entitled_and_unknown():
    known = {"sso", "audit", "export", "reports"}
    usage = TenantUsage()
    assert (evaluate("sso", ENT, usage, known, NOW).value, evaluate("sso", ENT, usage, known, NOW).variant) == (True, "granted")
    audit = evaluate("audit", ENT, usage, known, NOW)
    assert (audit.value, audit.reason, audit.variant) == (False, "DISABLED", "trialExpired")
    export = evaluate("export", ENT, usage, known, NOW)
    assert export.value is True and export.metadata == {"licenses": "base", "trialEnds": "2026-12-02T00:00:00Z",
                                                        "limit": 3, "requires": "sso"}
    assert evaluate("export", ENT, usage, known, NOW + timedelta(days=1)).value is False   # the trial's end itself
    assert evaluate("reports", ENT, usage, known, NOW).variant == "notEntitled"
    with pytest.raises(FlagNotFound):
        evaluate("typo", ENT, usage, known, NOW)
    inactive = Entitlement("acme")
    assert evaluate("sso", inactive, usage, known, NOW).variant == "noActiveLicense"


def test_pools_and_the_bulk_answer():
    usage = TenantUsage()
    usage.units = 4
    assert evaluate("instances.max", ENT, usage, set(), NOW).value == 10
    assert evaluate("instances.used", ENT, usage, set(), NOW).value == 4
    with pytest.raises(FlagNotFound):
        evaluate("seats.max", ENT, usage, set(), NOW)       # unlimited
    keys = [f.key for f in evaluate_all(ENT, usage, {"reports"}, NOW)]
    assert keys == ["audit", "export", "instances.max", "instances.used", "reports", "seats.used", "sso"]


def _jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=").decode()
    return f"h.{payload}.s"


def test_a_token_is_reviewed_once_for_its_lifetime_and_concurrent_callers_share_the_review():
    clock = [1000.0]
    calls = []

    async def review(token):
        calls.append(token)
        await asyncio.sleep(0.01)
        if token.startswith("bad"):
            return {"status": {"authenticated": False}}
        return {"status": {"authenticated": True, "user": {"username": "system:serviceaccount:ns1:app"}}}

    reviewer = TokenReviewer(review, max_ttl=300, refused_ttl=10, clock=lambda: clock[0])

    async def run():
        token = _jwt(1060)
        callers = await asyncio.gather(*(reviewer.caller(token) for _ in range(20)))
        assert {c.namespace for c in callers} == {"ns1"} and len(calls) == 1
        clock[0] = 1059
        await reviewer.caller(token)
        assert len(calls) == 1
        clock[0] = 1061                                  # the token expired: reviewed again
        await reviewer.caller(token)
        assert len(calls) == 2
        refused = await reviewer.caller("bad")
        assert not refused.authenticated and (await reviewer.caller("bad")) == refused and len(calls) == 3

    asyncio.run(run())


def test_an_apiserver_failure_is_not_a_verdict_on_the_token():
    async def review(token):
        raise OSError("connection refused")

    reviewer = TokenReviewer(review)
    with pytest.raises(TokenReviewUnavailable):
        asyncio.run(reviewer.caller("t"))


def test_pseudonyms_are_stable_distinct_and_keep_seat_counts():
    key = b"k" * 32
    names = ["ann", "bob", "Ann", "ann "]
    pseudonyms = [pseudonym(key, n) for n in names]
    assert len(set(pseudonyms)) == len(names) and pseudonym(key, "ann") == pseudonyms[0]
    assert pseudonym(b"x" * 32, "ann") != pseudonyms[0]
    record = {"type": "dev.entitle.workload.v1", "id": "1",
              "data": {"users": ["bob", "ann"], "guests": ["eve"], "units": 2}}
    once = pseudonymize_record(record, key)
    assert sorted(once["data"]["users"]) == sorted(pseudonyms[:2]) and once["data"][MARK] is True
    assert len(once["data"]["users"]) == 2 and "ann" not in json.dumps(once)
    assert pseudonymize_record(once, key) == once                # never twice
    assert record["data"]["users"] == ["bob", "ann"]             # the input is not modified
    notice = {"type": "dev.entitle.notice.v1", "data": {"message": "x"}}
    assert pseudonymize_record(notice, key) is notice


def test_seat_meters_are_the_same_over_pseudonyms(tmp_path):
    from entitle.adapters.metering.export import events_from_file, export
    from entitle.domain.meters import parse_time

    def record(i, uid, op, t, users):
        return {"source": "op", "id": f"{i}", "type": "dev.entitle.workload.v1", "subject": "acme", "time": t,
                "data": {"tenant": "acme", "uid": uid, "generation": i, "operation": op, "units": 1, "users": users,
                         "guests": ["g1"], "features": []}}

    plain = [record(1, "a", "created", "2026-11-01T00:00:00Z", ["ann", "bob"]),
             record(2, "b", "created", "2026-11-01T00:20:00Z", ["bob", "cy"]),
             record(3, "a", "updated", "2026-11-01T00:40:00Z", ["dee"]),
             record(4, "b", "deleted", "2026-11-01T01:00:00Z", ["bob", "cy"])]
    key = b"0123456789abcdef0123"
    paths = {}
    for name, records in (("plain", plain), ("pseudo", [pseudonymize_record(r, key) for r in plain])):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records))
    start, end = parse_time("2026-11-01T00:00:00Z"), parse_time("2026-11-01T02:00:00Z")
    totals = {n: export(events_from_file(str(p), None), start, end, None) for n, p in paths.items()}
    assert totals["plain"] == totals["pseudo"] and totals["plain"]["acme"]["peak_seats"] == 3
    assert "ann" not in paths["pseudo"].read_text()
