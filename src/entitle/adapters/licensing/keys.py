"""Ed25519 keys as files: private keys PKCS#8 PEM (mode 0600), public keys SubjectPublicKeyInfo PEM."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key of the expected kind."""


def generate(directory: Path, key_id: str) -> tuple[Path, Path]:
    """Write ``directory/key_id.key`` (0600, never overwritten) and ``directory/key_id.pub``."""
    if not key_id or "/" in key_id or key_id.startswith("."):
        raise KeyFileError(f"invalid key id {key_id!r}: a file name stem is expected")
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{key_id}.key", directory / f"{key_id}.pub"
    if private.exists() or public.exists():
        raise KeyFileError(f"{private} or {public} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created 0600 from the start: never readable by others, not even for a moment.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _ed25519(load, data: bytes, kind: type, where: str, what: str):
    """``load(data)`` checked to be an Ed25519 key of ``kind``; KeyFileError saying ``where``."""
    try:
        key = load(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{where}not a readable {what} ({exc})") from None
    if not isinstance(key, kind):
        raise KeyFileError(f"{where}not an Ed25519 {what}")
    return key


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: not a readable key file ({exc})") from None


def load_private(path: Path) -> Ed25519PrivateKey:
    return _ed25519(lambda data: serialization.load_pem_private_key(data, password=None), _read(path),
                    Ed25519PrivateKey, f"{path}: ", "private key")


def load_public(path: Path) -> Ed25519PublicKey:
    return _ed25519(serialization.load_pem_public_key, _read(path), Ed25519PublicKey, f"{path}: ", "public key")


def public_from_pem(text: str) -> Ed25519PublicKey:
    """A public key given inline (operator configuration, Helm values)."""
    return _ed25519(serialization.load_pem_public_key, text.encode(), Ed25519PublicKey, "", "public key")
