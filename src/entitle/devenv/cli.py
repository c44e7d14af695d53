"""``entitle dev up`` / ``entitle dev down``: a local control plane, or with ``--node`` a real
single-node cluster (kubelet, containerd, kube-proxy: real pods) with the operator image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entitle.devenv.controlplane import ControlPlane, ControlPlaneError, stop_detached

DEFAULT_DIR = Path(".entitle") / "dev"
DEFAULT_NODE_DIR = Path(".entitle") / "node"


def main(args: argparse.Namespace) -> int:
    if args.dev_command == "webhook-client":
        return _webhook_client(args)
    if getattr(args, "node", False):
        return _node(args)
    directory = Path(args.dir) if args.dir else DEFAULT_DIR
    if args.dev_command == "up":
        if (directory / "state.json").exists():
            print(f"entitle dev: already up in {directory} (run `entitle dev down` first)", file=sys.stderr)
            return 1
        print("starting etcd, kube-apiserver and kube-controller-manager ...", file=sys.stderr)
        plane = ControlPlane.create(directory.resolve(), detach=True)
        try:
            plane.start()
        except ControlPlaneError as exc:
            plane.stop(keep=True)
            print(f"entitle dev: {exc}", file=sys.stderr)
            return 1
        print(f"control plane up at {plane.server}; export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
        print(plane.kubeconfig)
        return 0
    stopped = stop_detached(directory.resolve())
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    return 0


def _node(args: argparse.Namespace) -> int:
    from entitle.devenv import node

    directory = (Path(args.dir) if args.dir else DEFAULT_NODE_DIR).resolve()
    if args.dev_command == "down":
        done = node.stop_detached(directory)
        print("node removed" if done else "no node was running", file=sys.stderr)
        return 0
    if (directory / "state.json").exists():
        print(f"entitle dev: a node is already up in {directory} (run `entitle dev down --node`)", file=sys.stderr)
        return 1
    print("starting a real node: control plane, scheduler, containerd, kubelet, kube-proxy ...", file=sys.stderr)
    cluster = node.RealCluster.create(directory)
    try:
        cluster.start()
        cluster.add_volumes(4)          # the chart's ledger claims bind, as on kind's default class
        # Only the apiserver reviews: the chart's webhook.clientCA Secret, ready in entitle-system.
        cluster.publish_webhook_client_ca()
        if args.image:
            from entitle.devenv.image import build_image

            image = build_image(Path(args.image).resolve())
            cluster.import_image(image.archive)
            repository, tag = image.ref.rsplit(":", 1)
            print(f"image {image.ref} imported; helm install ... --set image.repository={repository} "
                  f"--set image.tag={tag} --set image.pullPolicy=Never "
                  f"--set webhook.clientCA.secretName={node.CLIENT_CA_SECRET}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 -- leave nothing behind
        print(f"entitle dev: {exc}", file=sys.stderr)
        cluster.stop(keep_logs=True)
        return 1
    print(f"node Ready in {cluster.timings['node_ready']:.0f}s; export KUBECONFIG={cluster.kubeconfig}", file=sys.stderr)
    print(cluster.kubeconfig)
    return 0


def _webhook_client(args: argparse.Namespace) -> int:
    """Files for a cluster whose apiserver entitle does not start: copy them to the control-plane
    node(s) at --apiserver-dir and add --admission-control-config-file (docs/operations.md
    "Only the apiserver reviews" has the kind and kubeadm recipes)."""
    from entitle.devenv.webhook_client import CA_FILE, write_webhook_client

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    admission = write_webhook_client(out, out, apiserver_dir=args.apiserver_dir)
    print(f"wrote {out}: copy it to {args.apiserver_dir} on every control-plane node and start kube-apiserver with "
          f"--admission-control-config-file={args.apiserver_dir}/{admission.name}; then\n"
          f"  kubectl -n entitle-system create secret generic entitle-webhook-client-ca "
          f"--from-file=ca.crt={out / CA_FILE}\n"
          "  helm ... --set webhook.clientCA.secretName=entitle-webhook-client-ca", file=sys.stderr)
    return 0
