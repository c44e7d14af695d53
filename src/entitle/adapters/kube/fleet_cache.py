"""What a fleet member last read from the hub, kept in its own cluster (one ConfigMap in the
operator's namespace, ``entitle-fleet-cache-…``): the fleet Licenses and this member's floors.
A member restarted while the hub is out of reach reads them back, so it still knows its fleet
tenants and admits within its floors -- what the demarcation rule promises a member cut off
(docs/fleet.md). The hub's answer, once it comes, replaces it.

Trust: the object is as trustworthy as the operator's namespace. A floor raised by hand there
lets a cut-off member admit more than the hub granted; it shows after healing as usage above
the lease (the hub's view, ``OverCap``) and every unit is in the member's ledger, as anything
that runs is. Restored floors are never above the operator's own configured floor.
"""

from __future__ import annotations

import json
from typing import Any

from entitle.adapters.kube.cas_configmap import CasConflict, ConfigMapCas

LABEL = "entitle.dev/fleet-cache"
KEY = "member"
# A ConfigMap holds 1 MiB; the rest is for metadata.
MAX_BYTES = 900_000


class FleetCacheUnreadable(Exception):
    """The cache object is there but is not a snapshot this version can read (hand-edited, or
    cut short): nothing is restored from it, and the next save replaces it."""


class FleetCacheTooLarge(Exception):
    """The snapshot would not fit in one ConfigMap (fleet Licenses of about a megabyte): it is
    not saved, and a restart during a hub outage finds the previous one, if any."""


def parse(text: str) -> dict:
    try:
        snapshot = json.loads(text)
    except ValueError as exc:
        raise FleetCacheUnreadable(f"not JSON: {exc}") from None
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("licenses"), list) \
            or not isinstance(snapshot.get("floors"), dict):
        raise FleetCacheUnreadable("expected {licenses: [...], floors: {...}}")
    return snapshot


class FleetCache:
    """Load and save the snapshot by compare-and-swap (every replica saves what it saw; they
    agree once they saw the same hub, and the last write wins)."""

    def __init__(self, cas: Any) -> None:
        self.cas = cas
        self._version: str | None = None
        self._saved: str | None = None

    @classmethod
    def in_cluster(cls, api: Any, namespace: str) -> FleetCache:
        return cls(ConfigMapCas(api, namespace, "entitle-fleet-cache", LABEL))

    async def load(self) -> dict | None:
        """The snapshot saved last, or None when there is none."""
        self._version, data = await self.cas.read(KEY)
        text = (data or {}).get("snapshot.json")
        if not text:
            return None
        snapshot = parse(text)
        self._saved = text
        return snapshot

    async def save(self, snapshot: dict) -> bool:
        """Store ``snapshot`` unless it is what was stored last; True when written."""
        text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
        if text == self._saved:
            return False
        if len(text) > MAX_BYTES:
            raise FleetCacheTooLarge(f"{len(text)} bytes")
        for _ in range(3):
            try:
                self._version = await self.cas.write(KEY, self._version, {"snapshot.json": text})
                self._saved = text
                return True
            except CasConflict:
                self._version, data = await self.cas.read(KEY)
                if (data or {}).get("snapshot.json") == text:
                    self._saved = text
                    return False
        return False
