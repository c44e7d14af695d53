"""The chart's billing wiring: the PostgreSQL ledger's DSN only ever comes from a Secret, and
the hourly push CronJob needs that ledger (its receipts live there)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import helm_binary, render_chart


def test_postgres_ledger_dsn_comes_from_a_secret_never_the_configmap():
    docs = render_chart("--set", "ledger.postgres.existingSecret=entitle-ledger")
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yaml"])
    assert config["ledger"] == {"postgresFile": "/etc/entitle/ledger/dsn"} and "ledgerPath" not in config
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["ledger-dsn"]["secret"]["secretName"] == "entitle-ledger"


def test_push_cronjob_reads_the_shared_ledger_and_the_token_from_secrets():
    docs = render_chart("--set", "ledger.postgres.existingSecret=entitle-ledger", "--set", "push.enabled=true",
                        "--set", "push.to=lago", "--set", "push.tokenSecret.name=lago-key",
                        "--set", "push.customers.acme=sub_1")
    job = next(d for d in docs if d["kind"] == "CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[:4] == ["usage", "push", "--to", "lago"] and "$(LEDGER_DSN)" in args and "--last-hours" in args
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert env["LEDGER_DSN"]["name"] == "entitle-ledger" and env["ENTITLE_PUSH_TOKEN"]["name"] == "lago-key"
    customers = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("push-customers"))
    assert yaml.safe_load(customers["data"]["customers.yaml"]) == {"acme": "sub_1"}


@pytest.mark.parametrize("values,message", [
    (["push.enabled=true", "push.tokenSecret.name=k"], "needs ledger.postgres.existingSecret"),
    (["push.enabled=true", "ledger.postgres.existingSecret=pg"], "needs push.tokenSecret.name"),
    (["push.enabled=true", "ledger.postgres.existingSecret=pg", "push.tokenSecret.name=k", "push.to=paypal"],
     "/push/to"),
])
def test_push_refuses_what_cannot_work(values, message):
    args = [helm_binary(), "template", "e", "charts/entitle"]
    for value in values:
        args += ["--set", value]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode != 0 and message in done.stderr
