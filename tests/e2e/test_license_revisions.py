"""License revisions, the what-if and the audit trail against the real apiserver (DESIGN
"Licenses from a vendor"): a vendor-signed License is applied and updated by `kubectl apply` (the
air-gapped update); `kubectl apply --dry-run=server` and `entitle plan` warn of exactly the
objects whose status then turns Entitled=False; a tampered file is refused; every distinct spec
is kept as a numbered ControllerRevision with who changed it; a rollback restores the signed
spec and the exact effective entitlement; records carry the revisions, and an export over a
window spanning two revisions meters each part against its own limits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from entitle.domain.revisions import spec_hash
from tests.conftest import Operator, wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def cli(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", *args], capture_output=True, text=True, timeout=120,
                          env={"KUBECONFIG": cluster.kubeconfig, "PATH": "/usr/bin:/bin"})
    if check and proc.returncode != 0:
        raise AssertionError(f"entitle {' '.join(args)}: {proc.returncode} {proc.stderr}")
    return proc


def _signed_file(cluster, tmp_path: Path, key: Path, body: dict, name: str) -> Path:
    raw = tmp_path / f"{name}.unsigned.yaml"
    raw.write_text(yaml.safe_dump(body))
    signed = tmp_path / f"{name}.yaml"
    signed.write_text(cli(cluster, "license", "sign", "--key", str(key), "-f", str(raw)).stdout)
    return signed


def _not_entitled(cluster, ns: str) -> set[str]:
    items = json.loads(cluster.kubectl("get", "workloads", "-n", ns, "-o", "json").stdout)["items"]
    out = set()
    for item in items:
        cond = next((c for c in (item.get("status") or {}).get("conditions", []) if c["type"] == "Entitled"), {})
        if cond.get("status") == "False":
            out.add(f"{ns}/{item['metadata']['name']}")
    return out


def _all_statuses_settled(cluster, ns: str, names: list[str]) -> bool:
    items = json.loads(cluster.kubectl("get", "workloads", "-n", ns, "-o", "json").stdout)["items"]
    seen = {i["metadata"]["name"]: i for i in items}
    return all(n in seen and (seen[n].get("status") or {}).get("conditions") for n in names)


def _named(warnings: str) -> set[str]:
    """The objects a warning says would become Entitled=False (all of them: fewer than 10 here);
    `entitle plan` lists them one per line under the tenant's line."""
    found, listing = set(), False
    for line in warnings.splitlines():
        match = re.search(r"would become Entitled=False: (.*)$", line)
        if match:
            found |= {part.split(" (")[0].strip() for part in match.group(1).split(", ")}
        elif listing and line.startswith("    ") and "(" in line:
            found.add(line.strip().split(" (")[0])
            continue
        listing = bool(re.search(r"would become Entitled=False:$", line))
    return found


def _revision(cluster, name: str) -> int | None:
    return ((get(cluster, "license", name) or {}).get("status") or {}).get("revision")


