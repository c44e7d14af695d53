"""``entitle dev up`` / ``entitle dev down``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entitle.devenv.controlplane import ControlPlane, ControlPlaneError, stop_detached

DEFAULT_DIR = Path(".entitle") / "dev"


def main(args: argparse.Namespace) -> int:
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
