"""Shared fixtures. End-to-end tests run against a real kube-apiserver: one started on loopback
(etcd + kube-apiserver + kube-controller-manager, envtest-style), or an existing cluster such
as kind when ``ENTITLE_KUBECONFIG`` names its kubeconfig."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    text = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout}s waiting for {text} (last: {last!r})")


@dataclass
class Cluster:
    kubeconfig: str
    kubectl_bin: str
    # The operator runs as the Helm chart's ServiceAccount (token), never as cluster-admin, so
    # every end-to-end test proves the chart's RBAC sufficient. See ``install_chart_identity``.
    operator_kubeconfig: str = ""
    # The chart's two webhook configurations (URL mode), created before an operator starts.
    webhook_manifests: str = ""
    # The CA of the apiserver's webhook client certificate: every operator in the tests takes
    # reviews from the apiserver only (webhook.clientCAFile). ENTITLE_WEBHOOK_CLIENT_CA names it
    # for an existing cluster (see README "Tests").
    webhook_client_ca: str | None = None
    # A token allowed to read /metrics (the chart's metrics-reader ClusterRole).
    metrics_token: str = ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc


def _kubectl_binary() -> str:
    from entitle.devenv.assets import assets_dir

    found = shutil.which("kubectl")
    if os.environ.get("ENTITLE_KUBECONFIG") and found:
        return found
    return str(assets_dir() / "kubectl")


def prepared_cluster(kubeconfig: str, webhook_client_ca: str | None, identity_dir: Path) -> Cluster:
    """A cluster ready for an operator: the CRDs established and the chart's identity applied."""
    identity_dir.mkdir(parents=True, exist_ok=True)
    c = Cluster(kubeconfig, _kubectl_binary())
    c.webhook_client_ca = webhook_client_ca
    c.kubectl("apply", "-f", str(ROOT / "crds"))
    c.kubectl("wait", "--for=condition=established", "--timeout=60s",
              "crd/licenses.entitle.dev", "crd/workloads.entitle.dev", "crd/instancesources.entitle.dev",
              "crd/usageanchors.entitle.dev")
    install_chart_identity(c, identity_dir)
    return c


def local_cluster(workdir: Path) -> tuple[Cluster, Any]:
    """A local control plane of its own (etcd + kube-apiserver + kube-controller-manager) and
    its prepared :class:`Cluster`; the caller stops the plane."""
    from entitle.devenv.controlplane import ControlPlane

    plane = ControlPlane.create(workdir / "controlplane")
    plane.start()
    return prepared_cluster(str(plane.kubeconfig), str(plane.webhook_client_ca), workdir / "identity"), plane


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    external = os.environ.get("ENTITLE_KUBECONFIG")
    plane = None
    if external:
        c = prepared_cluster(external, os.environ.get("ENTITLE_WEBHOOK_CLIENT_CA") or None,
                             tmp_path_factory.mktemp("identity"))
    else:
        c, plane = local_cluster(tmp_path_factory.mktemp("local"))
    failed_before = getattr(pytest, "_entitle_failed", 0)
    yield c
    if plane is not None:
        # Keep the logs (etcd, kube-apiserver, ...) when the session had failures.
        plane.stop(keep=bool(os.environ.get("ENTITLE_KEEP_LOGS")) or failed_before != getattr(pytest, "_entitle_failed", 0))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL server (tests/postgres.py) for the whole session."""
    from tests.postgres import PostgresServer

    server = PostgresServer(tmp_path_factory.mktemp("postgres")).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real Kafka broker (KRaft, one node; tests/kafka.py) for the whole session."""
    from tests.kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.stop()


OPERATOR_NAMESPACE = "entitle-system"
# Release "entitle" in entitle-system: objects named "entitle" (ServiceAccount, roles, the
# webhook configurations), as a user's `helm install entitle charts/entitle` makes them.
RELEASE = "entitle"


