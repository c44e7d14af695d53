"""Where the control-plane binaries come from: ``KUBEBUILDER_ASSETS``, or the per-version cache
that ``hack/build-control-plane.sh`` fills from the Go module proxy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

K8S_VERSION = "1.34.4"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
# What a real node runs besides (hack/build-control-plane.sh --node).
NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy", "pause")


class AssetsMissing(RuntimeError):
    """The control-plane binaries are not built and cannot be built from here."""


def cache_root() -> Path:
    """``~/.cache/entitle``: built binaries, base and operator images."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "entitle"


def cache_dir(version: str = K8S_VERSION) -> Path:
    return cache_root() / f"k8s-{version}"


def _complete(directory: Path, names=BINARIES) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in names)


def _build_script() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        script = parent / "hack" / "build-control-plane.sh"
        if script.exists():
            return script
    return None


def node_assets_dir(build: bool = True) -> Path:
    """The cache directory once it also holds the node binaries (built when missing)."""
    directory = cache_dir()
    if _complete(directory, BINARIES + NODE_BINARIES):
        return directory
    script = _build_script()
    if not build or script is None:
        raise AssetsMissing(f"node binaries are not in {directory}; run hack/build-control-plane.sh --node")
    subprocess.run(["bash", str(script), "--node"], check=True)
    return directory


def assets_dir(build: bool = True) -> Path:
    """Directory holding etcd, kube-apiserver, kube-controller-manager and kubectl."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env:
        # envtest's convention ships etcd + kube-apiserver (+ kubectl); our controller
        # manager is optional there.
        if not _complete(Path(env), ("etcd", "kube-apiserver")):
            raise AssetsMissing(f"KUBEBUILDER_ASSETS={env} lacks etcd or kube-apiserver")
        return Path(env)
    directory = cache_dir()
    if _complete(directory):
        return directory
    script = _build_script()
    if not build or script is None:
        raise AssetsMissing(
            f"control-plane binaries are not in {directory}; run hack/build-control-plane.sh "
            "from an entitle checkout (or set KUBEBUILDER_ASSETS)")
    subprocess.run(["bash", str(script)], check=True)
    return directory
