"""Every example does what its README says: applied against the real apiserver with the
operator running, step by step (examples/NN-topic/steps.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.e2e
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/steps.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_does_what_its_readme_says(cluster, operator, example: Path):
    steps = yaml.safe_load((example / "steps.yaml").read_text())
    first = [d for d in yaml.safe_load_all((example / steps[0]["file"]).read_text()) if d]
    licenses = [d["metadata"]["name"] for d in first if d.get("kind") == "License"]
    sources = [d["metadata"]["name"] for d in first if d.get("kind") == "InstanceSource"]
    try:
        _run_steps(cluster, example, steps, licenses, sources)
    finally:
        if sources:   # leave no source behind for the tests that follow
            cluster.kubectl("delete", "instancesource", *sources, "--ignore-not-found", check=False)


def _ready(cluster, source: str) -> bool:
    got = cluster.kubectl("get", "instancesource", source, "-o", "json", check=False)
    conditions = (json.loads(got.stdout).get("status") or {}).get("conditions", []) if got.returncode == 0 else []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _run_steps(cluster, example, steps, licenses, sources):
    for number, step in enumerate(steps):
        if number == 1:
            # The operator must have seen the licenses (their status says so), and be counting
            # the sourced kinds, before denials count.
            for lic in licenses:
                wait_for(lambda: json.loads(cluster.kubectl("get", "license", lic, "-o", "json").stdout)
                         .get("status", {}).get("summary"), message=f"license {lic} status")
            for source in sources:
                wait_for(lambda: _ready(cluster, source), timeout=60, message=f"source {source} Ready")

        def attempt():
            dry = ["--dry-run=server"] if step.get("dryRun") else []
            proc = cluster.kubectl("apply", *dry, "-f", str(example / step["file"]), check=False)
            if step["allowed"] and proc.returncode != 0 and "NoTenant" in proc.stderr:
                return None   # the operator's namespace watch has not caught up yet
            if dry and step.get("warning", "") not in proc.stderr:
                return None   # a what-if: its watch has not delivered every Workload yet (no side effects)
            return proc

        proc = wait_for(attempt, message=f"{example.name}/{step['file']}")
        assert (proc.returncode == 0) == step["allowed"], f"{example.name}/{step['file']}: {proc.stderr}"
        if "contains" in step:
            assert step["contains"] in proc.stderr
        if "warning" in step:
            assert step["warning"] in proc.stderr


def test_usage_export_example_prints_its_expected_output():
    example = ROOT / "examples" / "08-usage-export"
    expected = json.loads((example / "expected.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", "--events",
                           str(example / "events.jsonl"), "--from", expected["from"], "--to", expected["to"]],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected
