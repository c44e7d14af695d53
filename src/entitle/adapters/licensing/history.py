"""`entitle license history | diff | rollback` -- License revisions in the live cluster.

Revisions are the ControllerRevisions the leader keeps (``operator.revisions``), found by the
License's uid label in the operator's namespace. A rollback writes revision N's spec -- the
signature included, so a signed license stays validly signed -- back onto the License with the
annotation ``entitle.dev/rollback-to: N``; the License webhook records it as a rollback in the
audit trail. A concurrent change of the License (409 Conflict) is re-read and retried.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

import yaml

from entitle.api import GROUP, VERSION
from entitle.domain.revisions import ROLLBACK_TO, spec_hash
from entitle.api.objects import metadata

LICENSE_UID_LABEL = "entitle.dev/license-uid"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class HistoryError(Exception):
    """The License or the revision asked for does not exist, or the cluster cannot be reached."""


def _clients(kubeconfig: str | None) -> tuple[Any, Any, Any]:
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig)
    except Exception as exc:  # noqa: BLE001 -- no kubeconfig: say so in one line
        raise HistoryError(f"no usable kubeconfig: {exc}") from None
    api = client.ApiClient()
    return api, client.CustomObjectsApi(api), client.AppsV1Api(api)


def _license(custom: Any, name: str) -> dict:
    from kubernetes.client.rest import ApiException

    try:
        return custom.get_cluster_custom_object(GROUP, VERSION, "licenses", name)
    except ApiException as exc:
        if exc.status == 404:
            raise HistoryError(f"License {name} not found") from None
        raise HistoryError(f"reading License {name}: {exc.status} {exc.reason}") from None


def revisions(kubeconfig: str | None, name: str, namespace: str) -> tuple[dict, list[dict]]:
    """(the License, its revisions as dicts, oldest first)."""
    api, custom, apps = _clients(kubeconfig)
    lic = _license(custom, name)
    uid = lic["metadata"]["uid"]
    from kubernetes.client.rest import ApiException

    try:
        listing = apps.list_namespaced_controller_revision(namespace, label_selector=f"{LICENSE_UID_LABEL}={uid}")
    except ApiException as exc:
        raise HistoryError(f"listing revisions in namespace {namespace}: {exc.status} {exc.reason}") from None
    items = [api.sanitize_for_serialization(item) for item in listing.items]
    return lic, sorted(items, key=lambda r: r.get("revision") or 0)


def _find(revs: list[dict], number: int, name: str) -> dict:
    for rev in revs:
        if rev.get("revision") == number:
            return rev
    known = ", ".join(str(r.get("revision")) for r in revs) or "none"
    raise HistoryError(f"License {name} has no revision {number} (revisions: {known})")


def cmd_history(args: Any) -> int:
    try:
        lic, revs = revisions(args.kubeconfig, args.name, args.namespace)
    except HistoryError as exc:
        print(f"entitle license history: {exc}", file=sys.stderr)
        return 2
    current = spec_hash(lic.get("spec"))
    rows = [("REVISION", "HASH", "CHANGED-AT", "CHANGED-BY", "FIELD-MANAGER", "NOTE")]
    for rev in revs:
        audit = (rev.get("data") or {}).get("audit") or {}
        digest = (metadata(rev).get("annotations") or {}).get("entitle.dev/spec-hash", "")
        notes = []
        if audit.get("rollbackOf"):
            notes.append(f"rollback to {audit['rollbackOf']}")
        if digest == current:
            notes.append("current")
        rows.append((str(rev.get("revision")), digest, audit.get("changedAt") or "-", audit.get("changedBy") or "-",
                     audit.get("fieldManager") or "-", ", ".join(notes)))
    if len(rows) == 1:
        print(f"License {args.name} has no revisions yet (the operator's leader keeps them)", file=sys.stderr)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_diff(args: Any) -> int:
    """Unified diff of two revisions' specs (exit 0 either way: a diff is an answer, not a verdict)."""
    try:
        _, revs = revisions(args.kubeconfig, args.name, args.namespace)
        a, b = _find(revs, args.a, args.name), _find(revs, args.b, args.name)
    except HistoryError as exc:
        print(f"entitle license diff: {exc}", file=sys.stderr)
        return 2

    def text(rev: dict) -> list[str]:
        return yaml.safe_dump((rev.get("data") or {}).get("spec"), sort_keys=True).splitlines(keepends=True)

    sys.stdout.writelines(difflib.unified_diff(text(a), text(b), f"{args.name} revision {args.a}",
                                               f"{args.name} revision {args.b}"))
    return 0


def cmd_rollback(args: Any) -> int:
    from kubernetes.client.rest import ApiException

    try:
        _, custom, _ = _clients(args.kubeconfig)
        for _attempt in range(8):
            lic, revs = revisions(args.kubeconfig, args.name, args.namespace)
            target = _find(revs, args.to, args.name)
            spec = (target.get("data") or {}).get("spec")
            if spec_hash(lic.get("spec")) == spec_hash(spec):
                print(f"license {args.name} is already at revision {args.to}")
                return 0
            lic["spec"] = spec
            lic.pop("status", None)
            annotations = lic["metadata"].setdefault("annotations", {})
            annotations[ROLLBACK_TO] = str(args.to)
            if LAST_APPLIED in annotations:
                # kubectl's three-way merge starts from this: left at the newer file, re-applying
                # that file after the rollback would change nothing. It now says revision N.
                annotations[LAST_APPLIED] = _last_applied(lic)
            try:
                custom.replace_cluster_custom_object(GROUP, VERSION, "licenses", args.name, lic,
                                                     field_manager="entitle-rollback")
            except ApiException as exc:
                if exc.status == 409:
                    continue   # changed meanwhile: read again, roll back onto the newer version
                raise HistoryError(f"writing License {args.name}: {exc.status} {_reason(exc)}") from None
            print(f"license {args.name} rolled back to revision {args.to}")
            return 0
        raise HistoryError(f"License {args.name} kept changing (8 conflicts); try again")
    except HistoryError as exc:
        print(f"entitle license rollback: {exc}", file=sys.stderr)
        return 2


def _last_applied(lic: dict) -> str:
    import json

    meta = lic["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != LAST_APPLIED and not k.startswith("entitle.dev/")}
    kept = {"name": meta["name"], **({"labels": meta["labels"]} if meta.get("labels") else {}),
            **({"annotations": annotations} if annotations else {})}
    return json.dumps({"apiVersion": lic.get("apiVersion"), "kind": lic.get("kind"), "metadata": kept,
                       "spec": lic["spec"]}, separators=(",", ":"), sort_keys=True) + "\n"


def _reason(exc: Any) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError):
        return str(exc.reason)


def add_parsers(lsub: Any) -> None:
    def common(p: Any) -> None:
        p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
        p.add_argument("--namespace", default="entitle-system",
                       help="the operator's namespace, where revisions are kept (default: entitle-system)")

    hi = lsub.add_parser("history", help="the revisions of a License: number, hash, when, who")
    hi.add_argument("name")
    common(hi)
    hi.set_defaults(func=cmd_history)
    di = lsub.add_parser("diff", help="unified diff of two revisions' specs")
    di.add_argument("name")
    di.add_argument("a", type=int)
    di.add_argument("b", type=int)
    common(di)
    di.set_defaults(func=cmd_diff)
    rb = lsub.add_parser("rollback", help="apply revision N's spec (signature included) to the License")
    rb.add_argument("name")
    rb.add_argument("--to", type=int, required=True, help="the revision number to restore")
    common(rb)
    rb.set_defaults(func=cmd_rollback)
