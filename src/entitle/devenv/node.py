"""A real single-node cluster on this machine: the control plane, a scheduler, a kubelet with
containerd + runc, CNI bridge networking and kube-proxy -- real pods, no Docker daemon.

Network rule: every non-loopback address lives inside a network namespace this harness creates
for the node (``entitle-<id>``): the node's address, the CNI bridge, pod veths, kube-proxy's
iptables rules, ip_forward. Nothing is added to the host's namespace and nothing can leave the
machine (the namespace's default route is a dummy device). The host reaches the apiserver
through a loopback forward (``entitle.devenv.forward``) on a free port. Processes join only the
node's *network* namespace (``nsenter --net``), not a mount namespace of their own: the
kubelet's volume mounts must be visible to containerd.

Tear-down removes the pods, every process, mount, cgroup, pod network namespace and the node's
namespace, and the run directory: nothing is left behind. The traps this machine has (see
``../shared/notes/real-node.md``) are handled where they occur, each with a comment.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from entitle.devenv.webhook_client import CA_FILE, write_webhook_client

# The Secret `entitle dev up --node` writes for the chart's webhook.clientCA.secretName.
CLIENT_CA_SECRET = "entitle-webhook-client-ca"
from entitle.adapters.pki import CertificateAuthority, rsa_key_pair
from entitle.devenv.assets import node_assets_dir

NODE_IP = "10.200.0.1"            # the node's address (a veth end inside its namespace)
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_PORT = 6443                   # inside the node's namespace: nothing else listens there
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
NODE_NAME = "entitle-node"


class NodeError(RuntimeError):
    """A node component failed to start or become ready; the message names its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RealCluster:
    directory: Path
    id: str = field(default_factory=lambda: secrets.token_hex(3))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_port: int = 0                     # the host-side forward
    kubeconfig: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, directory: str | Path | None = None) -> RealCluster:
        path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="entitle-node-"))
        path.mkdir(parents=True, exist_ok=True)
        return cls(directory=path.resolve())

    # -- names -------------------------------------------------------------------------
    @property
    def netns(self) -> str:
        return f"entitle-{self.id}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the apiserver's webhook client certificate (the chart's webhook.clientCA)."""
        return self.directory / CA_FILE

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def runtime_dir(self) -> Path:
        """containerd's sockets and state: a short path (unix socket paths end at 108 bytes,
        and a test's temporary directory is long)."""
        return Path(f"/run/entitle-{self.id}")

    @property
    def containerd_socket(self) -> Path:
        return self.runtime_dir / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/entitle-{self.id}"

    def bin(self, name: str) -> str:
        return str(self.assets / name)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 180) -> RealCluster:
        """Start the node; when any step fails, remove what the earlier steps made (etcd, the
        apiserver, containerd, the network namespace would otherwise outlive the failure) and
        keep the logs, then raise the step's error."""
        started = time.monotonic()
        try:
            self.assets = node_assets_dir()
            self.logs.mkdir(exist_ok=True)
            self._record_hard_coded_paths()
            self._save_state()
            self._network()
            pki = self._pki()
            self._control_plane(pki, timeout)
            self.timings["control_plane"] = time.monotonic() - started
            self._containerd(timeout)
            self.import_image(self._pause_archive(), name=PAUSE_IMAGE)
            self._kubelet(pki, timeout)
            self._kube_proxy(pki)
        except BaseException:
            self.stop_after_failure()
            raise
        self.timings["node_ready"] = time.monotonic() - started
        self._save_state()
        return self

    def publish_webhook_client_ca(self, namespace: str = "entitle-system", name: str | None = None) -> str:
        """The Secret the chart's webhook.clientCA.secretName names: the CA of this apiserver's
        webhook client certificate, in the release's namespace (created). Idempotent."""
        name = name or CLIENT_CA_SECRET
        self.kubectl("create", "namespace", namespace, check=False)
        secret = self.kubectl("create", "secret", "generic", name, "-n", namespace,
                              f"--from-file=ca.crt={self.webhook_client_ca}", "--dry-run=client", "-o", "yaml").stdout
        self.kubectl("apply", "-f", "-", input=secret)
        return name

    def stop_after_failure(self) -> None:
        """:meth:`stop` keeping the logs, never raising over the error being handled."""
        try:
            self.stop(keep_logs=True)
        except Exception as exc:  # noqa: BLE001 -- the original failure is what the caller sees
            print(f"cleaning up the failed node {self.id} failed too: {exc!r}", file=sys.stderr)

    def _save_state(self) -> None:
        (self.directory / "state.json").write_text(json.dumps({
            "netns": self.netns, "id": self.id, "server": self.server, "kubeconfig": str(self.kubeconfig),
            "pids": {name: p.pid for name, p in self.processes.items()}, "before": self._before}))

    def __enter__(self) -> RealCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(keep_logs=exc[0] is not None)

    # -- the node's network namespace ---------------------------------------------------
    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def _in_node(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={self.netns_path}", *argv], check=check,
                              capture_output=True, text=True)

    def _network(self) -> None:
        self._ip("netns", "add", self.netns)
        self._in_node("ip", "link", "set", "lo", "up")
        # The node's own address, on one end of a veth pair whose other end is also inside the
        # namespace and goes nowhere (this kernel has no dummy device driver).
        self._in_node("ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0-sink")
        self._in_node("ip", "addr", "add", f"{NODE_IP}/32", "dev", "node0")
        for device in ("node0", "node0-sink"):
            self._in_node("ip", "link", "set", device, "up")
        # A default route into it: components that look one up find it, and what is sent there
        # goes nowhere -- nothing leaves the machine.
        self._in_node("ip", "route", "add", "default", "dev", "node0")
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1"),
                           ("net.ipv4.conf.all.route_localnet", "1")):
            self._in_node("sysctl", "-qw", f"{key}={value}", check=False)

    # -- certificates and kubeconfigs ---------------------------------------------------
    def _pki(self) -> Path:
        pki = self.directory / "pki"
        pki.mkdir(exist_ok=True)
        ca = CertificateAuthority("entitle-node-ca")
        sans = ["127.0.0.1", "localhost", NODE_IP, "10.96.0.1", "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
        issued = {
            "apiserver": ca.issue("kube-apiserver", hosts=sans),
            "admin": ca.issue("entitle-admin", org="system:masters", client=True),
            # The Node authorizer knows a kubelet by this name and group.
            "kubelet-client": ca.issue(f"system:node:{NODE_NAME}", org="system:nodes", client=True),
            "kubelet": ca.issue(NODE_NAME, hosts=[NODE_IP, NODE_NAME, "127.0.0.1"]),
            "apiserver-kubelet-client": ca.issue("kube-apiserver-kubelet-client", org="system:masters", client=True),
            "kube-proxy": ca.issue("system:kube-proxy", client=True),
            "controller-manager": ca.issue("system:kube-controller-manager", client=True),
            "scheduler": ca.issue("system:kube-scheduler", client=True),
        }
        sa_private, sa_public = rsa_key_pair()
        files = {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem, "sa.key": sa_private, "sa.pub": sa_public}
        for name, pair in issued.items():
            files[f"{name}.crt"], files[f"{name}.key"] = pair.cert_pem, pair.key_pem
        for name, data in files.items():
            (pki / name).write_bytes(data)
            os.chmod(pki / name, 0o600)
        inside = f"https://{NODE_IP}:{API_PORT}"
        for user in ("admin", "kubelet-client", "kube-proxy", "controller-manager", "scheduler"):
            self._kubeconfig(pki, user, inside, pki / f"{user}.kubeconfig")
        return pki

    def _kubeconfig(self, pki: Path, user: str, server: str, path: Path) -> Path:
        def b64(name: str) -> str:
            return base64.b64encode((pki / name).read_bytes()).decode()

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "node", "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(f"{user}.crt"),
                                              "client-key-data": b64(f"{user}.key")}}],
            "contexts": [{"name": "node", "context": {"cluster": "node", "user": user}}]}))
        os.chmod(path, 0o600)
        return path

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            ["nsenter", f"--net={self.netns_path}", *argv], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
        log.close()

    def _wait(self, ready, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode}; log {self.logs / (name + '.log')}:\n"
                                + self.tail(name))
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 -- not up yet
                pass
            time.sleep(0.3)
        raise NodeError(f"{name} not ready after {timeout:.0f}s; log {self.logs / (name + '.log')}:\n" + self.tail(name))

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc

    def _control_plane(self, pki: Path, timeout: float) -> None:
        etcd = self.directory / "etcd"
        self._spawn("etcd", [self.bin("etcd"), f"--data-dir={etcd}", "--listen-client-urls=http://127.0.0.1:2379",
                             "--advertise-client-urls=http://127.0.0.1:2379",
                             "--listen-peer-urls=http://127.0.0.1:2380",
                             "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                             "--initial-cluster=default=http://127.0.0.1:2380", "--unsafe-no-fsync=true"])
        self._wait(lambda: self._in_node("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/2379", check=False).returncode == 0,
                   "etcd", timeout)
        self._spawn("kube-apiserver", [
            self.bin("kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}", f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            # Pods get ServiceAccount tokens (the ServiceAccount admission plugin stays on);
            # kubelets are authorized as nodes.
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            # Trap: `kubectl logs/exec` resolve the node's name through DNS otherwise.
            "--kubelet-preferred-address-types=InternalIP",
            "--enable-priority-and-fairness=false", "--profiling=false",
            # The usage-record finalizer by a MutatingAdmissionPolicy (beta in 1.34; the chart
            # renders it when served): one webhook round trip per Workload create.
            "--feature-gates=MutatingAdmissionPolicy=true", "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
            # Only the apiserver reviews: it presents its own client certificate to webhooks
            # (webhook-client-ca.crt beside the kubeconfig; the chart's webhook.clientCA Secret).
            f"--admission-control-config-file={write_webhook_client(pki / 'webhook-client', self.directory)}",
        ])
        # The host's way in: a loopback forward into the node's namespace.
        self.api_port = free_port()
        log = open(self.logs / "forward.log", "ab")
        self.processes["forward"] = subprocess.Popen(
            [sys.executable, "-m", "entitle.devenv.forward", self.netns_path, str(self.api_port), f"127.0.0.1:{API_PORT}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.kubeconfig = self._kubeconfig(pki, "admin", self.server, self.directory / "kubeconfig")
        self._wait(lambda: self.kubectl("get", "--raw", "/readyz", check=False, timeout=5).returncode == 0,
                   "kube-apiserver", timeout)
        common = [f"--authentication-kubeconfig={pki / 'admin.kubeconfig'}",
                  f"--authorization-kubeconfig={pki / 'admin.kubeconfig'}", "--leader-elect=false",
                  "--bind-address=127.0.0.1"]
        self._spawn("kube-controller-manager", [
            self.bin("kube-controller-manager"), f"--kubeconfig={pki / 'admin.kubeconfig'}", *common,
            "--secure-port=10257", f"--cert-dir={pki / 'kcm'}",
            # What a node needs (deployments, replicasets, statefulsets, tokens, endpoint
            # slices, the PV binder, node lifecycle, garbage collection...), minus the cloud.
            "--controllers=*,-cloud-node-lifecycle-controller,-node-ipam-controller,-node-route-controller,"
            "-service-lb-controller",
            "--use-service-account-credentials=true", f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            # Trap: a hard-coded default otherwise (/usr/libexec/kubernetes/...).
            f"--flex-volume-plugin-dir={self.directory / 'flexvolume'}",
            "--node-monitor-grace-period=20s",
        ])
        self._spawn("kube-scheduler", [self.bin("kube-scheduler"), f"--kubeconfig={pki / 'admin.kubeconfig'}",
                                       *common, "--secure-port=10259"])

    def _containerd(self, timeout: float) -> None:
        base = self.directory / "containerd"
        cni = self.directory / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-entitle.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "entitle", "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=1))
        config = f'''version = 2
root = "{base / 'root'}"
state = "{self.runtime_dir / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Trap: containerd asks for oom_score_adj -998, which needs CAP_SYS_RESOURCE
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc') or 'runc'}"
        Root = "{self.directory / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / 'net.d'}"
'''
        base.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        (base / "config.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(base / "config.toml")])
        self._wait(lambda: self.ctr("version", check=False).returncode == 0, "containerd", timeout)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {proc.stderr}")
        return proc

    def import_image(self, archive: Path, name: str | None = None, attempts: int = 3) -> None:
        """Put an image archive (docker-archive or OCI) into the node's image store.

        Retried: containerd 1.6's garbage collector can remove the index blob ``ctr`` has just
        written for ``--index-name`` before the image record points at it ("content digest
        ... not found"; seen once in CI with an archive that was intact). A second import of the
        same archive is idempotent."""
        args = ["images", "import", "--no-unpack=false", "--all-platforms"]
        if name:
            args += ["--index-name", name]
        for attempt in range(attempts):
            try:
                self.ctr(*args, str(archive))
                return
            except NodeError as exc:
                if "not found" not in str(exc) or attempt + 1 == attempts:
                    raise
                time.sleep(1 + attempt)

    def add_volumes(self, count: int, owner: int = 65532) -> list[Path]:
        """hostPath PersistentVolumes (storage class ""), so claims bind as on kind's default
        class. Owned by ``owner`` (the operator image's user): hostPath ignores fsGroup."""
        existing = len(list(self.directory.glob("pv*")))
        dirs, volumes = [], []
        for i in range(existing, existing + count):
            directory = self.directory / f"pv{i}"
            directory.mkdir()
            os.chown(directory, owner, owner)
            dirs.append(directory)
            volumes.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"local-pv-{i}"},
                            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                     "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                                     "hostPath": {"path": str(directory), "type": "Directory"}}})
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(volumes))
        return dirs

    def _pause_archive(self) -> Path:
        """The pause image, made from the binary built from the k8s module's own pause.c."""
        from entitle.devenv.oci import single_binary_image

        return single_binary_image(Path(self.bin("pause")), "/pause", PAUSE_IMAGE, self.directory / "pause.tar")

    def _kubelet(self, pki: Path, timeout: float) -> None:
        root = self.directory / "kubelet"
        root.mkdir(exist_ok=True)
        self._cgroups(create=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # Traps: cgroup v1 hybrid mode, and containerd 1.6 cannot report its driver.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "failSwapOn": False, "protectKernelDefaults": False,
            # Images cannot be pulled back once collected; the disk is shared: low thresholds.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "address": NODE_IP,
            "volumePluginDir": str(self.directory / "volume-plugins"), "podLogsDir": str(self.directory / "pod-logs"),
            "resolvConf": "/etc/resolv.conf", "syncFrequency": "10s", "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s", "serializeImagePulls": False, "maxPods": 50,
            "localStorageCapacityIsolation": False,
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        self._spawn("kubelet", [
            self.bin("kubelet"), f"--config={root / 'config.yaml'}", f"--kubeconfig={pki / 'kubelet-client.kubeconfig'}",
            f"--root-dir={root}", f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--cert-dir={pki / 'kubelet-certs'}", "--v=1"])

        def node_ready() -> bool:
            out = self.kubectl("get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                               check=False, timeout=10)
            return out.stdout.strip() == "True"

        self._wait(node_ready, "kubelet", timeout)

    def _kube_proxy(self, pki: Path) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(pki / "kube-proxy.kubeconfig")},
            "mode": "iptables", "clusterCIDR": POD_CIDR, "bindAddress": NODE_IP, "hostnameOverride": NODE_NAME,
            # Conntrack limits are host-wide sysctls: leave them alone.
            "conntrack": {"maxPerCore": 0, "min": 0},
            # Replies from a pod to a pod on the same bridge then come back through the node.
            "iptables": {"masqueradeAll": True},
            "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
        }
        path = self.directory / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        # kube-proxy's RBAC: the bootstrap role for its user.
        self.kubectl("create", "clusterrolebinding", "entitle-node-proxier", "--clusterrole=system:node-proxier",
                     "--user=system:kube-proxy", check=False)
        self._spawn("kube-proxy", [self.bin("kube-proxy"), f"--config={path}"])

    # -- cgroups ------------------------------------------------------------------------
    def _cgroup_dirs(self) -> list[Path]:
        base = Path("/sys/fs/cgroup")
        return [base / c / self.cgroup_root.lstrip("/") for c in sorted(os.listdir(base))
                if c != "unified" and (base / c).is_dir()]

    def _cgroups(self, create: bool) -> None:
        for path in self._cgroup_dirs():
            if create:
                path.mkdir(exist_ok=True)
                continue
            if not path.exists():
                continue
            for dirpath, _, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
                try:
                    for pid in Path(dirpath, "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    os.rmdir(dirpath)
                except OSError:
                    pass

    # -- tear-down ----------------------------------------------------------------------
    def _record_hard_coded_paths(self) -> None:
        # Trap: paths the runtime writes whatever the configuration says. Remember what was
        # there before, so tear-down removes only what this node made.
        self._before = {
            "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
            "device_plugins": os.path.exists("/var/lib/kubelet/device-plugins"),
            "kubelet_dir": os.path.exists("/var/lib/kubelet"),
            "run_containerd": os.path.exists("/run/containerd"),
        }

    def stop(self, keep_logs: bool = False) -> None:
        """Remove everything this node made; keep only the logs (moved beside) when asked."""
        # No graceful pod deletion: the pods' veths, iptables rules and routes all live in the
        # node's namespace and go with it; their own network namespaces are removed below.
        for name in ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"):
            self._terminate(name)
        if "containerd" in self.processes:
            tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
            for task in tasks:
                self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
            for task in tasks:
                self.ctr("tasks", "delete", "--force", task, check=False)
            self._terminate("containerd")
        for name in ("kube-apiserver", "forward", "etcd"):
            self._terminate(name)
        self._kill_shims()
        self._cgroups(create=False)
        self._unmount_all()
        before = getattr(self, "_before", {})
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
        for name in set(os.listdir("/run/netns")) - set(before.get("netns", ())) if os.path.isdir("/run/netns") else ():
            if name.startswith("cni-"):
                subprocess.run(["umount", "-l", f"/run/netns/{name}"], capture_output=True)
                Path("/run/netns", name).unlink(missing_ok=True)
        if not before.get("kubelet_dir", True):
            shutil.rmtree("/var/lib/kubelet", ignore_errors=True)
        elif not before.get("device_plugins", True):
            shutil.rmtree("/var/lib/kubelet/device-plugins", ignore_errors=True)
        if not before.get("run_containerd", True):
            shutil.rmtree("/run/containerd", ignore_errors=True)
        if keep_logs and self.logs.exists():
            kept = Path(tempfile.gettempdir()) / f"entitle-node-logs-{self.id}"
            shutil.copytree(self.logs, kept, dirs_exist_ok=True)
            print(f"real-node logs kept in {kept}", file=sys.stderr)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.processes.clear()

    def _terminate(self, name: str) -> None:
        proc = self.processes.get(name)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _kill_shims(self) -> None:
        # containerd-shim-runc-v2 outlives containerd; ours name our socket on their command line.
        marker = str(self.containerd_socket).encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path("/proc", pid, "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _unmount_all(self) -> None:
        # Trap: overlay snapshots, volume tmpfs and the shims' state under /run/containerd.
        prefixes = (str(self.directory), str(self.runtime_dir), "/run/containerd/io.containerd.runtime.v2.task/k8s.io")
        for _ in range(3):
            mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            ours = sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True)
            if not ours:
                return
            for mount in ours:
                subprocess.run(["umount", "-l", mount], capture_output=True)


def stop_detached(directory: Path) -> bool:
    """``entitle dev down --node``: tear down a node started by ``entitle dev up --node``."""
    state = directory / "state.json"
    if not state.exists():
        return False
    info = json.loads(state.read_text())
    cluster = RealCluster(directory=directory, id=info["id"])
    cluster._before = info.get("before") or {}
    cluster.kubeconfig = Path(info["kubeconfig"]) if info.get("kubeconfig") else None
    cluster.assets = node_assets_dir(build=False)
    for name, pid in (info.get("pids") or {}).items():
        cluster.processes[name] = _Adopted(pid)
    cluster.stop()
    return True


class _Adopted:
    """A process of an earlier ``entitle dev up --node`` (we are not its parent)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        try:
            os.kill(self.pid, 0)
            return None
        except ProcessLookupError:
            return 0

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout or 30)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("adopted", timeout or 30)
            time.sleep(0.2)
        return 0