def test_signed_license_what_if_revisions_rollback_audit_and_export(cluster, tmp_path):
    keys = tmp_path / "keys"
    cli(cluster, "license", "keygen", "--key-id", "vendor-1", "--out", str(keys))
    pem = (keys / "vendor-1.pub").read_text()
    operator = Operator(cluster, tmp_path, extra_config={"signingKeys": {"vendor-1": pem}}).start()
    try:
        tenant, ns, name = unique("rv"), unique("ns"), unique("gold")
        started = datetime.now(timezone.utc).replace(microsecond=0)
        v1 = _signed_file(cluster, tmp_path, keys / "vendor-1.key",
                          license(name, tenant, instances={"max": 10}, features=[{"name": "sso"}]), "v1")
        apply(cluster, namespace(ns, tenant))
        applied = cluster.kubectl("apply", "-f", str(v1))
        wait_for(lambda: _revision(cluster, name) == 1, timeout=60, message="revision 1 in status")
        names = [f"w{i}" for i in range(4)] + ["sso"]
        apply(cluster, *[workload(f"w{i}", ns, replicas=2) for i in range(4)],
              workload("sso", ns, replicas=1, features=["sso"]))
        wait_for(lambda: _all_statuses_settled(cluster, ns, names) and not _not_entitled(cluster, ns),
                 timeout=60, message="all five workloads Entitled=True")
        before_status = get(cluster, "license", name)["status"]

        # The vendor's next version: fewer instances, no sso. Signed, then tampered with: refused.
        v2_body = license(name, tenant, instances={"max": 5})
        v2 = _signed_file(cluster, tmp_path, keys / "vendor-1.key", v2_body, "v2")
        tampered = yaml.safe_load(v2.read_text())
        tampered["spec"]["instances"]["max"] = 500
        refused = apply(cluster, tampered, check=False)
        assert refused.returncode != 0 and "SignatureInvalid" in refused.stderr, refused.stderr

        # The what-if: nothing is stored, the warnings name what would turn Entitled=False.
        dry = cluster.kubectl("apply", "--dry-run=server", "-f", str(v2))
        assert "tenant " + tenant in dry.stderr and "instances 9 of 10 -> 5 (OVER)" in dry.stderr, dry.stderr
        predicted = _named(dry.stderr)
        assert predicted, dry.stderr
        assert _revision(cluster, name) == 1 and get(cluster, "license", name)["spec"]["instances"]["max"] == 10
        plan = cli(cluster, "plan", "-f", str(v2))
        assert _named(plan.stdout) == predicted and "instances 9 of 10 -> 5 (OVER)" in plan.stdout, plan.stdout

        # The air-gapped update: kubectl apply of the signed file. The status then agrees.
        cluster.kubectl("apply", "-f", str(v2))
        wait_for(lambda: _revision(cluster, name) == 2, timeout=60, message="revision 2 in status")
        wait_for(lambda: _not_entitled(cluster, ns) == predicted, timeout=60,
                 message=f"exactly {sorted(predicted)} Entitled=False")
        apply(cluster, workload("late", ns, replicas=0))   # recorded while revision 2 holds

        # History: two revisions, who made them, with which field manager; diff shows the change.
        user = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()
        history = cli(cluster, "license", "history", name).stdout
        rows = [line.split() for line in history.splitlines()[1:]]
        assert [r[0] for r in rows] == ["1", "2"], history
        assert all(user in r and "kubectl-client-side-apply" in r for r in rows), history
        assert rows[1][-1] == "current", history
        diff = cli(cluster, "license", "diff", name, "1", "2").stdout
        assert re.search(r"^-\s+max: 10$", diff, re.M) and re.search(r"^\+\s+max: 5$", diff, re.M), diff

        # Rollback: revision 1's spec, signature included -- still valid, the same entitlement.
        cli(cluster, "license", "rollback", name, "--to", "1")
        wait_for(lambda: _revision(cluster, name) == 1, timeout=60, message="back at revision 1")
        restored = get(cluster, "license", name)
        signed_v1 = yaml.safe_load(v1.read_text())["spec"]
        assert restored["spec"]["signature"] == signed_v1["signature"]
        assert spec_hash(restored["spec"]) == spec_hash(signed_v1)   # equal but for the CRD's defaults
        assert restored["metadata"]["annotations"]["entitle.dev/rollback-of"] == "1"
        assert "entitle.dev/rollback-to" not in restored["metadata"]["annotations"]
        wait_for(lambda: not _not_entitled(cluster, ns), timeout=60, message="all entitled again")

        def same_entitlement():
            status = get(cluster, "license", name)["status"]
            valid = next(c for c in status["conditions"] if c["type"] == "Valid")
            return valid["status"] == "True" and all(
                status[p].get(k) == before_status[p].get(k) for p in ("instances", "seats") for k in ("max", "burstExtra"))

        wait_for(same_entitlement, timeout=30, message="the effective entitlement of revision 1")
        assert len(cli(cluster, "license", "history", name).stdout.splitlines()) == 3   # no third revision

        # The records: license records carry the revision and the audit; workload records the
        # revisions they drew on.
        def license_records():
            return [r["data"] for r in operator.records()
                    if r["type"] == "dev.entitle.license.v1" and r["data"]["name"] == name]

        wait_for(lambda: [d.get("revision") for d in license_records()] == [1, 2, 1], timeout=60,
                 message="activated (1), updated (2), rolled back (1)")
        rolled = license_records()[-1]
        assert rolled["rollbackOf"] == 1 and rolled["changedBy"] == user and rolled["fieldManager"] == "entitle-rollback"
        assert rolled["entitlement"]["instances"]["max"] == 10
        by_name = {r["data"]["name"]: r["data"] for r in operator.records()
                   if r["type"] == "dev.entitle.workload.v1" and r["data"]["namespace"] == ns}
        assert by_name["w0"]["licenseRevisions"] == {name: 1}
        assert by_name["late"]["licenseRevisions"] == {name: 2}

        # Export over a window spanning both revisions: over max 5 only while revision 2 held.
        end = datetime.now(timezone.utc) + timedelta(seconds=2)
        out = cli(cluster, "usage", "export", "--ledger", str(operator.ledger), "--from",
                  started.strftime("%Y-%m-%dT%H:%M:%SZ"), "--to", end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "--tenant", tenant, "--format", "json").stdout
        totals = json.loads(out)["tenants"][tenant]
        assert totals["peak_instances"] == 9
        assert totals["overage_instance_hours"] > 0 and totals["instance_hours"] > totals["overage_instance_hours"]
        assert applied.returncode == 0
    finally:
        operator.stop()
