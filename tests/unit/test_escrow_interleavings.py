"""Creates and scales through two replicas sharing escrow, with each replica's watch lagging
by its own random amount: whatever the interleaving, what the cluster stores never exceeds
the cap -- and, once things settle, every unit up to the cap is admitted again (a decider that
denies everything, or strands capacity in a grant nobody spends, fails that). (Found here
first: a replica's stale own spend for a create hid a peer's hold for the scale that followed
it; and two scales of one object admitted at once both reserved the next generation, so the
one stored first settled the other.)"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

import pytest

from entitle.adapters.kube.holds import MemoryHoldStore
from entitle.adapters.webhook.admission import NotYetKnown
from entitle.adapters.webhook.shared_admission import SharedAdmission
from tests.unit.builders import NOW, lic, state_with, wl

CAP = 20


class Clock:
    """Stands still (the races above step it by hand) until ``flow()``: then it also moves in
    real time, as idle grants need to close while a peer waits on them."""

    def __init__(self):
        self.now, self._since = NOW, None

    def flow(self):
        self._since = time.monotonic()

    def __call__(self):
        return self.now if self._since is None else self.now + timedelta(seconds=time.monotonic() - self._since)


class Cluster:
    """The apiserver's storage (optimistic concurrency: a change admitted against an older
    resourceVersion is admitted again, as GuaranteedUpdate does) and each replica's watch
    (a queue delivered with its own lag)."""

    def __init__(self, replicas, rnd):
        self.objects: dict[str, object] = {}
        self.replicas, self.rnd = replicas, rnd
        self.feeds: list[list] = [[] for _ in replicas]
        self.rv = 0

    def store(self, workload, previous):
        name = workload.metadata.name
        stored = workload.model_copy(deep=True)
        self.rv += 1
        stored.metadata.uid = f"uid-{name}"
        stored.metadata.generation = 1 if previous is None else previous.metadata.generation + 1
        stored.metadata.resource_version = str(self.rv)
        self.objects[name] = stored
        for feed in self.feeds:
            feed.append(stored)
        total = sum(w.spec.replicas for w in self.objects.values())
        assert total <= CAP, f"stored {total} > cap {CAP}"

    def deliver_some(self):
        for replica, feed in zip(self.replicas, self.feeds):
            n = self.rnd.randint(0, len(feed))
            for workload in feed[:n]:
                replica.state.observe_workload(workload)
            del feed[:n]


async def _scale(cluster, replica, rnd, name):
    replicas = rnd.randint(0, 6)
    for _ in range(20):
        current = cluster.objects[name]
        old = {"spec": {"replicas": current.spec.replicas}, "metadata": {"resourceVersion": current.metadata.resource_version}}
        try:
            parsed, decision = await replica.review(
                NOW, operation="UPDATE", subresource="scale", namespace="team-a", name=name,
                body={"spec": {"replicas": replicas}}, old=old, dry_run=False)
        except NotYetKnown:
            return
        await asyncio.sleep(rnd.random() * 0.002)
        if not decision.allowed:
            return
        if cluster.objects[name] is current:       # unchanged meanwhile: stored
            cluster.store(parsed.workload, current)
            return
        # Conflict: the apiserver admits the change again against the new object.


async def _request(cluster, replica, rnd):
    names = sorted(cluster.objects)
    if names and rnd.random() < 0.6:
        await _scale(cluster, replica, rnd, rnd.choice(names))
        return
    body = wl(f"w{rnd.randint(0, 30)}", replicas=rnd.randint(1, 3)).model_dump(by_alias=True, mode="json")
    name = body["metadata"]["name"]
    if name in cluster.objects:
        return
    body["metadata"]["uid"] = f"uid-{name}"
    parsed, decision = await replica.review(NOW, operation="CREATE", subresource=None, body=body, old=None,
                                            dry_run=False)
    await asyncio.sleep(rnd.random() * 0.002)
    if decision.allowed and name not in cluster.objects:   # else AlreadyExists
        cluster.store(parsed.workload, None)


@pytest.mark.parametrize("seed", range(40))
def test_creates_and_scales_with_lagging_watches_never_store_more_than_the_cap(seed):
    rnd = random.Random(seed)
    store, clock = MemoryHoldStore(), Clock()
    replicas = [SharedAdmission(state_with(lic("base", instances={"max": CAP})), store, timedelta(seconds=30),
                                wall_clock=clock) for _ in range(2)]
    for replica in replicas:
        replica.watch_wait_seconds = 0.0
        replica.peer_wait_seconds = 0.05
    cluster = Cluster(replicas, rnd)

    async def run():
        for _ in range(12):
            await asyncio.gather(*[_request(cluster, rnd.choice(replicas), rnd) for _ in range(rnd.randint(1, 8))])
            cluster.deliver_some()
            clock.now += timedelta(seconds=rnd.random() * 0.5)   # grants go idle and close
        # Progress: settled (every watch caught up, every hold and grant lapsed), one-unit
        # creates through either replica are admitted until the stored total is exactly the cap.
        for replica, feed in zip(replicas, cluster.feeds):
            for workload in feed:
                replica.state.observe_workload(workload)
            feed.clear()
        clock.now += timedelta(seconds=61)
        for replica in replicas:
            replica.state.expire_reservations(clock.now)      # (the operator's status tick does this)
            # A denial a peer's unspent grant may cause waits for it to close once idle.
            replica.peer_wait_seconds, replica.idle_close_seconds = 2.0, 0.05
        clock.flow()
        stored = sum(w.spec.replicas for w in cluster.objects.values())
        for n in range(CAP + 1):
            replica = replicas[n % 2]
            body = wl(f"fill{n}", replicas=1).model_dump(by_alias=True, mode="json")
            body["metadata"]["uid"] = f"uid-fill{n}"
            parsed, decision = await replica.review(NOW, operation="CREATE", subresource=None, body=body, old=None,
                                                    dry_run=False)
            if not decision.allowed:
                assert decision.reason == "InstanceCapExceeded", decision
                break
            cluster.store(parsed.workload, None)
            for r, feed in zip(replicas, cluster.feeds):
                for workload in feed:
                    r.state.observe_workload(workload)
                feed.clear()
        assert sum(w.spec.replicas for w in cluster.objects.values()) == CAP, \
            f"settled at {sum(w.spec.replicas for w in cluster.objects.values())} of {CAP} (from {stored})"
        for replica in replicas:
            replica.close()

    asyncio.run(run())
