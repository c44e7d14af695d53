"""``entitle features --graph -f license.yaml [-f more.yaml] [--tenant T] [-o dot|svg]``: a
tenant's feature graph, offline, from License files (DESIGN "Dashboard and feature graph").

The tenant's entitlement is what its active Licenses in the files stack to at ``--now``, decided
by the same engine as admission; every License in the files (other tenants' too: an edition
catalogue) tells what would grant a feature the tenant lacks."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from entitle.adapters.check import BadInput, parse_now, read_documents
from entitle.adapters.dashboard.graph_render import to_dot, to_svg
from entitle.domain.feature_graph import catalogue_of, feature_graph
from entitle.domain.state import ClusterState

EXIT_BAD_INPUT = 2


def _licenses(files: list[str], stdin: TextIO | None) -> list[Any]:
    from pydantic import ValidationError

    from entitle.api.license import License

    out = []
    for doc in read_documents(files, stdin):
        if doc.body.get("kind") != "License":
            continue
        try:
            out.append(License.model_validate(doc.body))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise BadInput(f"{doc.where('.'.join(str(p) for p in first['loc']))}: {first['msg']}") from None
    if not out:
        raise BadInput("no License in the input")
    return out


def graph_text(files: list[str], tenant: str | None, output: str, now_text: str | None,
               stdin: TextIO | None = None) -> str:
    now = parse_now(now_text)
    licenses = _licenses(files, stdin)
    tenants = sorted({lic.spec.tenant for lic in licenses})
    if tenant is None:
        if len(tenants) != 1:
            raise BadInput(f"the files hold Licenses of several tenants ({', '.join(tenants[:10])}): pass --tenant")
        tenant = tenants[0]
    elif tenant not in tenants:
        raise BadInput(f"no License of tenant {tenant!r} in the files (tenants: {', '.join(tenants[:10])})")
    state = ClusterState()
    for lic in licenses:
        state.set_license(lic)
    ent = state.entitlement(tenant, now)
    features = [{"name": f.name, "requires": sorted(f.requires),
                 **({"trialEnds": f.trial_ends.isoformat().replace("+00:00", "Z"),
                     "trialOver": now >= f.trial_ends} if f.trial_ends is not None else {}),
                 **({"limit": f.limit} if f.limit is not None else {}),
                 **({"softLimit": f.soft_limit} if f.soft_limit is not None else {})}
                for f in sorted(ent.features.values(), key=lambda f: f.name)]
    catalogue = catalogue_of([(lic.metadata.name, lic.spec.edition, [f.name for f in lic.spec.features])
                              for lic in licenses])
    graph = feature_graph(features, catalogue)
    return to_dot(graph, f"{tenant} features") if output == "dot" else to_svg(graph, f"Features of {tenant}") + "\n"


def main(args: argparse.Namespace, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    try:
        if not args.graph:
            raise BadInput("say what to print: --graph")
        if not args.file:
            raise BadInput("no input: pass -f FILE (or -f - for standard input)")
        stdout.write(graph_text(args.file, args.tenant, args.output, args.now, sys.stdin))
    except BadInput as exc:
        print(f"entitle features: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("features", help="a tenant's feature graph from License files (offline): DOT or SVG")
    p.add_argument("--graph", action="store_true", help="print the feature graph")
    p.add_argument("-f", "--file", action="append", help="License YAML ('-' for stdin); repeatable")
    p.add_argument("--tenant", help="whose graph (default: the only tenant in the files)")
    p.add_argument("-o", "--output", choices=["dot", "svg"], default="dot")
    p.add_argument("--now", help="RFC 3339 time to decide trials and validity at (default: now)")
    p.set_defaults(func=main)
