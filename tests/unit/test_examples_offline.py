"""The examples decide the same offline: `entitle check` over each example's files in order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/steps.yaml"))
# Documents that set the scene; every other one (a Workload, a Deployment, a VM...) is decided.
NOT_DECIDED = {"Namespace", "License", "InstanceSource", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_entitle_check_agrees_with_the_example(example):
    # Steps about Licenses alone (the License webhook's refusals and what-if dry runs) are the
    # apiserver's to decide, not `entitle check`'s: they are left out here.
    steps = [step for step in yaml.safe_load((example / "steps.yaml").read_text()) if not step.get("dryRun") and not all(
        d.get("kind") == "License" for d in yaml.safe_load_all((example / step["file"]).read_text()) if d)]
    args = [a for step in steps for a in ("-f", str(example / step["file"]))]
    proc = subprocess.run([sys.executable, "-m", "entitle.cli", "check", *args, "-o", "json",
                           "--now", "2026-11-27T00:00:00Z"], capture_output=True, text=True)
    decisions = json.loads(proc.stdout)["decisions"]
    index = 0
    for step in steps:
        docs = [d for d in yaml.safe_load_all((example / step["file"]).read_text()) if d and d.get("kind") not in NOT_DECIDED]
        mine = decisions[index:index + len(docs)]
        index += len(docs)
        assert all(d["allowed"] for d in mine) == step["allowed"], (step, mine)
        if "contains" in step:
            assert any(step["contains"].split(": ", 1)[-1] in d["message"] for d in mine), (step, mine)
        if "warning" in step:
            assert any(step["warning"] in w for d in mine for w in d["warnings"]), (step, mine)
