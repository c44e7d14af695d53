"""A one-binary OCI image written directly (no builder): the node's pause image.

Deterministic: the same binary always gives the same image digest (fixed timestamps, owner
and mode), so the harness imports it once per content.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _tar(entries: list[tuple[str, bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def single_binary_image(binary: Path, path_in_image: str, ref: str, archive: Path) -> Path:
    """Write an OCI image layout archive holding ``binary`` at ``path_in_image`` as entrypoint."""
    layer_digest, layer = _blob(_tar([(path_in_image.lstrip("/"), binary.read_bytes(), 0o755)]))
    config_digest, config = _blob(json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": [path_in_image], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": f"entitle.devenv.oci: {binary.name}"}],
    }, sort_keys=True).encode())
    manifest_digest, manifest = _blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode())
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref}}]}, sort_keys=True).encode()
    entries = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644), ("index.json", index, 0o644)]
    entries += [(f"blobs/sha256/{d.split(':')[1]}", b, 0o644) for d, b in
                ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))]
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(_tar(entries))
    return archive
