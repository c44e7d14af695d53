"""Concurrent sessions against the running operator and a real apiserver: the check-out API on
the OFREP port, its ServiceAccount identity, the cap under concurrency, and a restart that
keeps live sessions (they live in the apiserver, not in the process)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import Operator, free_port, wait_for
from tests.e2e.helpers import apply, license, namespace, unique
from tests.e2e.test_openfeature import service_account_token

pytestmark = pytest.mark.e2e


@pytest.fixture
def setup(cluster, tmp_path):
    tenant, other = unique("sta"), unique("stb")
    ns, ns_other = unique("nss"), unique("nso")
    lic = license(unique("lic"), tenant)
    lic["spec"]["sessions"] = {"max": 10, "ttlSeconds": 30, "perUser": True}
    lic_other = license(unique("lic"), other)
    lic_other["spec"]["sessions"] = {"max": 10}
    apply(cluster, namespace(ns, tenant), namespace(ns_other, other), lic, lic_other)
    port = free_port()
    op = Operator(cluster, tmp_path, extra_config={"ofrep": {"port": port, "listenHost": "127.0.0.1"}}).start()
    yield {"url": f"http://127.0.0.1:{port}", "op": op, "tenant": tenant,
           "token": service_account_token(cluster, ns), "token_other": service_account_token(cluster, ns_other)}
    op.stop()


def _checkout(url, token, user, **extra):
    return requests.post(f"{url}/sessions/v1/checkout", json={"user": user, **extra},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_fifteen_clients_for_ten_seats_get_ten_and_a_restart_keeps_them(setup):
    url, token = setup["url"], setup["token"]
    with ThreadPoolExecutor(15) as pool:
        answers = list(pool.map(lambda i: _checkout(url, token, f"user-{i}"), range(15)))
    granted = [a.json() for a in answers if a.status_code == 200]
    refused = [a.json() for a in answers if a.status_code == 409]
    assert len(granted) == 10 and len(refused) == 5, [a.status_code for a in answers]
    assert refused[0]["reason"] == "SessionCapExceeded" and refused[0]["used"] == 10 and refused[0]["max"] == 10
    # Another tenant cannot renew or return this tenant's session.
    sid = granted[0]["id"]
    other = {"Authorization": f"Bearer {setup['token_other']}"}
    assert requests.post(f"{url}/sessions/v1/{sid}/heartbeat", headers=other, timeout=10).status_code == 404
    assert requests.delete(f"{url}/sessions/v1/{sid}", headers=other, timeout=10).status_code == 404
    assert requests.post(f"{url}/sessions/v1/{sid}/heartbeat", timeout=10).status_code == 401
    # A restart keeps live sessions: renewals go on, the cap still holds.
    setup["op"].stop()
    setup["op"].start()
    auth = {"Authorization": f"Bearer {token}"}
    wait_for(lambda: requests.post(f"{url}/sessions/v1/{sid}/heartbeat", headers=auth, timeout=10).status_code == 200,
             timeout=30, message="the restarted operator to renew a session checked out before")
    assert _checkout(url, token, "late").status_code == 409
    assert requests.delete(f"{url}/sessions/v1/{sid}", headers=auth, timeout=10).status_code == 204
    assert _checkout(url, token, "late").status_code == 200
    flags = requests.post(f"{url}/ofrep/v1/evaluate/flags", json={}, headers=auth, timeout=10).json()["flags"]
    values = {f["key"]: f["value"] for f in flags}
    assert values["sessions.max"] == 10 and values["sessions.used"] == 10
