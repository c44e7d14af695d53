"""``entitle dashboard`` in a real browser (Debian's headless Chromium, driven by Playwright)
against the real apiserver and operator: the numbers equal the TenantEntitlement, a user bound
to one namespace sees only that tenant, a denial appears within seconds without a reload, the
feature graph shows the dependencies, and axe-core finds no serious accessibility problem.
Screenshots are kept in ``$ENTITLE_ARTIFACTS`` (default ``.artifacts/``) as test artefacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Operator, wait_for
from tests.e2e.helpers import apply, license, namespace, token_kubeconfig, unique, workload

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("ENTITLE_ARTIFACTS") or ROOT / ".artifacts") / "dashboard"


def _axe() -> str:
    return subprocess.run(["bash", str(ROOT / "hack" / "fetch-axe.sh")], capture_output=True, text=True,
                          check=True).stdout.strip()


class DashboardProcess:
    def __init__(self, kubeconfig: str, log: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "entitle.cli", "dashboard", "--kubeconfig", kubeconfig,
                                      "--port", "0", *extra], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(f"dashboard did not start: {line!r} {log.read_text()[-2000:]}")
        self.url = line.split()[2].rstrip("/")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _kubeconfig_for(cluster, ns: str, sa: str, path: Path) -> str:
    """A kubeconfig of a ServiceAccount token, context namespace ``ns``: a tenant team's."""
    token = cluster.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    return token_kubeconfig(cluster, token, path, namespace=ns)


@pytest.fixture(scope="module")
def scene(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("dashboard")
    a, b = unique("dash-a"), unique("dash-b")
    ns_a, ns_b = unique("dns-a"), unique("dns-b")
    lic_a = license(unique("lic"), a, instances={"max": 10}, seats={"max": 5}, notAfter="2099-01-01T00:00:00Z",
                    edition="pro", features=[{"name": "sso"}, {"name": "audit", "requires": ["sso"], "limit": {"workloads": 3}},
                                             {"name": "ai", "trialEnds": "2098-12-31T00:00:00Z"}])
    lic_b = license(unique("lic"), b, instances={"max": 4})
    op = Operator(cluster, work).start()
    apply(cluster, namespace(ns_a, a), namespace(ns_b, b), lic_a, lic_b)
    wait_for(lambda: apply(cluster, workload("web", ns_a, replicas=6, users=["ann", "bob"], features=["sso", "audit"]),
                           check=False).returncode == 0, message="the first workload admitted")
    apply(cluster, workload("api", ns_b, replicas=1))
    wait_for(lambda: _tent(cluster, ns_a).get("instancesSummary") == "6/10", timeout=60, message="tenant view")
    wait_for(lambda: _tent(cluster, ns_b).get("instancesSummary") == "1/4", timeout=60, message="tenant view b")
    cluster.kubectl("create", "serviceaccount", "viewer", "-n", ns_a)
    cluster.kubectl("create", "rolebinding", "viewer-view", "--clusterrole=view", f"--serviceaccount={ns_a}:viewer",
                    "-n", ns_a)
    wait_for(lambda: cluster.kubectl(f"--as=system:serviceaccount:{ns_a}:viewer", "get", "tent", "-n", ns_a,
                                     check=False).returncode == 0, timeout=60, message="the view role to aggregate")
    tenant_dash = DashboardProcess(_kubeconfig_for(cluster, ns_a, "viewer", work / "viewer.kubeconfig"),
                                   work / "dash-tenant.log")
    admin_dash = DashboardProcess(cluster.kubeconfig, work / "dash-admin.log")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield {"a": a, "b": b, "ns_a": ns_a, "ns_b": ns_b, "tenant": tenant_dash, "admin": admin_dash,
           "browser": browser, "op": op}
    browser.close()
    pw.stop()
    tenant_dash.stop()
    admin_dash.stop()
    op.stop()
    cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "entitle",
                    "--ignore-not-found", check=False)


def _tent(cluster, ns: str) -> dict:
    got = cluster.kubectl("get", "tent", "entitlement", "-n", ns, "-o", "json", check=False)
    return (json.loads(got.stdout).get("status") or {}) if got.returncode == 0 else {}


def _page(scene, bypass_csp: bool = False):
    return scene["browser"].new_context(bypass_csp=bypass_csp, viewport={"width": 1280, "height": 900}).new_page()


def test_a_tenant_user_sees_only_their_tenant_with_the_numbers_of_its_tenant_entitlement(cluster, scene):
    page = _page(scene)
    page.goto(scene["tenant"].url + "/")
    rows = page.locator("table tbody tr th a")
    assert rows.all_inner_texts() == [scene["a"]]
    assert page.goto(f"{scene['tenant'].url}/t/{scene['b']}").status == 404
    page.goto(f"{scene['tenant'].url}/t/{scene['a']}")
    status = _tent(cluster, scene["ns_a"])
    for pool in ("instances", "seats"):
        figure = page.locator(f'[data-pool="{pool}"]')
        assert figure.get_attribute("data-used") == str(status[pool]["used"])
        assert figure.get_attribute("data-max") == str(status[pool]["max"])
    assert "6 of 10" in page.locator("#h-instances + p").inner_text()
    assert status["history"][-1]["instances"] == 6 and page.locator("svg.trend rect.bar").count() >= 1
    assert "2099-01-01" in page.inner_text("main")
    page.screenshot(path=str(ARTIFACTS / "tenant.png"), full_page=True)
    # A platform user (cluster-wide read) sees both tenants.
    admin = _page(scene)
    admin.goto(scene["admin"].url + "/")
    names = set(admin.locator("table tbody tr th a").all_inner_texts())
    assert {scene["a"], scene["b"]} <= names
    admin.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)


def test_the_feature_graph_shows_dependencies_and_states(scene):
    page = _page(scene)
    page.goto(f"{scene['tenant'].url}/t/{scene['a']}")
    graph = page.locator("div.graph svg")
    assert graph.locator('path[data-edge="audit→sso"]').count() == 1
    states = {g.get_attribute("data-feature"): g.get_attribute("data-state") for g in graph.locator("g.node").all()}
    assert states == {"sso": "entitled", "audit": "entitled", "ai": "trial"}
    assert "audit requires sso" in graph.locator("desc").text_content()
    assert "1/3" in graph.locator('g[data-feature="audit"]').text_content()
    graph.screenshot(path=str(ARTIFACTS / "feature-graph.png"))


def test_a_denial_appears_within_seconds_without_a_reload(cluster, scene):
    page = _page(scene)
    page.goto(f"{scene['tenant'].url}/t/{scene['a']}")
    assert "None." in page.locator("h2:has-text('Denials') + *").inner_text()
    denied = apply(cluster, workload("big", scene["ns_a"], replicas=9), check=False)
    assert denied.returncode != 0 and "InstanceCapExceeded" in denied.stderr
    page.locator("table.denials").get_by_text("InstanceCapExceeded").wait_for(timeout=15_000)
    assert "6 + 9 would exceed 10" in page.locator("table.denials").inner_text()
    assert "Updated" in page.locator("#live").inner_text()
    page.screenshot(path=str(ARTIFACTS / "denial.png"), full_page=True)


@pytest.mark.parametrize("where", ["index", "tenant"])
def test_axe_finds_no_serious_accessibility_problem(scene, where):
    page = _page(scene, bypass_csp=True)          # (to inject axe-core; the page's own CSP forbids it)
    page.goto(scene["tenant"].url + ("/" if where == "index" else f"/t/{scene['a']}"))
    page.add_script_tag(path=_axe())
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
    assert not serious, serious
    # Keyboard: the skip link is the first stop and leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
