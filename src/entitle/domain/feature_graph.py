"""The feature graph of a tenant (DESIGN "Dashboard and feature graph"). Pure.

Features are nodes, ``requires`` are edges (from the feature to what it requires). A node is
``entitled``, ``trial`` (with its end), ``trial-over``, or ``not-entitled`` -- a feature another
one requires that no license of the tenant grants, or one a catalogue knows (the other Licenses
the caller may read: editions on sale) -- with what would grant it. Soft and hard limits and the
current use are carried for display.

The input is what a tenant may read: its TenantEntitlement's ``status.features`` (the dashboard),
or the same shape computed offline from License files (``entitle features --graph``).
"""

from __future__ import annotations

from dataclasses import dataclass

ENTITLED, TRIAL, TRIAL_OVER, NOT_ENTITLED = "entitled", "trial", "trial-over", "not-entitled"
MAX_NODES = 2_000       # a graph a page can draw; the rest is summarized (absurd catalogues)


@dataclass(frozen=True)
class Node:
    name: str
    state: str
    trial_ends: str | None = None
    limit: int | None = None
    soft_limit: int | None = None
    used: int | None = None
    granted_by: tuple[str, ...] = ()       # for a feature not entitled: what would grant it

    @property
    def caption(self) -> str:
        """One line under the name: the state in words, and the limits (never colour alone)."""
        if self.state == TRIAL:
            text = f"trial until {(self.trial_ends or '')[:10]}"
        elif self.state == TRIAL_OVER:
            text = f"trial ended {(self.trial_ends or '')[:10]}"
        elif self.state == NOT_ENTITLED:
            text = "not entitled" + (f" · in {', '.join(self.granted_by[:2])}" if self.granted_by else "")
        else:
            text = "entitled"
        limits = []
        if self.limit is not None:
            limits.append(f"{self.used or 0}/{self.limit}")
        elif self.used:
            limits.append(f"{self.used} in use")
        if self.soft_limit is not None:
            limits.append(f"soft {self.soft_limit}")
        return text + (" · " + ", ".join(limits) if limits else "")


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]      # (feature, a feature it requires)
    omitted: int = 0                        # nodes left out above MAX_NODES


def feature_graph(features: list[dict], catalogue: dict[str, list[str]] | None = None) -> Graph:
    """``features``: TenantEntitlement ``status.features`` entries; ``catalogue``: feature ->
    what grants it (e.g. ``edition enterprise``), for the features the tenant lacks."""
    nodes: dict[str, Node] = {}
    edges: set[tuple[str, str]] = set()
    for f in features:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            continue
        trial_ends = f.get("trialEnds")
        state = TRIAL_OVER if f.get("trialOver") else TRIAL if trial_ends else ENTITLED
        nodes[f["name"]] = Node(f["name"], state, trial_ends, f.get("limit"), f.get("softLimit"), f.get("used"))
        for required in f.get("requires") or []:
            if isinstance(required, str):
                edges.add((f["name"], required))
    catalogue = catalogue or {}
    missing = {r for _, r in edges if r not in nodes} | {name for name in catalogue if name not in nodes}
    for name in missing:
        nodes[name] = Node(name, NOT_ENTITLED, granted_by=tuple(sorted(set(catalogue.get(name, ())))))
    ordered = sorted(nodes.values(), key=lambda n: (n.state == NOT_ENTITLED and n.name not in {r for _, r in edges},
                                                    n.name))
    kept = ordered[:MAX_NODES]
    names = {n.name for n in kept}
    return Graph(tuple(sorted(kept, key=lambda n: n.name)),
                 tuple(sorted(e for e in edges if e[0] in names and e[1] in names)), len(ordered) - len(kept))


def layers(graph: Graph) -> dict[str, int]:
    """Column of each node: 0 for a feature that requires nothing, else one more than the
    deepest feature it requires (a cycle -- which the License webhook refuses anyway -- is cut)."""
    requires: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
    for a, b in graph.edges:
        requires[a].append(b)
    depth: dict[str, int] = {}

    def visit(name: str, path: frozenset) -> int:
        if name in depth:
            return depth[name]
        below = [visit(r, path | {name}) for r in requires.get(name, ()) if r not in path]
        depth[name] = 1 + max(below) if below else 0
        return depth[name]

    for node in graph.nodes:
        visit(node.name, frozenset())
    return depth


def catalogue_of(licenses: list[tuple[str, str | None, list[str]]]) -> dict[str, list[str]]:
    """From (license name, edition, feature names) of the Licenses the caller may read: feature ->
    ``edition E`` (or ``license L`` where it names no edition)."""
    out: dict[str, set[str]] = {}
    for name, edition, features in licenses:
        for feature in features:
            out.setdefault(feature, set()).add(f"edition {edition}" if edition else f"license {name}")
    return {k: sorted(v) for k, v in out.items()}
