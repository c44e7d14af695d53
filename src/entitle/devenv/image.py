"""The operator image, built from the repository's own Dockerfile with buildah (no daemon), on a
base image made locally from Debian packages -- no registry is reachable from here.

``python:3.11-slim`` (the Dockerfile's ``FROM``) is stood in for by a Debian bookworm minbase
root file system with python3, pip and venv (``mmdebstrap``), tagged with that name in buildah's
store: a test image only, never published. The build container gets the host's extra CA
certificates so pip reaches the package index through this network.

Both images are cached by content: the base by its recipe, the operator image by the hash of
the Dockerfile, every file of the build context (``.dockerignore`` applied) and the base's id.
A changed Dockerfile or source rebuilds; anything else reuses the archive.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from entitle.devenv.assets import cache_root

BASE_REF = "docker.io/library/python:3.11-slim"
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "passwd")
BASE_RECIPE = f"bookworm minbase {' '.join(BASE_PACKAGES)} v1"
# buildah in this sandbox: no CAP_SYS_RESOURCE (rlimits), cgroup v1, nothing to pull.
BUILDAH_RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=32768:32768", "--runtime", "runc",
                     "--cgroup-manager", "cgroupfs", "--pull=never", "--network", "host"]


class ImageBuildError(RuntimeError):
    """A base or operator image could not be built; the message carries the tool's output."""


@dataclass(frozen=True)
class BuiltImage:
    ref: str            # e.g. localhost/entitle:3f2a...
    archive: Path       # docker-archive tar, importable with `ctr images import`
    seconds: float      # build time (0 when cached)
    size: int           # archive bytes


def _run(argv: list[str], what: str, **kwargs) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise ImageBuildError(f"{what} failed ({proc.returncode}): {' '.join(argv[:4])} ...\n"
                              f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _progress(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def _buildah_has(ref: str) -> str | None:
    proc = subprocess.run(["buildah", "images", "--quiet", "--no-trunc", ref], capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None


def base_image(cache: Path | None = None) -> str:
    """Make sure buildah holds ``python:3.11-slim`` (the Debian stand-in); returns its image id."""
    recipe = hashlib.sha256(BASE_RECIPE.encode()).hexdigest()[:12]
    marker = f"entitle.dev/base-recipe={recipe}"
    existing = _buildah_has(BASE_REF)
    if existing:
        labels = _run(["buildah", "inspect", "--type", "image", "--format", "{{.OCIv1.Config.Labels}}", BASE_REF],
                      "inspect base")
        if recipe in labels:
            return existing
    cache = cache or cache_root() / "images"
    cache.mkdir(parents=True, exist_ok=True)
    rootfs = cache / f"base-{recipe}.tar"
    if not rootfs.exists():
        _progress(f"making the base root file system with mmdebstrap ({', '.join(BASE_PACKAGES)}; ~3 min)")
        tmp = rootfs.with_suffix(".tmp")
        hooks = [
            # pip may install into the system Python, as in the python:3.11-slim image.
            'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            'ln -sf python3 "$1/usr/bin/python"',
            'ln -sf pip3 "$1/usr/bin/pip"',
            'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
        ]
        if Path("/usr/local/share/ca-certificates").is_dir():
            hooks.insert(0, 'cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/" && '
                            'chroot "$1" update-ca-certificates --fresh >/dev/null')
        argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), "--quiet"]
        argv += [f"--customize-hook={hook}" for hook in hooks]
        argv += ["bookworm", str(tmp)]
        _run(argv, "mmdebstrap", timeout=1800)
        tmp.rename(rootfs)
    _progress(f"importing the base as {BASE_REF}")
    container = _run(["buildah", "from", "scratch"], "buildah from").strip()
    try:
        _run(["buildah", "add", container, str(rootfs), "/"], "buildah add")
        _run(["buildah", "config", "--env", "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
              "--env", "LANG=C.UTF-8", "--cmd", "python3", "--label", marker, container], "buildah config")
        _run(["buildah", "commit", "--quiet", container, BASE_REF], "buildah commit")
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
    return _buildah_has(BASE_REF) or ""


def _ignored(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    """.dockerignore semantics, enough for this repository: ordered patterns, ``!`` re-includes."""
    ignored = False
    for negate, pattern in patterns:
        if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative, pattern.rstrip("/") + "/*") \
                or relative.startswith(pattern.rstrip("/") + "/"):
            ignored = not negate
    return ignored


def context_files(root: Path) -> list[Path]:
    """The build context's files, as ``docker build`` would send them."""
    patterns = []
    ignore = root / ".dockerignore"
    for line in (ignore.read_text().splitlines() if ignore.exists() else []):
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), line.lstrip("!").replace("**/", "*")))
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if relative == "Dockerfile" or not _ignored(relative, patterns):
                files.append(path)
    return sorted(files)


def content_key(root: Path, base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for path in context_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_image(root: Path, cache: Path | None = None, name: str = "localhost/entitle") -> BuiltImage:
    """Build the repository's Dockerfile, unmodified; reuse the archive when nothing changed."""
    for tool in ("buildah", "mmdebstrap"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is not installed (Debian package {tool}); .ci/run installs it")
    cache = cache or cache_root() / "images"
    cache.mkdir(parents=True, exist_ok=True)
    base_id = base_image(cache)
    key = content_key(root, base_id)
    ref = f"{name}:{key}"
    archive = cache / f"entitle-{key}.tar"
    if archive.exists():
        return BuiltImage(ref, archive, 0.0, archive.stat().st_size)
    _progress(f"building {ref} from {root / 'Dockerfile'} with buildah")
    started = time.monotonic()
    _run(["buildah", "build", *BUILDAH_RUN_FLAGS, "--layers=false", "--tag", ref, "--file",
          str(root / "Dockerfile"), str(root)], "buildah build", timeout=3600)
    seconds = time.monotonic() - started
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _run(["buildah", "push", "--quiet", ref, f"docker-archive:{tmp}:{ref}"], "buildah push")
    tmp.rename(archive)
    return BuiltImage(ref, archive, seconds, archive.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    """``python -m entitle.devenv.image [ROOT]``: build (or reuse) and print ref and archive."""
    root = Path((argv or sys.argv[1:] or ["."])[0]).resolve()
    try:
        image = build_image(root)
    except ImageBuildError as exc:
        print(f"entitle image: {exc}", file=sys.stderr)
        return 1
    print(f"{image.ref} {image.archive} built_seconds={image.seconds:.0f} size={image.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
