"""Small readers for raw Kubernetes objects (dicts from a watch or a review) and for pydantic's
validation errors -- what every layer would otherwise repeat inline."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def metadata(body: Any) -> dict:
    """An object's metadata as a dict, whatever the body holds (a watch may deliver anything)."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    return meta if isinstance(meta, dict) else {}


def api_group(api_version: str | None) -> str:
    """The group of an ``apiVersion`` (``apps/v1`` -> ``apps``; the core ``v1`` -> ``""``)."""
    return api_version.split("/")[0] if api_version and "/" in api_version else ""


def first_error(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``field.path: message``."""
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