def helm_binary() -> str:
    """helm built from its Go module (hack/build-helm.sh; cached per version)."""
    out = subprocess.run(["bash", str(ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True,
                         timeout=900)
    if out.returncode != 0:
        raise AssertionError(f"building helm failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def render_chart(*args: str, release: str = RELEASE, namespace: str = OPERATOR_NAMESPACE) -> list[dict]:
    import yaml

    out = subprocess.run([helm_binary(), "template", release, str(ROOT / "charts" / "entitle"),
                          "--namespace", namespace, *args], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"helm template failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def install_chart_identity(c: Cluster, workdir: Path) -> None:
    """Apply the chart's ServiceAccount and RBAC, and write a kubeconfig holding a token of
    that ServiceAccount: what the operator can do in the tests is what the chart grants."""
    import yaml

    # As `helm install` would see the cluster: the usage-finalizer MutatingAdmissionPolicy is
    # rendered when the apiserver serves the API (the local control plane enables it).
    versions = [f"admissionregistration.k8s.io/{v}/MutatingAdmissionPolicy" for v in ("v1", "v1beta1")
                if '"mutatingadmissionpolicies"' in c.kubectl("get", "--raw", f"/apis/admissionregistration.k8s.io/{v}",
                                                               check=False).stdout]
    docs = render_chart("--set", "webhook.url=https://127.0.0.1:9", *[a for v in versions for a in ("--api-versions", v)])
    # The chart's identity and its guards: RBAC, the ValidatingAdmissionPolicy that lets only
    # the tenancy label managers set a namespace's tenant label, the usage-finalizer policy.
    identity = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                                   "RoleBinding", "ValidatingAdmissionPolicy",
                                                   "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy",
                                                   "MutatingAdmissionPolicyBinding")
                and not d["metadata"]["name"].endswith("-tenancy")]
    c.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(identity))
    c.webhook_manifests = yaml.safe_dump_all([d for d in docs if d["kind"].endswith("WebhookConfiguration")])
    token = c.kubectl("create", "token", RELEASE, "-n", OPERATOR_NAMESPACE, "--duration=24h").stdout.strip()
    # What Prometheus would be given: the chart's metrics-reader ClusterRole.
    c.kubectl("create", "serviceaccount", "metrics-reader", "-n", OPERATOR_NAMESPACE, check=False)
    c.kubectl("create", "clusterrolebinding", "entitle-test-metrics-reader", f"--clusterrole={RELEASE}-metrics-reader",
              f"--serviceaccount={OPERATOR_NAMESPACE}:metrics-reader", check=False)
    c.metrics_token = c.kubectl("create", "token", "metrics-reader", "-n", OPERATOR_NAMESPACE,
                                "--duration=24h").stdout.strip()
    admin = yaml.safe_load(Path(c.kubeconfig).read_text())
    current = next(x for x in admin["contexts"] if x["name"] == admin["current-context"])["context"]
    server = next(x for x in admin["clusters"] if x["name"] == current["cluster"])
    path = workdir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "cluster", "cluster": server["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}]}))
    c.operator_kubeconfig = str(path)


def pytest_runtest_logreport(report):
    if report.failed:
        pytest._entitle_failed = getattr(pytest, "_entitle_failed", 0) + 1


def read_metrics(port: int, token: str) -> str:
    import ssl
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE    # the operator's own CA
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        return resp.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    """``entitle run`` as a real subprocess, with its webhook on loopback."""

    def __init__(self, cluster: Cluster, workdir: Path, extra_config: dict | None = None,
                 webhook: dict | None = None, port: int | None = None, env: dict | None = None) -> None:
        import yaml

        self.cluster = cluster
        self.env = env or {}
        self.workdir = workdir
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.ledger = workdir / "ledger.db"
        self.clock_file = workdir / "clock"
        config = {
            "ledgerPath": str(self.ledger), "metricsPort": self.metrics_port,
            "statusIntervalSeconds": 0.3, "clockFile": str(self.clock_file), "leaseSeconds": 3,
            # No shutdown drain: these operators are stopped between tests (tests/realnode
            # measures the drain under load).
            "webhook": {"listenHost": "127.0.0.1", "port": self.port, "drainSeconds": 0,
                        "registerURL": f"https://127.0.0.1:{self.port}",
                        # Only the apiserver reviews, in every test.
                        **({"clientCAFile": cluster.webhook_client_ca} if cluster.webhook_client_ca else {}),
                        **(webhook or {})},
        }
        config.update(extra_config or {})
        self.register_url = config["webhook"].get("registerURL") or ""
        self.config = workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "operator.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
        import yaml

        # The chart owns the webhook configurations; the operator (URL mode) only updates them.
        created = self.cluster.kubectl("create", "-f", "-", input=self.cluster.webhook_manifests, check=False)
        if created.returncode != 0 and "AlreadyExists" not in created.stderr:
            raise AssertionError(f"creating the webhook configurations failed: {created.stderr}")
        env = {**os.environ, "KUBECONFIG": self.cluster.operator_kubeconfig or self.cluster.kubeconfig, **self.env}
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "entitle.cli", "run", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(self.workdir))
        log.close()

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(listening, timeout=60, message="the operator's webhook to listen")
        url = self.register_url.rstrip("/") + "/workloads"

        def registered():
            listening()
            got = self.cluster.kubectl("get", "validatingwebhookconfiguration", RELEASE, "-o",
                                       "jsonpath={.webhooks[0].clientConfig.url}", check=False)
            return got.stdout.strip() == url

        wait_for(registered, timeout=60, message=f"the webhook configuration to point at {url}")

        # The URL alone proves little after a restart: it is the same port, while this
        # process serves under a new loopback CA. The apiserver picks up the patched caBundle
        # from its own watch a moment later; until then every call fails TLS verification.
        # Ready means a real request went through the apiserver to this webhook and back.
        probe = {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
                 "metadata": {"name": "entitle-readiness-probe", "namespace": "default"},
                 "spec": {"replicas": 0}}

        def served_through_apiserver():
            listening()
            got = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe),
                                       check=False)
            return "failed calling webhook" not in got.stderr

        wait_for(served_through_apiserver, timeout=60, message="the apiserver to reach the webhook over TLS")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> str:
        """/metrics as an authorized scraper reads it (HTTPS, the metrics-reader's token)."""
        return read_metrics(self.metrics_port, self.cluster.metrics_token)

    def set_clock(self, rfc3339: str | None) -> None:
        if rfc3339 is None:
            self.clock_file.unlink(missing_ok=True)
        else:
            self.clock_file.write_text(rfc3339)

    @property
    def ledger_location(self) -> str:
        """What ``entitle usage export --ledger`` takes: the SQLite path or the PostgreSQL DSN."""
        return self.postgres or str(self.ledger)

    @property
    def postgres(self) -> str | None:
        import yaml

        return (yaml.safe_load(self.config.read_text()).get("ledger") or {}).get("postgres")

    def records(self) -> list[dict]:
        import json
        import sqlite3

        if self.postgres:
            import psycopg

            with psycopg.connect(self.postgres) as db:
                try:
                    return [json.loads(b) for (b,) in db.execute("SELECT body FROM records ORDER BY seq")]
                except psycopg.errors.UndefinedTable:
                    return []
        if not self.ledger.exists():
            return []
        db = sqlite3.connect(str(self.ledger))
        try:
            return [json.loads(b) for (b,) in db.execute("SELECT body FROM records ORDER BY seq")]
        finally:
            db.close()


@pytest.fixture
def operator(cluster, tmp_path):
    op = Operator(cluster, tmp_path).start()
    yield op
    op.stop()
    # The webhook configuration points at this operator only: remove it so later tests
    # (and a failed run) don't leave the apiserver calling a dead endpoint.
    cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", RELEASE,
                    "--ignore-not-found", check=False)
