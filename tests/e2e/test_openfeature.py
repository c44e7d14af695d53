"""Applications read their entitlements through OpenFeature: the official Python SDK with its
OFREP provider (PyPI) against the running operator. A tenant's app sees its own features
(granted, trial expired, not entitled) and pools; no evaluation context selects another
tenant; no token, a bad token and a namespace without a tenant get the specified errors;
bulk answers carry an ETag and honour If-None-Match; evaluations are counted (metric, hourly
records, export)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.conftest import Operator, free_port, wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def service_account_token(cluster, ns: str, name: str = "app", audience: str | None = "entitle") -> str:
    """A token as an app's projected volume gives it: bound to the audience entitle asks for."""
    cluster.kubectl("create", "serviceaccount", name, "-n", ns, check=False)
    return cluster.kubectl("create", "token", name, "-n", ns, "--duration=1h",
                           *(["--audience", audience] if audience else [])).stdout.strip()


def client_for(url: str, token: str | None, name: str):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    openfeature.set_provider(OFREPProvider(url, headers_factory=lambda: headers), domain=name)
    return openfeature.get_client(name)


@pytest.fixture
def setup(cluster, tmp_path):
    tenant_a, tenant_b = unique("ofa"), unique("ofb")
    ns_a, ns_b, ns_none = unique("nsa"), unique("nsb"), unique("nsn")
    apply(cluster, namespace(ns_a, tenant_a), namespace(ns_b, tenant_b), namespace(ns_none, None),
          license(unique("lic"), tenant_a, instances={"max": 10}, seats={"max": 5},
                  features=[{"name": "sso"}, {"name": "audit", "trialEnds": "2020-01-01T00:00:00Z"},
                            {"name": "export", "trialEnds": "2099-01-01T00:00:00Z", "limit": {"workloads": 3}}]),
          license(unique("lic"), tenant_b, features=[{"name": "reports"}]))
    port = free_port()
    op = Operator(cluster, tmp_path, extra_config={"ofrep": {"port": port, "listenHost": "127.0.0.1"}}).start()
    apply(cluster, workload("w1", ns_a, replicas=2, users=["ann", "bob"], features=["sso"]))
    wait_for(lambda: ((get(cluster, "workload", "w1", ns_a) or {}).get("status") or {}).get("conditions"),
             message="the workload counted")
    yield {"url": f"http://127.0.0.1:{port}", "op": op, "a": tenant_a, "b": tenant_b,
           "token_a": service_account_token(cluster, ns_a), "token_b": service_account_token(cluster, ns_b),
           "token_none": service_account_token(cluster, ns_none), "ns_b": ns_b}
    op.stop()


def test_a_tenant_app_reads_its_own_entitlements_and_nothing_else(setup, cluster):
    app = client_for(setup["url"], setup["token_a"], "tenant-a")
    sso = app.get_boolean_details("sso", False)
    assert sso.value is True and sso.reason == Reason.TARGETING_MATCH and sso.variant == "granted"
    audit = app.get_boolean_details("audit", True)
    assert audit.value is False and audit.variant == "trialExpired" and audit.flag_metadata["trialEnds"] == "2020-01-01T00:00:00Z"
    trial = app.get_boolean_details("export", False)
    assert trial.value is True and trial.variant == "trial" and trial.flag_metadata["limit"] == 3
    reports = app.get_boolean_details("reports", True)   # tenant B's feature: known, not A's
    assert reports.value is False and reports.variant == "notEntitled"
    assert app.get_integer_value("instances.max", 0) == 10
    assert app.get_integer_value("seats.max", 0) == 5
    assert app.get_integer_value("seats.used", -1) == 2 and app.get_integer_value("instances.used", -1) == 2
    missing = app.get_boolean_details("no-such-feature", False)
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND and missing.value is False
    # Whatever the context claims, the token's namespace decides.
    for context in ({"tenant": setup["b"]}, {"namespace": setup["ns_b"], "targetingKey": setup["b"]},
                    {"entitle.dev/tenant": setup["b"], "serviceAccount": f"system:serviceaccount:{setup['ns_b']}:app"}):
        assert app.get_boolean_value("reports", True, EvaluationContext(attributes=context)) is False
        assert app.get_boolean_value("sso", False, EvaluationContext(attributes=context)) is True
    other = client_for(setup["url"], setup["token_b"], "tenant-b")
    assert other.get_boolean_value("reports", False) is True and other.get_boolean_value("sso", True) is False
    assert other.get_integer_details("instances.max", 0).error_code == ErrorCode.FLAG_NOT_FOUND  # unlimited


def test_a_token_for_the_apiserver_is_refused(setup, cluster):
    """An app that sends its plain ServiceAccount token (audience: the apiserver) is refused: the
    OFREP port never collects credentials to the cluster (DESIGN "Integrity against the tenant")."""
    ns = unique("nsk")
    apply(cluster, namespace(ns, setup["a"]))
    apiserver_token = service_account_token(cluster, ns, "legacy", audience=None)
    url = setup["url"] + "/ofrep/v1/evaluate/flags/sso"
    assert requests.post(url, headers={"Authorization": f"Bearer {apiserver_token}"}, timeout=5).status_code == 401
    bound = service_account_token(cluster, ns, "legacy")
    assert requests.post(url, headers={"Authorization": f"Bearer {bound}"}, timeout=5).status_code == 200


