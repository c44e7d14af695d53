"""Helpers for end-to-end tests: manifests and API calls through the real apiserver."""

from __future__ import annotations

import json
import uuid

import yaml


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def namespace(name: str, tenant: str | None) -> dict:
    labels = {"entitle.dev/tenant": tenant} if tenant else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def license(name: str, tenant: str, **spec) -> dict:
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": name},
            "spec": {"tenant": tenant, **spec}}


def workload(name: str, ns: str, **spec) -> dict:
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def apply(cluster, *objects: dict, check: bool = True):
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects), check=check)


def get(cluster, kind: str, name: str, ns: str | None = None) -> dict | None:
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    proc = cluster.kubectl(*args, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def api_client(cluster):
    from kubernetes import client, config

    return client.CustomObjectsApi(config.new_client_from_config(cluster.kubeconfig))


def token_kubeconfig(cluster, token: str, path, namespace: str | None = None) -> str:
    """A kubeconfig of its own for a bearer token on ``cluster``'s apiserver (someone else than
    the admin: a tenant's ServiceAccount, say), its context in ``namespace`` if given."""
    from pathlib import Path

    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    current = next(x for x in admin["contexts"] if x["name"] == admin["current-context"])["context"]
    server = next(x for x in admin["clusters"] if x["name"] == current["cluster"])
    context = {"cluster": "c", "user": "me", **({"namespace": namespace} if namespace else {})}
    Path(path).write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "me",
        "clusters": [{"name": "c", "cluster": server["cluster"]}],
        "users": [{"name": "me", "user": {"token": token}}],
        "contexts": [{"name": "me", "context": context}]}))
    return str(path)
