"""`entitle plan -f license.yaml` -- the what-if of a License change, from the live cluster.

Each License in the file is sent to the apiserver as a server-side dry run (a create, or a
replacement of the live spec -- the file is the License as it should be), so it goes through
entitle's License webhook, which answers with the impact per tenant. The same warnings
`kubectl apply --dry-run=server` prints; nothing is stored. A refusal (a rule that does not
compile, a bad signature...) is printed with its reason and makes the exit code 1.
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
    custom = client.CustomObjectsApi(client.ApiClient())
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
        if not lines:
            print("  (no impact reported: is entitle's License webhook installed and running?)")
        for line in lines:
            print(f"  {line}")
    return 1 if refused else 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="what a License file would change, per tenant, in the live cluster (dry run)")
    p.add_argument("-f", "--file", required=True, help="License YAML ('-' for stdin)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    p.set_defaults(func=cmd_plan)
