"""Signed licenses (DESIGN "Licenses from a vendor"): what is signed, and whether a signature holds.

The signed bytes are the RFC 8785 canonical JSON of ``{"name": metadata.name, "spec": spec}``
with ``spec.signature`` left out. The name is signed so that a copy under another name -- which
would stack with the original -- fails verification.

**The spec is normalized before it is canonicalized**: read through the API model and dumped
without the values that equal their defaults. So the apiserver's CRD defaulting, the YAML's
formatting, key order, string escapes and timestamp spelling (``Z`` or ``+00:00``) do not break
a signature, while any change of a value that means something does. (Decision recorded here:
DESIGN says "canonical JSON of the spec"; a literal reading would make every signature fail
after the apiserver fills in a default.)

Pure: no I/O; the keys are passed in.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from entitle.api.license import LicenseSpec
from entitle.domain import reasons


class SpecNotReadable(ValueError):
    """The spec to sign or verify does not match the License schema."""


def normalized_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as signed: through the model, defaults and the signature left out."""
    try:
        model = LicenseSpec.model_validate(spec)
    except Exception as exc:  # pydantic's ValidationError, with the first problem
        raise SpecNotReadable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    out = model.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    out.pop("signature", None)
    return out


def signed_bytes(name: str, spec: dict[str, Any]) -> bytes:
    return rfc8785.dumps({"name": name, "spec": normalized_spec(spec)})


def sign(name: str, spec: dict[str, Any], key: Ed25519PrivateKey, key_id: str) -> dict[str, str]:
    """The ``spec.signature`` value for this name and spec."""
    value = base64.b64encode(key.sign(signed_bytes(name, spec))).decode()
    return {"keyID": key_id, "value": value}


def verify(name: str, spec: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> str | None:
    """None when the signature holds under one of ``keys``; else the DESIGN reason code."""
    signature = spec.get("signature") if isinstance(spec, dict) else None
    if not isinstance(signature, dict) or not signature.get("value"):
        return reasons.SIGNATURE_MISSING
    key = keys.get(str(signature.get("keyID") or ""))
    if key is None:
        return reasons.UNKNOWN_SIGNING_KEY
    try:
        raw = base64.b64decode(str(signature["value"]), validate=True)
        key.verify(raw, signed_bytes(name, spec))
    except (InvalidSignature, binascii.Error, ValueError):
        return reasons.SIGNATURE_INVALID
    return None


def cluster_mismatch(spec: dict[str, Any], cluster_id: str | None) -> bool:
    """A license bound to a cluster (``spec.clusterID``) read in another one."""
    bound = spec.get("clusterID") if isinstance(spec, dict) else None
    return bool(bound) and bound != cluster_id
