"""The chart's PrometheusRule, checked and unit-tested by promtool (built from the Prometheus Go
module by hack/build-promtool.sh, cached like helm): the rules parse, and every alert fires on
the series in tests/unit/alerts/entitle-rules-test.yaml exactly when that file says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT, render_chart

ALERTS = Path(__file__).parent / "alerts"


def promtool() -> str:
    out = subprocess.run(["bash", str(ROOT / "hack" / "build-promtool.sh")], capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, f"building promtool failed: {out.stderr[-2000:]}"
    return out.stdout.strip().splitlines()[-1]


def _rules(tmp_path: Path) -> dict:
    docs = render_chart("--set", "metrics.prometheusRule.enabled=true",
                        "--show-only", "templates/prometheusrule.yaml")
    (rule,) = docs
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    return rule["spec"]


def test_the_chart_ships_no_rule_unless_asked():
    assert not [d for d in render_chart() if d.get("kind") == "PrometheusRule"]


def test_promtool_checks_and_tests_every_alert(tmp_path):
    spec = _rules(tmp_path)
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    cases = yaml.safe_load((ALERTS / "entitle-rules-test.yaml").read_text())
    tested = {t["alertname"] for case in cases["tests"] for t in case["alert_rule_test"]}
    fired = {t["alertname"] for case in cases["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    alerts = {r["alert"] for group in spec["groups"] for r in group["rules"] if "alert" in r}
    assert alerts == tested == fired, f"alerts without a firing case: {alerts - fired}; stale cases: {tested - alerts}"

    shutil.copy(ALERTS / "entitle-rules-test.yaml", tmp_path)
    run = subprocess.run([tool, "test", "rules", "entitle-rules-test.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
