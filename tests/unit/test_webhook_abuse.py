"""Webhook abuse: whatever arrives on the admission endpoint -- not JSON, not an AdmissionReview,
a review of the wrong shape, a Workload that is not one, an absurd scale -- gets a clear
answer (400, or a denial with reason BadRequest), never an internal error, and the next
legitimate request is decided as before."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.adapters.kube.holds import MemoryHoldStore
from entitle.adapters.webhook.server import AdmissionServer
from entitle.operator.events import EventQueue
from entitle.operator.sources.catalog import SourceCatalog
from entitle.operator.sources.owners import SourceOwners
from entitle.operator.webhooks import WorkloadWebhooks
from tests.unit.builders import NOW, lic, state_with, wl

pytestmark = pytest.mark.hostile  # the project's hostile-input suite: pytest -m hostile


class FakeRequest:
    def __init__(self, path: str, body: bytes) -> None:
        self.path, self._body = path, body

    async def read(self) -> bytes:
        return self._body


def _server() -> AdmissionServer:
    state = state_with(lic("base", instances={"max": 5}))
    ready = asyncio.Event()
    ready.set()
    catalog = SourceCatalog()
    webhooks = WorkloadWebhooks(SharedAdmission(state, MemoryHoldStore(), timedelta(seconds=30)), catalog,
                                SourceOwners({}, {}, catalog.source_kinds, catalog.watched_kinds), EventQueue(),
                                ready, lambda: NOW)
    server = AdmissionServer(webhooks.routes(), "127.0.0.1", 0, tls=None)
    # A stored workload, so that scale requests have something to scale.
    stored = wl("w", replicas=2)
    stored.metadata.uid, stored.metadata.generation = "uid-w", 1
    state.observe_workload(stored)
    return server


def _answer(server: AdmissionServer, path: str, body: bytes) -> tuple[int, dict | None]:
    response = asyncio.run(server._handle(FakeRequest(path, body)))
    if response.status != 200:
        return response.status, None
    return 200, orjson.loads(response.body)["response"]


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20))
TREES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
                     max_leaves=15)
REQUESTS = st.fixed_dictionaries({"uid": st.one_of(st.text(min_size=1, max_size=8), SCALARS)}, optional={
    "operation": st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", ""]), SCALARS),
    "subResource": st.one_of(st.just("scale"), SCALARS), "namespace": st.one_of(st.just("team-a"), SCALARS),
    "name": st.one_of(st.just("w"), SCALARS), "dryRun": SCALARS,
    "object": st.one_of(TREES, st.fixed_dictionaries({"metadata": TREES, "spec": TREES}),
                        st.fixed_dictionaries({"spec": st.fixed_dictionaries({"replicas": SCALARS})})),
    "oldObject": TREES,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), TREES.map(lambda t: json.dumps(t).encode()),
                 st.fixed_dictionaries({"request": REQUESTS}).map(lambda t: json.dumps(t).encode())),
       st.sampled_from(["/workloads", "/workloads-finalizer", "/other"]))
def test_any_request_body_gets_a_clear_answer_never_an_internal_error(body, path):
    server = _server()
    status, response = _answer(server, path, body)
    assert status in (200, 400, 404)
    if response is not None:
        assert isinstance(response["allowed"], bool)
        code = (response.get("status") or {}).get("code")
        assert code != 500, response      # "entitle could not decide": an internal error
    # The operator still decides a legitimate request as before.
    review = {"request": {"uid": "ok", "operation": "CREATE", "namespace": "team-a", "name": "fresh",
                          "object": wl("fresh", replicas=1).model_dump(by_alias=True, mode="json"), "dryRun": True}}
    status, response = _answer(server, "/workloads", orjson.dumps(review))
    assert status == 200 and response["allowed"] is True


def test_a_scale_to_an_absurd_count_is_a_bad_request():
    server = _server()
    for replicas in (-1, 2**40, "3", True, None, 1.5):
        review = {"request": {"uid": "u", "operation": "UPDATE", "subResource": "scale", "namespace": "team-a",
                              "name": "w", "object": {"spec": {"replicas": replicas}}}}
        status, response = _answer(server, "/workloads", orjson.dumps(review))
        assert status == 200 and response["allowed"] is False and response["status"]["code"] == 400
    review = {"request": {"uid": "u", "operation": "UPDATE", "subResource": "scale", "namespace": "team-a",
                          "name": "w", "object": {"spec": {"replicas": 1}}}}
    assert _answer(server, "/workloads", orjson.dumps(review))[1]["allowed"] is True