def test_errors_as_the_specification_says(setup):
    for token, expected in ((None, "unauthorized"), ("not-a-token", "unauthorized"),
                            (setup["token_none"], "forbidden")):
        details = client_for(setup["url"], token, f"bad-{expected}-{token is None}").get_boolean_details("sso", False)
        assert details.value is False and details.error_code == ErrorCode.GENERAL and expected in details.error_message
    url = setup["url"] + "/ofrep/v1/evaluate/flags/sso"
    auth = {"Authorization": f"Bearer {setup['token_a']}"}
    assert requests.post(url, timeout=5).status_code == 401
    assert requests.post(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    bad = requests.post(url, data=b"{not json", headers={**auth, "Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400 and bad.json() == {"key": "sso", "errorCode": "PARSE_ERROR",
                                                     "errorDetails": bad.json()["errorDetails"]}
    invalid = requests.post(url, json={"context": [1]}, headers=auth, timeout=5)
    assert invalid.status_code == 400 and invalid.json()["errorCode"] == "INVALID_CONTEXT"
    missing = requests.post(setup["url"] + "/ofrep/v1/evaluate/flags/nope", json={}, headers=auth, timeout=5)
    assert missing.status_code == 404 and missing.json()["errorCode"] == "FLAG_NOT_FOUND"


def test_bulk_evaluation_has_an_etag_and_honours_if_none_match(setup, cluster):
    url = setup["url"] + "/ofrep/v1/evaluate/flags"
    auth = {"Authorization": f"Bearer {setup['token_a']}"}
    first = requests.post(url, json={"context": {"targetingKey": "x"}}, headers=auth, timeout=5)
    assert first.status_code == 200 and first.headers["ETag"]
    flags = {f["key"]: f["value"] for f in first.json()["flags"]}
    assert flags["sso"] is True and flags["audit"] is False and flags["reports"] is False
    assert flags["instances.max"] == 10 and "seats.used" in flags
    again = requests.post(url, json={}, headers={**auth, "If-None-Match": first.headers["ETag"]}, timeout=5)
    assert again.status_code == 304 and again.headers["ETag"] == first.headers["ETag"]
    apply(cluster, workload("w2", setup["ns_b"], replicas=1))   # another tenant: no change here
    assert requests.post(url, json={}, headers={**auth, "If-None-Match": first.headers["ETag"]},
                         timeout=5).status_code == 304


def test_evaluations_are_counted_as_a_metric_records_and_export(setup):
    app = client_for(setup["url"], setup["token_a"], "counted")
    for _ in range(7):
        assert app.get_boolean_value("sso", False) is True
    app.get_boolean_value("audit", False)
    op = setup["op"]

    def metric() -> float:
        text = op.metrics()
        for line in text.splitlines():
            if line.startswith("entitle_feature_evaluations_total{") and f'tenant="{setup["a"]}"' in line \
                    and 'feature="sso"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    assert metric() == 7
    op.stop()   # a stop flushes the open hour
    records = [r for r in op.records() if r["type"] == "dev.entitle.feature.v1" and r["subject"] == setup["a"]]
    counts = {r["data"]["feature"]: r["data"]["evaluations"] for r in records}
    assert counts == {"sso": 7, "audit": 1}
    hour = records[0]["data"]["hour"]
    out = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--ledger", op.ledger_location,
                          "--from", hour, "--to", "2099-01-01T00:00:00Z", "--tenant", setup["a"], "--format", "csv"],
                         capture_output=True, text=True, check=True).stdout
    assert f"{setup['a']},feature_evaluations:sso,7" in out and f"{setup['a']},feature_evaluations:audit,1" in out


def test_the_example_app_reads_its_flags(setup, cluster):
    import yaml

    example = Path(__file__).resolve().parents[2] / "examples" / "13-openfeature"
    # The example's names (tenant acme, namespace shop) are shared with other examples: run it
    # under names of its own, so other tests' licenses and workloads of acme do not count here.
    tenant, ns, lic = unique("exampletenant"), unique("exampleshop"), unique("examplelicense")
    docs = [d for d in yaml.safe_load_all((example / "manifests.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["Namespace", "License", "ServiceAccount"]
    docs[0]["metadata"]["name"] = ns
    docs[0]["metadata"]["labels"]["entitle.dev/tenant"] = tenant
    docs[1]["metadata"]["name"], docs[1]["spec"]["tenant"] = lic, tenant
    docs[2]["metadata"]["namespace"] = ns
    text = yaml.safe_dump_all(docs)
    cluster.kubectl("apply", "-f", "-", input=text)
    try:
        token = cluster.kubectl("create", "token", "storefront", "-n", ns, "--audience", "entitle").stdout.strip()
        out = subprocess.run([sys.executable, str(example / "app.py")], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "ENTITLE_OFREP_URL": setup["url"], "ENTITLE_TOKEN": token})
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["sso: on", "audit: off (trialExpired)", "instances: 0 of 20"]
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=text, check=False)
