"""`entitle check` decides native and custom kinds like the sources' webhook does."""

from __future__ import annotations

import io
import json
from pathlib import Path

import yaml

from entitle.adapters import check

ROOT = Path(__file__).resolve().parents[2]

STREAM = """
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {entitle.dev/tenant: acme}}
---
apiVersion: entitle.dev/v1alpha1
kind: License
metadata: {name: base}
spec: {tenant: acme, instances: {max: 6}, seats: {max: 2}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a, annotations: {entitle.dev/users: "ann,bob"}}
spec: {replicas: 3}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-1
  namespace: team-a
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: x, controller: true}]
spec: {replicas: 3}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: team-a}
---
apiVersion: batch/v1
kind: Job
metadata: {name: big, namespace: team-a}
spec: {parallelism: 3}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a, annotations: {entitle.dev/users: "ann,bob"}}
spec: {replicas: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: platform}
spec: {replicas: 100}
"""


def run(text: str) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    code = check.main(["-"], "2026-11-27T12:00:00Z", "json", out, err, io.StringIO(text))
    return code, json.loads(out.getvalue())


def test_native_kinds_are_decided_with_the_charts_default_sources():
    code, result = run(STREAM)
    rows = [(d.get("kind", "Workload"), d["name"], d["operation"], d["allowed"], d["reason"]) for d in result["decisions"]]
    assert rows == [
        ("Deployment", "web", "create", True, "Allowed"),
        ("ReplicaSet", "web-1", "create", True, "NotCounted"),      # its Deployment counts
        ("Pod", "bare", "create", True, "Allowed"),
        ("Job", "big", "create", False, "InstanceCapExceeded"),     # 3 + 1 + 3 > 6
        ("Deployment", "web", "update", True, "Allowed"),           # scale down
        ("Deployment", "ingress", "create", True, "NotCounted"),    # no tenant: never touched
    ]
    assert result["decisions"][3]["message"] == "tenant acme: instances 4 + 3 would exceed 6"
    assert result["tenants"]["acme"]["instances"] == {"used": 2, "max": 6}
    assert code == 1


def test_the_streams_own_sources_replace_the_defaults():
    custom = STREAM + """
---
apiVersion: entitle.dev/v1alpha1
kind: InstanceSource
metadata: {name: vms}
spec: {resource: {group: kubevirt.io, version: v1, kind: VirtualMachine}, instanceKind: vm}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm1, namespace: team-a}
spec: {running: true}
"""
    _, result = run(custom)
    kinds = {d.get("kind") for d in result["decisions"]}
    assert kinds == {"VirtualMachine"}          # Deployments etc. are not sourced by this stream
    assert result["decisions"][0]["allowed"] and result["tenants"]["acme"]["instances"]["used"] == 4


def test_the_default_sources_are_the_charts():
    values = yaml.safe_load((ROOT / "charts" / "entitle" / "values.yaml").read_text())
    chart = [{k: v for k, v in s.items() if k not in ("enabled", "plural", "scale")}
             for s in values["instanceSources"] if s.get("enabled")]
    assert chart == check.DEFAULT_SOURCES
