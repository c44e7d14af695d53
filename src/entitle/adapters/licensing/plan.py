"""`entitle plan -f license.yaml` -- the what-if of a License change, from the live cluster.

Each License in the file is sent to the apiserver as a server-side dry run (a create, or a
replacement of the live spec -- the file is the License as it should be), so it goes through
entitle's License webhook: a refusal (a rule that does not compile, a bad signature...) is
printed with its reason and makes the exit code 1. The impact itself -- every tenant, every
object that would turn ``Entitled=False`` -- is computed here, from the cluster read with the
caller's credentials (``adapters.licensing.picture``) by the webhook's own function
(``domain.license_impact``): the webhook's warnings must fit the apiserver's 4 KiB, this need
not. Where the picture cannot be read, the webhook's summary is printed instead, saying so.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from entitle.adapters.licensing.cli import BadInput, _documents, _is_license, _name_and_spec
from entitle.api import GROUP, VERSION


def _warnings(response: Any) -> list[str]:
    headers = response.headers
    raw = headers.getlist("Warning") if hasattr(headers, "getlist") else [headers.get("Warning") or ""]
    out = []
    for value in raw:
        if not value:
            continue
        text = value.split(" ", 2)[2] if value.startswith("299 ") else value   # 299 - "message"
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.append(text)
    return out


def cmd_plan(args: Any) -> int:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        docs = [d for d in _documents(args.file) if _is_license(d)]
        if not docs:
            raise BadInput(f"{args.file}: no License in it")
        try:
            config.load_kube_config(config_file=args.kubeconfig)
        except Exception as exc:  # noqa: BLE001
            raise BadInput(f"no usable kubeconfig: {exc}") from None
    except BadInput as exc:
        print(f"entitle plan: {exc}", file=sys.stderr)
        return 2
    api_client = client.ApiClient()
    custom = client.CustomObjectsApi(api_client)
    picture = _picture(api_client, args)
    refused = 0
    for doc in docs:
        name, _ = _name_and_spec(doc, args.file)
        try:
            live = custom.get_cluster_custom_object(GROUP, VERSION, "licenses", name)
        except ApiException as exc:
            if exc.status != 404:
                print(f"entitle plan: reading License {name}: {exc.status} {exc.reason}", file=sys.stderr)
                return 2
            live = None
        try:
            if live is None:
                response = custom.create_cluster_custom_object(GROUP, VERSION, "licenses", doc, dry_run="All",
                                                               _preload_content=False)
                action = "create"
            else:
                body = dict(doc, metadata={**live["metadata"], **{k: v for k, v in doc["metadata"].items()
                                                                   if k in ("labels", "annotations")}})
                response = custom.replace_cluster_custom_object(GROUP, VERSION, "licenses", name, body,
                                                                dry_run="All", _preload_content=False)
                action = "update"
        except ApiException as exc:
            try:
                message = json.loads(exc.body).get("message")
            except (TypeError, ValueError):
                message = exc.reason
            print(f"license {name}: refused: {message}")
            refused += 1
            continue
        lines = _warnings(response)
        print(f"license {name} ({action}):")
        if picture is not None:
            lines = _full_impact(picture, doc, live) or lines
        elif not lines:
            print("  (no impact reported: is entitle's License webhook installed and running?)")
        for line in lines:
            print(f"  {line}")
    if picture is not None:
        for note in picture.notes:
            print(f"note: {note}", file=sys.stderr)
    return 1 if refused else 0


def _picture(api_client: Any, args: Any) -> Any:
    from entitle.adapters.licensing.picture import read_picture

    try:
        return read_picture(api_client, args.namespace, args.release)
    except Exception as exc:  # noqa: BLE001 -- the webhook's summary is the fallback
        print(f"entitle plan: cannot read the cluster's picture ({getattr(exc, 'status', '')} "
              f"{getattr(exc, 'reason', exc)}); printing entitle's own summary (it may be cut to 4 KiB)",
              file=sys.stderr)
        return None


def _full_impact(picture: Any, doc: dict, live: dict | None) -> list[str]:
    from datetime import datetime, timezone

    from entitle.domain.license_impact import full, impact, run_to_end
    from entitle.domain.license_review import LicenseRefused, review_license

    try:
        # Signatures are the webhook's to judge (it holds the trusted keys): here, what it changes.
        after = review_license(doc, live, None, picture.state.cluster_id).read
    except LicenseRefused:
        return []
    name = doc["metadata"]["name"]
    return full(run_to_end(impact(picture.state, name, after, datetime.now(timezone.utc))))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="what a License file would change, per tenant, in the live cluster (dry run)")
    p.add_argument("-f", "--file", required=True, help="License YAML ('-' for stdin)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--namespace", default="entitle-system", help="entitle's namespace (its ConfigMap: instance weights)")
    p.add_argument("--release", default="entitle", help="entitle's release name (its ConfigMap's name)")
    p.set_defaults(func=cmd_plan)
