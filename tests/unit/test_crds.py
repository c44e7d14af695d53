"""The CRDs are generated from the models and never drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from entitle.adapters import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_crds_check_passes_on_the_committed_files():
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "crds", "--check", "--root", str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_crds_check_fails_on_drift(tmp_path):
    crdgen.write(tmp_path)
    path = tmp_path / "crds" / "entitle.dev_workloads.yaml"
    path.write_text(path.read_text().replace("Number of instances.", "Edited by hand."))
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "crds", "--check", "--root", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "entitle.dev_workloads.yaml: differs from the models" in proc.stderr


def _walk(schema, path="spec"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema and "properties" in schema["items"]:
        yield from _walk(schema["items"], f"{path}[]")


def test_every_spec_field_is_described_and_tenant_is_immutable():
    crds = crdgen.build_crds()
    for crd in crds.values():
        version = crd["spec"]["versions"][0]
        props = version["schema"]["openAPIV3Schema"]["properties"]
        # A status-only kind (TenantEntitlement) has no spec; what it has must be explained.
        top = "spec" if "spec" in props else "status"
        for path, node in _walk(props[top]):
            assert node.get("description"), f"{crd['metadata']['name']}: {path} has no description"
        assert version["additionalPrinterColumns"]
    lic = crds["entitle.dev_licenses.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert {"rule": "self == oldSelf", "message": "tenant is immutable"} in \
        lic["properties"]["spec"]["properties"]["tenant"]["x-kubernetes-validations"]
    wl = crds["entitle.dev_workloads.yaml"]["spec"]["versions"][0]
    assert wl["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert wl["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]["minimum"] == 0


def test_chart_carries_the_same_crds():
    for name in crdgen.render():
        assert (ROOT / "crds" / name).read_text() == (ROOT / "charts" / "entitle" / "crds" / name).read_text()
        yaml.safe_load((ROOT / "crds" / name).read_text())


def test_import_layers_hold():
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
