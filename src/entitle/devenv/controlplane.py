"""Start etcd, kube-apiserver and kube-controller-manager on loopback, envtest-style.

Secure serving with generated certificates, service-account issuer and keys, RBAC
authorization, and an admin client-certificate kubeconfig. Teardown stops every process;
the state directory (with the logs) is kept when something failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from entitle.devenv.assets import assets_dir
from entitle.adapters.pki import CertificateAuthority, rsa_key_pair
from entitle.devenv.webhook_client import CA_FILE, write_webhook_client


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or to become ready; see its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ControlPlane:
    directory: Path
    assets: Path | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_port: int = 0
    kubeconfig: Path | None = None
    detach: bool = False

    @classmethod
    def create(cls, directory: str | Path | None = None, detach: bool = False) -> ControlPlane:
        path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="entitle-cp-"))
        path.mkdir(parents=True, exist_ok=True)
        return cls(directory=path, detach=detach)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the apiserver's webhook client certificate (``webhook.clientCAFile``)."""
        return self.directory / CA_FILE

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def bin(self, name: str) -> str:
        return str((self.assets or assets_dir()) / name)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 120) -> ControlPlane:
        self.assets = assets_dir()
        self.logs.mkdir(exist_ok=True)
        pki = self.directory / "pki"
        pki.mkdir(exist_ok=True)
        ca = CertificateAuthority()
        serving = ca.issue("kube-apiserver", hosts=["127.0.0.1", "localhost", "kubernetes.default.svc"])
        admin = ca.issue("entitle-admin", org="system:masters", client=True)
        sa_private, sa_public = rsa_key_pair()
        files = {"ca.crt": ca.cert_pem, "apiserver.crt": serving.cert_pem, "apiserver.key": serving.key_pem,
                 "admin.crt": admin.cert_pem, "admin.key": admin.key_pem, "sa.key": sa_private, "sa.pub": sa_public}
        for name, data in files.items():
            (pki / name).write_bytes(data)
            os.chmod(pki / name, 0o600)

        # Only the apiserver reviews: its webhook client certificate (webhook-client-ca.crt beside
        # the kubeconfig is what the operator's webhook.clientCAFile trusts).
        admission = write_webhook_client(pki / "webhook-client", self.directory)

        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        self._spawn("etcd", [
            self.bin("etcd"), f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true",  # a throwaway store: durability is not what we test here
        ])
        self._wait(lambda: self._http_ok(f"http://127.0.0.1:{etcd_port}/health"), "etcd", timeout)
        self._spawn("kube-apiserver", [
            self.bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true", "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            f"--admission-control-config-file={admission}",
            # MutatingAdmissionPolicy (beta, off by default in 1.34-1.35; on from 1.36): the
            # usage-record finalizer without a webhook round trip.
            "--feature-gates=MutatingAdmissionPolicy=true",
            "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
        ])
        self.kubeconfig = self._write_kubeconfig(pki)
        self._wait(self._apiserver_ready, "kube-apiserver", timeout)
        if Path(self.bin("kube-controller-manager")).exists():
            self._spawn("kube-controller-manager", [
                self.bin("kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false", "--controllers=garbagecollector,namespace,clusterrole-aggregation",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                f"--cert-dir={pki / 'kcm'}", "--use-service-account-credentials=false",
            ])
        (self.directory / "state.json").write_text(json.dumps({
            "server": self.server, "kubeconfig": str(self.kubeconfig),
            "pids": {name: p.pid for name, p in self.processes.items()},
        }))
        return self

    def stop(self, keep: bool = False) -> None:
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        if not keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(keep=exc_type is not None)

    # -- helpers -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=self.detach)
        log.close()

    def _wait(self, ready, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}; log: {self.logs / (name + '.log')}\n"
                                        + self.tail(name))
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout}s; log: {self.logs / (name + '.log')}\n"
                                + self.tail(name))

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def ssl_context(self) -> ssl.SSLContext:
        pki = self.directory / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=3, context=self.ssl_context()) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _write_kubeconfig(self, pki: Path) -> Path:
        import base64

        def b64(name: str) -> str:
            return base64.b64encode((pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "entitle-dev",
            "clusters": [{"name": "entitle-dev", "cluster": {
                "server": self.server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "entitle-admin", "user": {
                "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "entitle-dev", "context": {"cluster": "entitle-dev", "user": "entitle-admin"}}],
        }
        path = self.directory / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        os.chmod(path, 0o600)
        return path


def stop_detached(directory: Path) -> list[str]:
    """Stop a control plane started by ``entitle dev up`` (by the pids it recorded)."""
    state_file = directory / "state.json"
    if not state_file.exists():
        return []
    pids = json.loads(state_file.read_text()).get("pids", {})
    stopped = []
    for name, pid in reversed(list(pids.items())):
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(name)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 20
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(directory, ignore_errors=True)
    return stopped
