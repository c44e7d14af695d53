"""The watched objects of sourced kinds, and the owner rule over them (``domain.ownership``),
for the watches and the webhook alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from entitle.domain.ownership import ControllerRef, GroupKind, Watched, awaited_owner, covered


@dataclass
class Tracked:
    """A watched object of a sourced kind (counted or not: the owner rule needs both)."""

    uid: str
    namespace: str
    key: str                     # the state's key (object_key)
    owner: str | None            # the uid its controller reference names (believed or not)
    source: str | None           # the source that counts it (None: not counted)
    body: dict
    group: str = ""
    kind: str = ""
    name: str = ""
    controller: ControllerRef | None = None

    def watched(self) -> Watched:
        return Watched(self.namespace, self.group, self.kind, self.name, self.source is not None, self.controller)


class SourceOwners:
    """The owner rule over what the sourced kinds' informers have seen. Reads the tracked
    objects it is given, and asks for the sources' kinds and the watched kinds."""

    def __init__(self, tracked: dict[str, Tracked], tracked_keys: dict[tuple[str, str], str],
                 source_kinds: Callable[[], set[GroupKind]], watched_kinds: Callable[[], set[GroupKind]]) -> None:
        self._tracked, self._keys = tracked, tracked_keys
        self._source_kinds, self._watched_kinds = source_kinds, watched_kinds

    def _lookup(self, uid: str) -> Watched | None:
        tracked = self._tracked.get(uid)
        return tracked.watched() if tracked is not None else None

    def covered(self, child: GroupKind, namespace: str, ref: ControllerRef | None) -> bool:
        return covered(child, namespace, ref, self._lookup, self._source_kinds())

    def awaited(self, child: GroupKind, ref: ControllerRef | None) -> bool:
        return awaited_owner(child, ref, self._lookup, self._source_kinds(), self._watched_kinds())

    def known(self, namespace: str, key: str) -> bool | None:
        uid = self._keys.get((namespace, key))
        return None if uid is None else self._tracked[uid].source is not None
