"""The License objects as this replica last saw them: uid, body and the spec's hash -- kept by
the License watch (``operator.licenses``), read by revisions and status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from entitle.domain.revisions import spec_hash


@dataclass
class KnownLicense:
    uid: str | None
    body: dict
    # The spec's hash, once per event: revisions and records compare it every tick.
    digest: str


class LicenseSpecs:
    def __init__(self) -> None:
        self._known: dict[str, KnownLicense] = {}

    def seen(self, name: str, uid: str | None, body: dict) -> None:
        self._known[name] = KnownLicense(uid, body, spec_hash(body.get("spec")))

    def forget(self, name: str) -> None:
        self._known.pop(name, None)

    def get(self, name: str) -> KnownLicense | None:
        return self._known.get(name)

    def uid_of(self, name: str) -> str | None:
        known = self._known.get(name)
        return known.uid if known is not None else None

    def digest(self, name: str) -> str | None:
        known = self._known.get(name)
        return known.digest if known is not None else None

    def items(self) -> Iterator[tuple[str, KnownLicense]]:
        return iter(list(self._known.items()))
