"""Concurrent sessions without a server: two replicas (two services, two states) sharing one
in-memory store with the apiserver's compare-and-swap contract; clocks are the test's."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from entitle.adapters.kube.sessions import MemorySessionStore, decode, encode
from entitle.domain.hourly import HourlyMetering
from entitle.domain.meters import Metering, to_event
from entitle.domain.push_plan import Scope, plan
from entitle.domain.sessions import SessionRefused
from entitle.operator.sessions import SessionService
from tests.unit.builders import NOW, lic, state_with


class Clocks:
    def __init__(self):
        self.wall, self.mono = NOW, 1000.0

    def now(self):
        return self.wall

    def monotonic(self):
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def _services(store, clocks, n=2, skew=(0.0, 0.0), **sessions):
    out, records = [], []
    for i in range(n):
        state = state_with(lic("base", sessions=sessions))
        offset = timedelta(seconds=skew[i % len(skew)])
        out.append(SessionService(state, store, records.append, "test", lambda o=offset: clocks.now() + o,
                                  monotonic=clocks.monotonic))
    return out, records


async def _settle(services, store):
    """Let every replica see the stored books, as its watch would."""
    for tenant, book in await store.list():
        for s in services:
            s.observe(tenant, book)


def _outcome(coro):
    async def run():
        try:
            return await coro
        except SessionRefused as refused:
            return refused
    return run()


def test_fifteen_clients_for_ten_seats_get_exactly_ten():
    store, clocks = MemorySessionStore(), Clocks()
    services, _ = _services(store, clocks, max=10)

    async def run():
        return await asyncio.gather(*[_outcome(services[i % 2].checkout("acme", f"u{i}")) for i in range(15)])

    results = asyncio.run(run())
    granted = [r for r in results if not isinstance(r, SessionRefused)]
    refused = [r for r in results if isinstance(r, SessionRefused)]
    assert len(granted) == 10 and len(refused) == 5
    assert {r.reason for r in refused} == {"SessionCapExceeded"} and {r.status for r in refused} == {409}
    assert "sessions 10 + 1 would exceed 10" in refused[0].message and refused[0].numbers["used"] == 10


def test_a_thousand_races_between_two_replicas_never_grant_an_eleventh_seat():
    store, clocks = MemorySessionStore(), Clocks()
    services, _ = _services(store, clocks, max=10, perUser=False)
    rng = random.Random(7)

    async def run():
        held: list[tuple[int, str]] = []
        worst = 0
        for round_ in range(50):
            ops = []
            for i in range(20):
                r = rng.randrange(2)
                if held and rng.random() < 0.3:
                    replica, sid = held.pop(rng.randrange(len(held)))
                    ops.append(_outcome(services[r].checkin("acme", sid)))
                else:
                    ops.append(_outcome(services[r].checkout("acme", f"u{round_}-{i}")))
            for result in await asyncio.gather(*ops):
                if result is not None and not isinstance(result, SessionRefused):
                    held.append((0, result.id))
            book = await store.read("acme")
            worst = max(worst, len(book.live))
            assert len(book.live) <= 10
            if rng.random() < 0.5:
                await _settle(services, store)
        return worst

    assert asyncio.run(run()) == 10


def test_a_users_second_session_shares_the_seat_and_a_retry_with_the_same_key_takes_none():
    store, clocks = MemorySessionStore(), Clocks()
    (svc,), _ = _services(store, clocks, n=1, max=1)

    async def run():
        a = await svc.checkout("acme", "ann", "tab-1")
        b = await svc.checkout("acme", "ann", "tab-2")        # same user: shares the one seat
        again = await svc.checkout("acme", "ann", "tab-1")    # a retry: the same session
        with pytest.raises(SessionRefused):
            await svc.checkout("acme", "bob")
        return a, b, again

    a, b, again = asyncio.run(run())
    assert a.id != b.id and again.id == a.id and again.renewals == a.renewals + 1
    assert svc.used("acme") == 1


def test_a_session_lapses_one_ttl_after_the_renewal_each_replica_saw_whatever_the_wall_clocks_say():
    store, clocks = MemorySessionStore(), Clocks()
    # The second replica's wall clock runs 30 s ahead: it must not lapse anything early.
    services, records = _services(store, clocks, skew=(0.0, 30.0), max=1, ttlSeconds=10)

    async def run():
        s = await services[0].checkout("acme", "ann")
        clocks.advance(2)
        await _settle(services, store)          # the peer sees it 2 s after it was written
        clocks.advance(7.5)                     # 9.5 s after the check-out
        with pytest.raises(SessionRefused):
            await services[1].checkout("acme", "bob")
        await services[0].heartbeat("acme", s.id)
        clocks.advance(9.9)
        with pytest.raises(SessionRefused):     # renewed: still held
            await services[0].checkout("acme", "bob")
        clocks.advance(0.2)                     # 10.1 s after the renewal: the writer frees it
        bob = await services[0].checkout("acme", "bob")
        with pytest.raises(SessionRefused) as gone:
            await services[0].heartbeat("acme", s.id)
        return s, bob, gone.value

    s, bob, gone = asyncio.run(run())
    assert gone.status == 404
    ops = sorted((r["data"]["user"], r["data"]["operation"]) for r in records)
    assert ("ann", "checkout") in ops and ("ann", "lapse") in ops and ("bob", "checkout") in ops


def test_forged_ids_and_another_tenants_session_change_nothing():
    store, clocks = MemorySessionStore(), Clocks()
    state = state_with(lic("a", "acme", sessions={"max": 2}), lic("b", "globex", sessions={"max": 2}),
                       namespaces={"team-a": "acme", "team-b": "globex"})
    svc = SessionService(state, store, lambda r: None, "test", clocks.now, monotonic=clocks.monotonic)

    async def run():
        mine = await svc.checkout("acme", "ann")
        outcomes = []
        for sid in (mine.id, mine.id[:-1] + "x", "../acme", "", "x" * 5000):
            for call in (svc.heartbeat("globex", sid), svc.checkin("globex", sid)):
                outcomes.append(await _outcome(call))
        return mine, outcomes

    mine, outcomes = asyncio.run(run())
    assert all(isinstance(o, SessionRefused) and o.status == 404 for o in outcomes)
    assert asyncio.run(store.read("acme")).live.keys() == {mine.id}
    for ttl in (0, -1, 10**9, "60", True, 1.5):
        with pytest.raises(SessionRefused) as bad:
            asyncio.run(svc.checkout("acme", "bob", ttl=ttl))
        assert bad.value.status == 400
    for user in ("", None, 5, "x" * 300):
        with pytest.raises(SessionRefused):
            asyncio.run(svc.checkout("acme", user))


def test_a_hand_edited_store_object_is_refused_until_one_ttl_then_replaced():
    store, clocks = MemorySessionStore(), Clocks()
    (svc,), _ = _services(store, clocks, n=1, max=2, ttlSeconds=30)
    asyncio.run(svc.checkout("acme", "ann"))
    store.cas._objects["acme"] = (store.cas._objects["acme"][0] + 1, {"sessions": "{not json"})
    svc.tenants["acme"].book = None
    with pytest.raises(SessionRefused) as refused:
        asyncio.run(svc.checkout("acme", "bob"))
    assert refused.value.status == 503
    clocks.advance(31)
    assert asyncio.run(svc.checkout("acme", "bob")).user == "bob"


def test_the_book_round_trips_and_records_meter_peak_sessions_and_session_hours():
    store, clocks = MemorySessionStore(), Clocks()
    (svc,), records = _services(store, clocks, n=1, max=5, ttlSeconds=3600)

    async def run():
        a = await svc.checkout("acme", "ann")
        await svc.checkout("acme", "ann", "second")       # shares ann's seat
        clocks.advance(1800)
        await svc.heartbeat("acme", a.id)
        await svc.checkout("acme", "bob")
        clocks.advance(1800)
        await svc.checkin("acme", a.id)       # (ann's second session, never renewed, lapses with it)
        clocks.advance(3600)
        assert await svc.sweep() == 1         # bob's lapsed at 1.5 h: recorded then, not at 2.5 h

    asyncio.run(run())
    book = asyncio.run(store.read("acme"))
    assert decode("acme", book.version, encode(book)) == book
    # Replayed twice (two replicas' ledgers): duplicates count once in an export.
    seen, meter = set(), Metering(int(NOW.timestamp()), int((NOW + timedelta(hours=2)).timestamp()))
    for record in sorted(records + records, key=lambda r: r["time"]):
        if (record["source"], record["id"]) not in seen:
            seen.add((record["source"], record["id"]))
            meter.feed(to_event(record))
    acme = meter.finish()["acme"]
    # ann's seat: 0 -> 1 h; bob's: 0.5 h -> 1.5 h (his ttl after the check-out).
    assert acme["peak_sessions"] == 2 and acme["session_hours"] == 2.0
    lapses = [r for r in records if r["data"]["operation"] == "lapse"]
    assert sorted(r["data"]["user"] for r in lapses) == ["ann", "bob"]
    # Pushable like the others: per hour, the same totals; peaks planned as max events.
    start = int(NOW.timestamp()) - int(NOW.timestamp()) % 3600
    hourly = HourlyMetering(start, start + 3 * 3600)
    seen.clear()
    for record in sorted(records + records, key=lambda r: r["time"]):
        if (record["source"], record["id"]) not in seen:
            seen.add((record["source"], record["id"]))
            hourly.feed(to_event(record))
    hourly.feed(to_event({"source": "s", "id": "w1", "type": "dev.entitle.workload.v1", "subject": "other",
                          "time": records[0]["time"], "data": {"tenant": "other", "uid": "u", "generation": 1,
                                                               "operation": "created", "units": 1, "users": [],
                                                               "features": []}}))
    hours = hourly.finish()
    assert sum(h["session_hours"] for h in hours["acme"].values()) == pytest.approx(2.0)
    assert max(h["peak_sessions"] for h in hours["acme"].values()) == 2
    assert all("session_hours" not in h and "peak_sessions" not in h for h in hours["other"].values())
    pushed = plan(hours, {}, {"acme": "cus_1", "other": "cus_2"}, peaks=True, scope=Scope("i", "stripe"))
    meters = {(p.meter, p.action) for p in pushed.events if p.tenant == "acme"}
    assert {("session_hours", "event"), ("peak_sessions", "max")} <= meters


def test_an_end_a_replicas_ledger_missed_while_it_was_down_is_recorded_once_it_is_back():
    import json

    from entitle.adapters.metering.live import live_change

    store, clocks = MemorySessionStore(), Clocks()
    (peer,), peer_records = _services(store, clocks, n=1, max=5, perUser=False)

    async def run():
        ann = await peer.checkout("acme", "ann")
        clocks.advance(60)
        await peer.checkin("acme", ann.id)
        clocks.advance(25 * 60)                    # ann's end is trimmed from the book on the next write
        await peer.checkout("acme", "bob")
        clocks.advance(60)
        young = await peer.checkout("acme", "cid")  # checked out after the returning replica's list
        return ann, young

    ann, young = asyncio.run(run())
    assert ann.id not in asyncio.run(store.read("acme")).ended
    # The returning replica's ledger: it recorded the check-outs of ann and (say) cid, not ann's end.
    ledger = {}
    for record in peer_records:
        if record["data"]["operation"] == "checkout" and record["data"]["session"] in (ann.id, young.id):
            change = live_change(record, json.dumps(record))
            ledger[change[2]] = change[4]
    (returning,), records = _services(store, clocks, n=1, max=5, perUser=False)
    book = asyncio.run(store.read("acme"))
    book.live.pop(young.id)                        # its list came before cid's check-out
    returning.observe("acme", book)
    records.clear()
    assert returning.reconcile_vanished(sorted(ledger.items())) == 1
    assert [(r["data"]["session"], r["data"]["operation"], r["data"].get("noticed")) for r in records] == \
        [(ann.id, "lapse", True)]
    true_end = next(r for r in peer_records if r["data"]["session"] == ann.id and r["data"]["operation"] == "checkin")
    assert records[0]["id"] != true_end["id"] and records[0]["time"] > true_end["time"]
    # Over both ledgers the seat ends at the true check-in (the earlier end counts).
    meter = Metering(int(NOW.timestamp()), int((NOW + timedelta(hours=1)).timestamp()))
    ann_records = [r for r in peer_records + records if r["data"]["session"] == ann.id]
    for record in sorted(ann_records, key=lambda r: r["time"]):
        meter.feed(to_event(record))
    assert meter.finish()["acme"]["session_hours"] == pytest.approx(60 / 3600, abs=1e-6)
