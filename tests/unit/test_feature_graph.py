"""The feature graph (domain.feature_graph) and its drawings (adapters.dashboard.graph_render)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from entitle.adapters.dashboard.graph_render import to_dot, to_svg
from entitle.domain.feature_graph import catalogue_of, feature_graph, layers

FEATURES = [
    {"name": "sso", "used": 2},
    {"name": "audit", "requires": ["sso"], "trialEnds": "2027-01-31T00:00:00Z", "limit": 5, "used": 1},
    {"name": "export", "requires": ["audit", "warehouse"], "softLimit": 3},
    {"name": "ai", "trialEnds": "2026-01-01T00:00:00Z", "trialOver": True},
]


def test_states_edges_and_what_would_grant_a_missing_feature():
    catalogue = catalogue_of([("ent-template", "enterprise", ["warehouse", "sso", "sandbox"]),
                              ("addon-1", None, ["warehouse"])])
    g = feature_graph(FEATURES, catalogue)
    states = {n.name: n.state for n in g.nodes}
    assert states == {"sso": "entitled", "audit": "trial", "export": "entitled", "ai": "trial-over",
                      "warehouse": "not-entitled", "sandbox": "not-entitled"}
    assert set(g.edges) == {("audit", "sso"), ("export", "audit"), ("export", "warehouse")}
    node = {n.name: n for n in g.nodes}
    assert node["warehouse"].granted_by == ("edition enterprise", "license addon-1")
    assert node["audit"].caption == "trial until 2027-01-31 · 1/5"
    assert node["export"].caption == "entitled · soft 3"
    assert layers(g) == {"sso": 0, "warehouse": 0, "sandbox": 0, "ai": 0, "audit": 1, "export": 2}


def test_dot_and_svg_are_well_formed_and_say_everything_in_text():
    g = feature_graph(FEATURES + [{"name": 'we"ird\\name', "requires": ["sso"]}])
    dot = to_dot(g)
    assert dot.startswith('digraph "features" {') and '"audit" -> "sso" [label="requires"];' in dot
    assert '"we\\"ird\\\\name"' in dot
    svg = ET.fromstring(to_svg(g, "acme features"))
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.get("role") == "img" and svg.find(f"{ns}title").text == "acme features"
    assert "export requires audit" in svg.find(f"{ns}desc").text
    nodes = {n.get("data-feature"): n.get("data-state") for n in svg.iter(f"{ns}g")}
    assert nodes["warehouse"] == "not-entitled" and nodes["ai"] == "trial-over"
    assert len([p for p in svg.iter(f"{ns}path") if p.get("data-edge")]) == 4


def test_a_cycle_and_junk_entries_do_not_break_it():
    g = feature_graph([{"name": "a", "requires": ["b"]}, {"name": "b", "requires": ["a"]}, "junk", {"name": 3}])
    assert {n.name for n in g.nodes} == {"a", "b"} and set(layers(g).values()) <= {0, 1}
    ET.fromstring(to_svg(g))


def test_entitle_features_graph_offline_from_license_files(tmp_path):
    import subprocess
    import sys

    from tests.unit.test_examples_offline import ROOT

    manifests = str(ROOT / "examples" / "04-features" / "manifests.yaml")
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text("apiVersion: entitle.dev/v1alpha1\nkind: License\nmetadata: {name: enterprise-template}\n"
                         "spec: {tenant: catalogue, edition: enterprise, features: [{name: warehouse}]}\n")
    run = [sys.executable, "-m", "entitle.cli", "features", "--graph", "-f", manifests, "--now", "2026-11-27T00:00:00Z"]
    dot = subprocess.run(run + ["--tenant", "hooli", "-f", str(catalogue)], capture_output=True, text=True)
    assert dot.returncode == 0, dot.stderr
    assert '"audit" -> "sso"' in dot.stdout and '"warehouse" [label="warehouse\\nnot entitled · in edition enterprise"' \
        in dot.stdout
    svg = subprocess.run(run + ["-o", "svg"], capture_output=True, text=True)
    assert svg.returncode == 0 and ET.fromstring(svg.stdout).get("role") == "img"
    several = subprocess.run(run + ["-f", str(catalogue)], capture_output=True, text=True)
    assert several.returncode == 2 and "pass --tenant" in several.stderr and "Traceback" not in several.stderr
