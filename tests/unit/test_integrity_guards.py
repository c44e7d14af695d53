"""Guards around the edges (DESIGN "Integrity against the tenant"), each without a server:
reviews only from the apiserver's client certificate, audience-bound OFREP tokens, /metrics
behind TokenReview + SubjectAccessReview, strict configuration, burst budgets in a License
status that cannot be true, and the chart's labels, policies and conditions."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from entitle.adapters.kube.token_review import AccessReviewer, Caller, TokenReviewer
from entitle.adapters.pki import CertificateAuthority
from entitle.adapters.webhook.server import AdmissionServer, ReloadableTLS
from entitle.domain.bursts import BurstClock, plausible
from entitle.operator.config import ConfigError, load
from tests.conftest import free_port, render_chart

pytestmark = pytest.mark.hostile

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


# -- only the apiserver reviews -------------------------------------------------------------
def _pki(tmp_path):
    server_ca, client_ca, stranger_ca = (CertificateAuthority(n) for n in ("server", "client", "stranger"))
    files = {"tls.crt": server_ca.issue("webhook", hosts=["127.0.0.1"]), "apiserver": client_ca.issue(
        "kube-apiserver-webhook-client", client=True), "stranger": stranger_ca.issue("kube-apiserver-webhook-client",
                                                                                     client=True),
             "other-name": client_ca.issue("someone-else", client=True)}
    (tmp_path / "server-ca.crt").write_bytes(server_ca.cert_pem)
    (tmp_path / "client-ca.crt").write_bytes(client_ca.cert_pem)
    for name, pair in files.items():
        (tmp_path / f"{name}.pem").write_bytes(pair.cert_pem)
        (tmp_path / f"{name}.key").write_bytes(pair.key_pem)
    return tmp_path


def test_a_review_without_the_apiservers_client_certificate_is_refused_unread(tmp_path):
    d = _pki(tmp_path)
    decided = []

    async def decide(review):
        decided.append(review)

    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u1", "operation": "CREATE", "namespace": "team-a", "name": "x",
                          "object": {"metadata": {"name": "x"}}}}

    async def post(context, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        body = json.dumps(review).encode()
        writer.write(b"POST /workloads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        try:
            line = await reader.readline()
        except (ssl.SSLError, ConnectionError):
            line = b""      # TLS 1.3: the server rejects the certificate after the client's handshake
        writer.close()
        return int(line.split()[1]) if line else None

    def client(cert: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(d / "server-ca.crt"))
        if cert:
            ctx.load_cert_chain(str(d / f"{cert}.pem"), str(d / f"{cert}.key"))
        return ctx

    async def run():
        port = free_port()
        tls = ReloadableTLS(str(d / "tls.crt.pem"), str(d / "tls.crt.key"), str(d / "client-ca.crt"),
                            ["kube-apiserver-webhook-client"])
        refused = []
        server = AdmissionServer({"/workloads": decide}, "127.0.0.1", port, tls, drain_seconds=0,
                                 on_refused=lambda: refused.append(1))
        await server.start()
        try:
            assert await post(client(None), port) == 403                  # no certificate: refused unread
            try:
                answer = await post(client("stranger"), port)              # another CA: the handshake fails
            except (ssl.SSLError, ConnectionError):
                answer = None
            assert answer is None
            assert await post(client("other-name"), port) == 403           # the CA's, not the apiserver's name
            assert decided == [] and len(refused) == 2
            assert await post(client("apiserver"), port) == 200
            assert len(decided) == 1
        finally:
            await server.stop()

    asyncio.run(run())


# -- OFREP tokens bound to an audience; /metrics behind authentication ----------------------
def test_an_ofrep_token_must_carry_the_audience():
    asked = []

    async def review(token, audiences=()):
        asked.append(audiences)
        # The apiserver answers with the audiences the token carries among those asked for.
        carried = ["entitle"] if token == "projected" else []
        return {"status": {"authenticated": bool(carried) or token == "apiserver-token",
                           "audiences": carried, "user": {"username": "system:serviceaccount:team-a:app"}}}

    reviewer = TokenReviewer(review, audiences=("entitle",))
    assert asyncio.run(reviewer.caller("projected")).namespace == "team-a"
    assert not asyncio.run(reviewer.caller("apiserver-token")).authenticated
    assert asked == [("entitle",), ("entitle",)]


def test_metrics_answer_only_authorized_callers():
    import entitle.operator.metrics  # noqa: F401 -- registers the series
    from entitle.operator.metrics_server import MetricsServer

    async def review(token):
        users = {"prom": "system:serviceaccount:monitoring:prometheus", "tenant": "system:serviceaccount:team-a:app"}
        return {"status": {"authenticated": token in users, "user": {"username": users.get(token), "groups": ["g"]}}}

    sars = []

    async def access(spec):
        sars.append(spec)
        return {"status": {"allowed": spec["user"].endswith(":prometheus")}}

    async def run():
        import aiohttp

        port = free_port()
        server = MetricsServer("127.0.0.1", port, None, TokenReviewer(review), AccessReviewer(access))
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                async def get(token=None):
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as resp:
                        return resp.status, await resp.text()
                assert (await get())[0] == 401
                assert (await get("forged"))[0] == 401
                assert (await get("tenant"))[0] == 403
                status, text = await get("prom")
                assert status == 200 and "entitle_admission_decisions_total" in text
                await get("prom")                       # the verdict is cached
        finally:
            await server.stop()
        assert [s["user"] for s in sars] == ["system:serviceaccount:team-a:app", "system:serviceaccount:monitoring:prometheus"]
        assert sars[0]["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"} and sars[0]["groups"] == ["g"]

    asyncio.run(run())


def test_an_access_review_is_cached_per_caller():
    calls = []

    async def access(spec):
        calls.append(spec)
        return {"status": {"allowed": True}}

    reviewer = AccessReviewer(access, ttl=60, clock=lambda: 0.0)
    caller = Caller(True, "u", None, ("g",))
    assert asyncio.run(reviewer.allowed(caller, "get", "/metrics")) and asyncio.run(reviewer.allowed(caller, "get", "/metrics"))
    assert len(calls) == 1


# -- configuration is strict -----------------------------------------------------------------
@pytest.mark.parametrize("text,named", [
    ("statusIntervalSecs: 3\n", "statusIntervalSecs"),
    ("webhok: {port: 9443}\n", "webhok"),
    ("webhook: {failurePolicy: Fial}\n", "webhook.failurePolicy"),
    ("webhook: {prot: 9443}\n", "webhook.prot"),
    ("ofrep: {port: 8016, audiance: x}\n", "ofrep.audiance"),
])
def test_an_unknown_key_or_enum_value_stops_the_start_and_is_named(tmp_path, text, named):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load(str(path))
    assert named in str(raised.value)
    # The CLI: exit 2 with the name, before anything starts.
    run = subprocess.run([sys.executable, "-m", "entitle.cli", "run", "--config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and named in run.stderr + run.stdout


def test_the_charts_configuration_is_one_the_operator_accepts(tmp_path):
    for values in ([], ["--set", "ofrep.enabled=true", "--set", "webhook.clientCA.secretName=ca",
                        "--set", "ofrep.tls.secretName=t", "--set", "privacy.pseudonymizeUsers=true",
                        "--set", "privacy.keySecret.name=k", "--set", "fleet.enabled=true",
                        "--set", "fleet.cluster=eu-1", "--set", "fleet.hubKubeconfigSecret.name=hub",
                        "--set", "fleet.floor.instances=5"]):
        docs = render_chart(*values)
        text = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "entitle")["data"]["config.yaml"]
        (tmp_path / "config.yaml").write_text(text)
        cfg = load(str(tmp_path / "config.yaml"))
        assert cfg.metrics_authentication and cfg.ofrep.audience == "entitle"
    assert cfg.webhook.client_ca_file == "/etc/entitle/webhook-client-ca/ca.crt"
    assert cfg.ofrep.cert_file == "/etc/entitle/ofrep-tls/tls.crt"
    assert cfg.fleet.cluster == "eu-1" and cfg.fleet.floor == {"instances": 5}
    assert cfg.fleet.hub_kubeconfig == "/etc/entitle/fleet-hub/kubeconfig"


# -- burst budgets read back from a License status -----------------------------------------
def test_a_burst_clock_that_cannot_be_true_is_not_believed():
    assert plausible(BurstClock("2026-12", 3600.0, None), NOW)
    assert plausible(BurstClock("2026-11", 100.0, None), NOW)             # last month's: counts as 0 now
    assert not plausible(BurstClock("2099-01", 0.0, None), NOW)           # a future month resets the budget
    assert not plausible(BurstClock("2026-12", -5.0, None), NOW)
    assert not plausible(BurstClock("2026-12", 4 * 24 * 3600.0, None), NOW)   # more than the month so far
    assert not plausible(BurstClock("2026-12", 0.0, NOW + timedelta(hours=1)), NOW)


def test_the_controller_ignores_a_future_burst_month_in_a_license_status(tmp_path):
    from entitle.api import License
    from tests.unit.test_usage_meter_moves import Harness

    h = Harness(tmp_path / "l.db", [NOW])
    c = h.controller
    c.on_namespace({"metadata": {"name": "ns", "labels": {"entitle.dev/tenant": "a"}}})
    body = {"apiVersion": "entitle.dev/v1alpha1", "kind": "License",
            "metadata": {"name": "l", "uid": "l1", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"tenant": "a", "instances": {"max": 1, "burst": {"extra": 1, "window": "1h"}}},
            "status": {"burstMonth": "2026-12", "instances": {"burstUsedSeconds": 3000}}}
    c.on_license(body)
    assert c.state.bursts[("a", "instances")].used_at(NOW) == 3000
    # A status claiming a future month would reset the budget: ignored.
    forged = {**body, "status": {"burstMonth": "2099-01", "instances": {"burstUsedSeconds": 0}}}
    License.model_validate(forged)
    c.on_license(forged)
    assert c.state.bursts[("a", "instances")].used_at(NOW) == 3000
    h.close()


# -- the chart ----------------------------------------------------------------------------
def test_push_pods_carry_labels_of_their_own_so_no_service_routes_admissions_to_them():
    docs = render_chart("--set", "ledger.postgres.existingSecret=db", "--set", "push.enabled=true",
                        "--set", "push.tokenSecret.name=k")
    labels = next(d for d in docs if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    for doc in docs:
        selector = (doc["spec"].get("selector") if doc["kind"] == "Service" else
                    (doc["spec"].get("selector") or {}).get("matchLabels") if doc["kind"] in ("PodDisruptionBudget",)
                    else (doc["spec"].get("podSelector") or {}).get("matchLabels") if doc["kind"] == "NetworkPolicy"
                    else None)
        if selector:
            assert not all(labels.get(k) == v for k, v in selector.items()), f"{doc['kind']} {doc['metadata']['name']}"


def test_the_charts_match_conditions_are_the_operators():
    from entitle.api import InstanceSource
    from entitle.domain.sources import read_source
    from entitle.operator.config import CONTROLLER_USERS
    from entitle.operator.sources.rules import match_conditions

    docs = render_chart()
    config = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")
    hook = next(w for w in config["webhooks"] if w["name"] == "sources.entitle.dev")
    sources = [read_source(InstanceSource.model_validate(d)) for d in docs if d["kind"] == "InstanceSource"]
    complete = {s.kind_key for s in sources if s.selector is None}
    from entitle.domain.ownership import KNOWN_CONTROLLERS
    skippable = {s.kind_key: sorted(KNOWN_CONTROLLERS.get(s.kind_key, frozenset()) & complete) for s in sources}
    expected = match_conditions({k: v for k, v in skippable.items() if v}, CONTROLLER_USERS)
    assert sorted(hook["matchConditions"], key=lambda c: c["name"]) == sorted(expected, key=lambda c: c["name"])
    # Never on ownerReferences alone: each condition names the controllers' identities.
    assert all("request.userInfo.username in" in c["expression"] for c in hook["matchConditions"])
    assert {c["name"] for c in hook["matchConditions"]} == {"controller-made-pod", "controller-made-replicaset"}


def test_the_chart_guards_the_tenant_label_and_fences_its_webhooks_and_ships_a_network_policy():
    docs = render_chart("--set", "tenancy.labelManagers.groups={system:masters,platform-admins}")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    label = policies["entitle-tenant-label"]["spec"]
    manager = next(v["expression"] for v in label["variables"] if v["name"] == "manager")
    assert "'platform-admins'" in manager and "'system:serviceaccount:entitle-system:entitle'" in manager
    assert {"entitle-validating-webhooks-fence", "entitle-mutating-webhooks-fence"} <= set(policies)
    bindings = {d["spec"]["policyName"] for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert set(policies) <= bindings
    assert any(d["kind"] == "NetworkPolicy" for d in docs)
    # URL mode (development): the operator writes its whole configuration, so no fence.
    dev = render_chart("--set", "webhook.url=https://127.0.0.1:9443")
    assert not [d for d in dev if d["kind"] == "ValidatingAdmissionPolicy" and "fence" in d["metadata"]["name"]]
    assert yaml.safe_dump(policies["entitle-tenant-label"])
