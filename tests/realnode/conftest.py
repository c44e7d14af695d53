"""Real pods: the operator image built from the repository's Dockerfile, the Helm chart installed
on a real single-node cluster (kubelet, containerd, kube-proxy; entitle.devenv.node).

These tests need root, containerd, runc, the CNI plugins, buildah and mmdebstrap (Debian
packages; .ci/run installs them). They never skip in CI; outside CI a machine without them
fails with the reason -- set ENTITLE_SKIP_REALNODE=1 to leave them out on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, helm_binary, wait_for

RELEASE, NAMESPACE = "entitle", "entitle-system"
CHART = str(ROOT / "charts" / "entitle")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "realnode" in str(item.fspath):
            item.add_marker(pytest.mark.realnode)
            if os.environ.get("ENTITLE_SKIP_REALNODE") and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason="ENTITLE_SKIP_REALNODE is set"))


def _prerequisites() -> list[str]:
    missing = [tool for tool in ("containerd", "runc", "ctr", "buildah", "mmdebstrap", "nsenter", "iptables", "ip")
               if shutil.which(tool) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("CNI plugins (/usr/lib/cni, Debian containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@dataclass
class Node:
    cluster: object
    image_ref: str
    image_seconds: float
    image_size: int
    pv_dirs: list[Path]
    helm: str
    timings: dict = field(default_factory=dict)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120):
        return self.cluster.kubectl(*args, input=input, check=check, timeout=timeout)

    @property
    def kubeconfig(self) -> str:
        return str(self.cluster.kubeconfig)

    def helm_run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.helm, *args, "--kubeconfig", self.kubeconfig], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {proc.stderr}")
        return proc

    def install(self, tag: str, *extra: str, command: str = "install") -> None:
        repository, _ = self.image_ref.rsplit(":", 1)
        # Only the apiserver reviews: the node's apiserver presents its webhook client certificate,
        # the chart takes its CA from the Secret the node published.
        secret = self.cluster.publish_webhook_client_ca(NAMESPACE)
        self.helm_run(command, RELEASE, CHART, "--namespace", NAMESPACE, "--create-namespace",
                      "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                      "--set", "image.pullPolicy=Never", "--set", f"webhook.clientCA.secretName={secret}",
                      *extra, "--wait", "--timeout", "240s")

    def ready_replicas(self) -> list[str]:
        out = self.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=entitle", "-o", "json")
        ready = []
        for pod in json.loads(out.stdout)["items"]:
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                ready.append(pod["metadata"]["name"])
        return sorted(ready)

    def ledger_records(self) -> list[dict]:
        """Every record of every replica's ledger (read from the volumes on the node)."""
        out = []
        for directory in self.pv_dirs:
            path = directory / "ledger.db"
            if not path.exists():
                continue
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                out += [dict(json.loads(body), _ledger=directory.name) for (body,) in
                        db.execute("SELECT body FROM records ORDER BY seq")]
            finally:
                db.close()
        return out


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    missing = _prerequisites()
    if missing:
        pytest.fail("the real-node tests need: " + ", ".join(missing) + " (set ENTITLE_SKIP_REALNODE=1 to skip them "
                    "outside CI)")
    from entitle.devenv.image import build_image
    from entitle.devenv.node import RealCluster

    started = time.monotonic()
    image = build_image(ROOT)
    image_done = time.monotonic()
    cluster = RealCluster.create(tmp_path_factory.mktemp("realnode"))
    cluster.start()     # (removes what it made when it fails)
    cluster_done = time.monotonic()
    try:
        cluster.import_image(image.archive)
        # Two replicas; spare volumes for the claims of a re-created release.
        pv_dirs = cluster.add_volumes(4)
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        handle = Node(cluster, image.ref, image.seconds, image.size, pv_dirs, helm_binary())
        install_started = time.monotonic()
        handle.install(image.ref.rsplit(":", 1)[1])
    except BaseException:
        cluster.stop_after_failure()    # no node left running behind a failed set-up
        raise
    handle.timings = {"image_build_s": round(image_done - started, 1), "image_size_mib": round(image.size / 2**20),
                      "cluster_start_s": round(cluster_done - image_done, 1),
                      "node_ready_s": round(cluster.timings["node_ready"], 1),
                      "chart_ready_s": round(time.monotonic() - install_started, 1)}
    print(f"\nreal node: {handle.timings}")
    failed_before = getattr(pytest, "_entitle_failed", 0)
    yield handle
    cluster.stop(keep_logs=failed_before != getattr(pytest, "_entitle_failed", 0))


class AdmissionTraffic:
    """Creates and scales Workloads continuously through the apiserver (so through the webhook
    Service), recording every outcome: what an HA test measures."""

    def __init__(self, node: Node, namespace: str, prefix: str) -> None:
        from kubernetes import client, config

        self.api = client.CustomObjectsApi(config.new_client_from_config(node.kubeconfig))
        self.namespace, self.prefix = namespace, prefix
        self.log: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.created: list[str] = []

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            entry = {"start": started}
            try:
                if n % 3 == 0 and self.created:
                    name = self.created[n % len(self.created)]
                    self.api.patch_namespaced_custom_object_scale(
                        "entitle.dev", "v1alpha1", self.namespace, "workloads", name,
                        {"spec": {"replicas": 1 + n % 4}})
                    got = self.api.get_namespaced_custom_object("entitle.dev", "v1alpha1", self.namespace, "workloads", name)
                    entry.update(op="scale", name=name)
                else:
                    name = f"{self.prefix}-{n}"
                    got = self.api.create_namespaced_custom_object("entitle.dev", "v1alpha1", self.namespace, "workloads", {
                        "apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
                        "metadata": {"name": name}, "spec": {"replicas": 1}})
                    self.created.append(name)
                    entry.update(op="create", name=name)
                entry.update(ok=True, uid=got["metadata"]["uid"], generation=got["metadata"]["generation"])
            except Exception as exc:  # noqa: BLE001 -- every failure is a finding
                body = getattr(exc, "body", None)
                entry.update(ok=False, error=(body.decode() if isinstance(body, bytes) else str(body or exc))[:1500])
            entry["end"] = time.monotonic()
            self.log.append(entry)

    def __enter__(self) -> AdmissionTraffic:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.stopped = time.monotonic()

    def wait_for_some(self, count: int = 10) -> None:
        wait_for(lambda: sum(e["ok"] for e in self.log) >= count, timeout=60, message="traffic to flow")

    @property
    def failures(self) -> list[dict]:
        return [e for e in self.log if not e["ok"]]

    @property
    def longest_gap(self) -> float:
        """Longest time without a completed admission, while the traffic ran."""
        ends = sorted(e["end"] for e in self.log if e["ok"])
        marks = [self.started, *ends, self.stopped]
        return max(b - a for a, b in zip(marks, marks[1:]))

    def summary(self) -> dict:
        return {"admissions": sum(e["ok"] for e in self.log), "failed": len(self.failures),
                "longest_gap_s": round(self.longest_gap, 2),
                "p99_s": round(sorted(e["end"] - e["start"] for e in self.log)[int(len(self.log) * 0.99) - 1], 3)
                if self.log else None}
