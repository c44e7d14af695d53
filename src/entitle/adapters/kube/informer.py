"""List-then-watch of one resource, the way client-go's informers do it, on the operator's
event loop (AsyncApi): for kinds known only at run time (instance sources), where Kopf's
handlers, fixed at start-up, cannot follow.

- **List** in pages (``limit``/``continue``), then **watch** from the list's resourceVersion
  with bookmarks; a watch that ends is resumed from the last version seen.
- **410 Gone** (the version is too old) relists; objects that were known but are absent from the
  new list are reported deleted (``on_event("DELETED", last known body)``), so nothing stays
  counted that vanished while the watch was down.
- Any other failure (403 when RBAC lacks the kind, the apiserver away) is reported through
  ``on_error`` and retried with backoff; the informer never ends on its own.
- What it remembers of each object is the whole body unless ``remember`` says less (at fleet
  scale a body per object is most of a process's memory); with ``on_vanished``, an object gone
  between two lists is reported there, with what was remembered, instead of as ``DELETED``.
- A list is read a page ahead (the apiserver reads the next page while this process handles
  the current one); ``after_page`` is awaited between pages (backpressure).
- A watch event is a line of any length the apiserver can store (a Workload with 5,000 long
  user names is over a megabyte): aiohttp's ``readline`` refuses lines over 128 KiB, and a
  refused event would be retried from the same version forever -- one large object would
  freeze this replica's view of every object of the kind (see :func:`json_lines`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from entitle.adapters.kube.async_api import ApiError
from entitle.api.objects import metadata

log = logging.getLogger("entitle.informer")


# Longest watch event read (the apiserver's own request limit is 3 MiB; etcd's default 1.5 MiB).
MAX_EVENT_BYTES = 64 * 1024 * 1024


class Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class EventTooLarge(Exception):
    """A watch event longer than :data:`MAX_EVENT_BYTES` (no apiserver sends one): the watch
    restarts rather than buffer without bound."""


async def json_lines(content: Any, limit: int = MAX_EVENT_BYTES) -> AsyncIterator[bytes]:
    """The lines of a streamed body, however long each is (up to ``limit``), as Kopf reads
    watches; ``StreamReader.readline`` would raise past 128 KiB."""
    buffer = bytearray()
    searched = 0            # bytes of ``buffer`` already known to hold no newline
    async for chunk in content.iter_any():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", max(start, searched))) != -1:
            if end > start:
                yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        searched = len(buffer)
        if len(buffer) > limit:
            raise EventTooLarge(f"a watch event over {limit} bytes")
    if buffer.strip():
        yield bytes(buffer)


class Informer:
    def __init__(self, api: Any, collection: str, on_event: Callable[[str, dict], None],
                 on_synced: Callable[[], None] | None = None, on_error: Callable[[Exception | None], None] | None = None,
                 page: int = 500, watch_seconds: int = 300, remember: Callable[[dict], Any] | None = None,
                 on_vanished: Callable[[str, Any], None] | None = None,
                 after_page: Callable[[], Awaitable[None]] | None = None) -> None:
        self.api, self.collection = api, collection
        self.on_event, self.on_synced, self.on_error = on_event, on_synced, on_error
        self.page, self.watch_seconds = page, watch_seconds
        self.remember = remember or (lambda body: body)
        self.on_vanished = on_vanished
        self.after_page = after_page       # awaited after each listed page is handled
        self.known: dict[str, Any] = {}           # uid -> last body seen (or what ``remember`` kept)
        # The resourceVersion of the last complete list (the watch starts there).
        self.listed_version: str | None = None
        self.synced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> Informer:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        backoff = 0.5
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                    if self.on_error:
                        self.on_error(None)
                    self.synced.set()
                    if self.on_synced:
                        self.on_synced()
                version = await self._watch(version)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Gone:
                version = None
            except Exception as exc:  # noqa: BLE001 -- report, back off, retry: never end
                if self.on_error:
                    self.on_error(exc)
                log.warning("watching %s failed: %s", self.collection, exc)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)
                if isinstance(exc, ApiError) and exc.status in (403, 404):
                    version = None

    async def _list(self) -> str:
        seen: set[str] = set()
        fetch = asyncio.ensure_future(self.api.request("GET", self.collection, params={"limit": str(self.page)}))
        try:
            while True:
                _, listing = await fetch
                meta = metadata(listing)
                if meta.get("continue"):
                    # The next page is asked for before this one is handled: the apiserver reads
                    # it while this process handles the current one (priming overlaps the two).
                    fetch = asyncio.ensure_future(self.api.request(
                        "GET", self.collection, params={"limit": str(self.page), "continue": meta["continue"]}))
                    await asyncio.sleep(0)     # let the request go out before the handling below
                self._handle_page(listing, seen)
                if self.after_page is not None:
                    await self.after_page()
                if not meta.get("continue"):
                    version = meta.get("resourceVersion")
                    break
        finally:
            if not fetch.done():
                fetch.cancel()      # failed or cancelled half-way: no request left behind
        for uid in [u for u in self.known if u not in seen]:
            if self.on_vanished is not None:
                self.on_vanished(uid, self.known.pop(uid))
            else:
                self.on_event("DELETED", self.known.pop(uid))
        self.listed_version = version
        return version

    def _handle_page(self, listing: dict, seen: set[str]) -> None:
        # A list's items carry no kind/apiVersion (the list does): stamp them, so an item
        # from the start-up list reads like one from the watch (an anchor named after an
        # empty kind was refused by the apiserver -- found by the admission benchmark).
        list_kind = str(listing.get("kind") or "")
        item_kind = list_kind[:-4] if list_kind.endswith("List") else ""
        api_version = listing.get("apiVersion")
        for item in listing.get("items") or []:
            if isinstance(item, dict):
                if item_kind and not item.get("kind"):
                    item["kind"] = item_kind
                if api_version and not item.get("apiVersion"):
                    item["apiVersion"] = api_version
            uid = metadata(item).get("uid")
            if uid:
                seen.add(uid)
                self.known[uid] = self.remember(item)
                self.on_event("ADDED", item)

    async def _watch(self, version: str) -> str:
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.watch_seconds)}
        response = await self.api.stream(self.collection, params, read_timeout=self.watch_seconds + 30)
        try:
            async for line in json_lines(response.content):
                event = orjson.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise Gone()
                    raise ApiError(body.get("code") or 500, str(body.get("message")))
                version = metadata(body).get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                uid = metadata(body).get("uid")
                if kind == "DELETED":
                    self.known.pop(uid, None)
                elif uid:
                    self.known[uid] = self.remember(body)
                self.on_event(kind, body)
            return version
        finally:
            response.release()
