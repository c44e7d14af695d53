"""``entitle fleet status --hub-kubeconfig K [-o table|json]``: per tenant, the fleet cap (what
the hub's fleet Licenses stack to), and each member cluster's lease, floor and usage as they
wrote them into the hub's lease book (docs/fleet.md). Read-only."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any

from entitle.domain.fleet import POOLS


def status(hub_api: Any, core: Any, namespace: str, now: datetime) -> dict:
    from pydantic import ValidationError

    from entitle.api import License
    from entitle.domain.entitlement import effective_entitlement
    from entitle.domain.licenses import read_license

    licenses = hub_api.list_cluster_custom_object("entitle.dev", "v1alpha1", "licenses").get("items", [])
    by_tenant: dict[str, list] = {}
    problems = []
    for body in licenses:
        if not (body.get("spec") or {}).get("fleet"):
            continue
        try:
            lic = License.model_validate(body)
        except ValidationError as exc:
            problems.append(f"{body['metadata']['name']}: {exc.errors()[0]['msg']}")
            continue
        by_tenant.setdefault(lic.spec.tenant, []).append(read_license(lic, {}, None))
    books = {b.tenant: b for b in _books(core, namespace)}
    out = {}
    for tenant in sorted(set(by_tenant) | set(books)):
        ent = effective_entitlement(tenant, by_tenant.get(tenant, []), now)
        book = books.get(tenant)
        clusters = {}
        for cluster, e in sorted((book.entries if book else {}).items()):
            clusters[cluster] = {pool: {"lease": e.of(pool), "floor": e.floor_of(pool), "used": e.usage.get(pool, 0)}
                                 for pool in POOLS} | {"renewals": e.renewals, "leaseSeconds": e.period}
        caps = {pool: getattr(ent, pool).max for pool in POOLS} if ent.active else {}
        out[tenant] = {"licenses": list(ent.licenses), "caps": caps, "clusters": clusters,
                       "used": {pool: sum(c[pool]["used"] for c in clusters.values()) for pool in POOLS},
                       **({"unreadable": book.corrupt} if book is not None and book.corrupt else {})}
    return {"tenants": out, "problems": problems}


def _books(core: Any, namespace: str) -> list:
    from kubernetes.client.exceptions import ApiException

    from entitle.adapters.kube.fleet_leases import LABEL, decode

    try:
        items = core.list_namespaced_config_map(namespace, label_selector=f"{LABEL}=true").items
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return [decode((cm.metadata.annotations or {}).get("entitle.dev/tenant", ""), cm.metadata.resource_version,
                   cm.data) for cm in items if (cm.metadata.annotations or {}).get("entitle.dev/tenant")]


def table(result: dict) -> str:
    lines = []
    for tenant, t in result["tenants"].items():
        caps = ", ".join(f"{p} {'unlimited' if t['caps'].get(p) is None else t['caps'][p]}" for p in POOLS
                         if p in t["caps"]) or "no active fleet License"
        lines.append(f"{tenant}: cap {caps}; used {t['used']['instances']} instances, {t['used']['seats']} seats")
        for cluster, c in t["clusters"].items():
            lines.append("  " + cluster + ": " + "; ".join(
                f"{p} lease {c[p]['lease']} (floor {c[p]['floor']}) used {c[p]['used']}" for p in POOLS))
        if t.get("unreadable"):
            lines.append(f"  lease book unreadable: {t['unreadable']}")
    lines += [f"fleet License not readable: {p}" for p in result["problems"]]
    return "\n".join(lines) if lines else "no fleet License and no lease book in the hub"


def main(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    try:
        hub = config.new_client_from_config(config_file=args.hub_kubeconfig)
        result = status(client.CustomObjectsApi(hub), client.CoreV1Api(hub), args.namespace, datetime.now(timezone.utc))
    except Exception as exc:  # noqa: BLE001 -- an unreachable hub, a bad kubeconfig: one line, exit 2
        print(f"entitle fleet status: cannot read the hub: {str(exc)[:300]}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.output == "json" else table(result))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fleet", help="fleet mode (docs/fleet.md)")
    fsub = p.add_subparsers(dest="fleet_command", required=True)
    st = fsub.add_parser("status", help="per tenant: the fleet cap, each cluster's lease and usage (from the hub)")
    st.add_argument("--hub-kubeconfig", required=True, help="kubeconfig of the hub cluster")
    st.add_argument("--namespace", default="entitle-fleet", help="the hub's fleet namespace (default entitle-fleet)")
    st.add_argument("-o", "--output", choices=["table", "json"], default="table")
    st.set_defaults(func=main)
