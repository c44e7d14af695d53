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


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    external = os.environ.get("ENTITLE_KUBECONFIG")
    plane = None
    if external:
        kubeconfig = external
    else:
        from entitle.devenv.controlplane import ControlPlane

        plane = ControlPlane.create(tmp_path_factory.mktemp("controlplane"))
        plane.start()
        kubeconfig = str(plane.kubeconfig)
    c = Cluster(kubeconfig, _kubectl_binary())
    c.kubectl("apply", "-f", str(ROOT / "crds"))
    c.kubectl("wait", "--for=condition=established", "--timeout=60s",
              "crd/licenses.entitle.dev", "crd/workloads.entitle.dev")
    failed_before = getattr(pytest, "_entitle_failed", 0)
    yield c
    if plane is not None:
        # Keep the logs (etcd, kube-apiserver, ...) when the session had failures.
        plane.stop(keep=bool(os.environ.get("ENTITLE_KEEP_LOGS")) or failed_before != getattr(pytest, "_entitle_failed", 0))


def pytest_runtest_logreport(report):
    if report.failed:
        pytest._entitle_failed = getattr(pytest, "_entitle_failed", 0) + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    """``entitle run`` as a real subprocess, with its webhook on loopback."""

    def __init__(self, cluster: Cluster, workdir: Path, extra_config: dict | None = None,
                 webhook: dict | None = None, port: int | None = None) -> None:
        import yaml

        self.cluster = cluster
        self.workdir = workdir
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.ledger = workdir / "ledger.db"
        self.clock_file = workdir / "clock"
        config = {
            "ledgerPath": str(self.ledger), "metricsPort": self.metrics_port,
            "statusIntervalSeconds": 0.3, "clockFile": str(self.clock_file), "leaseSeconds": 3,
            "webhook": {"listenHost": "127.0.0.1", "port": self.port,
                        "registerURL": f"https://127.0.0.1:{self.port}", **(webhook or {})},
        }
        config.update(extra_config or {})
        self.config = workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "operator.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
        env = {**os.environ, "KUBECONFIG": self.cluster.kubeconfig}
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
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def set_clock(self, rfc3339: str | None) -> None:
        if rfc3339 is None:
            self.clock_file.unlink(missing_ok=True)
        else:
            self.clock_file.write_text(rfc3339)

    def records(self) -> list[dict]:
        import json
        import sqlite3

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
    cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "entitle.dev",
                    "--ignore-not-found", check=False)
