"""``entitle check``: JSON shape, exit codes, and errors naming file, document and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"entitle.dev/tenant": "acme"}}}
LIC = {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "base"},
       "spec": {"tenant": "acme", "instances": {"max": 5}, "seats": {"max": 2}, "features": [{"name": "sso"}]}}


def wl(name, **spec):
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}


def run(tmp_path: Path, *docs, extra=(), text: str | None = None):
    path = tmp_path / "input.yaml"
    path.write_text(text if text is not None else yaml.safe_dump_all(docs))
    return subprocess.run([sys.executable, "-m", "entitle.cli", "check", "-f", str(path),
                           "--now", "2026-11-27T00:00:00Z", "-o", "json", *extra],
                          capture_output=True, text=True)


def test_all_allowed_exits_0_with_the_design_json_shape(tmp_path):
    proc = run(tmp_path, NS, LIC, wl("a", replicas=2, users=["ann"], features=["sso"]), wl("a", replicas=3))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["decisions"] == [
        {"namespace": "team-a", "name": "a", "operation": "create", "allowed": True, "reason": "Allowed",
         "message": "", "warnings": []},
        {"namespace": "team-a", "name": "a", "operation": "update", "allowed": True, "reason": "Allowed",
         "message": "", "warnings": []},
    ]
    assert out["tenants"] == {"acme": {"instances": {"used": 3, "max": 5}, "seats": {"used": 0, "max": 2},
                                       "features": {}}}


def test_a_denial_exits_1_and_delete_annotation_frees_capacity(tmp_path):
    delete = wl("a")
    delete["metadata"]["annotations"] = {"entitle.dev/check-operation": "delete"}
    proc = run(tmp_path, NS, LIC, wl("a", replicas=5), wl("b", replicas=1), delete, wl("b", replicas=1))
    assert proc.returncode == 1
    d = json.loads(proc.stdout)["decisions"]
    assert [(x["name"], x["operation"], x["allowed"], x["reason"]) for x in d] == [
        ("a", "create", True, "Allowed"), ("b", "create", False, "InstanceCapExceeded"),
        ("a", "delete", True, "Allowed"), ("b", "create", True, "Allowed")]
    assert d[1]["message"] == "tenant acme: instances 5 + 1 would exceed 5"


def test_bad_field_exits_2_naming_file_document_and_field(tmp_path):
    proc = run(tmp_path, NS, LIC, wl("a", replicas=-1))
    assert proc.returncode == 2
    assert "input.yaml: document 3 (Workload a): field spec.replicas" in proc.stderr


def test_bad_yaml_and_bad_now_exit_2(tmp_path):
    proc = run(tmp_path, text="kind: [unclosed\n")
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr
    proc = run(tmp_path, NS, extra=("--now", "yesterday"))
    assert proc.returncode == 2 and "--now" in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "entitle.cli", "check", "-f", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.yaml: cannot read" in missing.stderr


def test_table_output(tmp_path):
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump_all([NS, LIC, wl("a", replicas=9)]))
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "check", "-f", str(path), "--now", "2026-11-27T00:00:00Z"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "InstanceCapExceeded" in proc.stdout and "tenant acme: instances 0 + 9 would exceed 5" in proc.stdout


def test_what_the_cluster_refuses_is_bad_input_offline_too(tmp_path):
    """The CRD's schema, its immutable fields and the License webhook's refusals: entitle check
    refuses what the cluster refuses (issue 27), with the file, document and field."""
    forever = {**LIC, "spec": {**LIC["spec"], "gracePeriod": "99999999999w"}}
    proc = run(tmp_path, NS, forever)
    assert proc.returncode == 2 and "spec.gracePeriod: the cluster refuses this" in proc.stderr, proc.stderr
    moved = {**LIC, "spec": {**LIC["spec"], "tenant": "other"}}
    proc = run(tmp_path, NS, LIC, moved)
    assert proc.returncode == 2 and "document 3" in proc.stderr and "tenant is immutable" in proc.stderr
    backwards = {**LIC, "spec": {**LIC["spec"], "notBefore": "2026-02-01T00:00:00Z", "notAfter": "2026-01-01T00:00:00Z"}}
    proc = run(tmp_path, NS, backwards)
    assert proc.returncode == 2 and "the cluster refuses this License" in proc.stderr
    uncompilable = {**LIC, "spec": {**LIC["spec"], "rules": [{"name": "r", "expression": "workload.spec.replicas <"}]}}
    assert run(tmp_path, NS, uncompilable).returncode == 2
    assert run(tmp_path, NS, {**LIC, "spec": {**LIC["spec"], "gracePeriod": "999999999w"}}).returncode == 0


def test_export_refuses_a_time_out_of_range(tmp_path):
    for bound in ("0000-01-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        proc = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--events", "/dev/null",
                               "--from", bound, "--to", "2026-01-01T00:00:00Z"], capture_output=True, text=True)
        assert proc.returncode == 2 and "out of range" in proc.stderr, proc.stderr
