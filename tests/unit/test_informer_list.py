"""Items of a start-up list read like watch events: the apiserver leaves kind/apiVersion off a
list's items (the list carries them), and an anchor named from an empty kind is refused."""

from __future__ import annotations

import asyncio

from entitle.adapters.kube.informer import Informer
from entitle.operator.sources.anchors import anchor_name


class OnePageApi:
    """The list response as the apiserver shapes it (kind on the list, not on the items)."""

    async def request(self, method, path, body=None, params=None, ok=(200,)):
        return 200, {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "7"},
                     "items": [{"metadata": {"name": "web", "namespace": "a", "uid": "u1"}, "spec": {"replicas": 2}}]}


def test_listed_items_carry_the_kind_and_api_version_of_their_list():
    events = []
    informer = Informer(OnePageApi(), "apis/apps/v1/deployments", lambda kind, body: events.append(body))
    assert asyncio.run(informer._list()) == "7"
    assert events[0]["kind"] == "Deployment" and events[0]["apiVersion"] == "apps/v1"


def test_anchor_names_are_valid_whatever_the_kind():
    import re

    valid = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    for kind, name in (("Deployment", "web"), ("", "d-1b611fb307"), ("", "-x-"), ("Job", "a" * 300), ("", "")):
        out = anchor_name(kind, name, "uid-1")
        assert valid.match(out) and len(out) <= 253, out


class Chunks:
    """A streamed body delivered in the given chunks (``iter_any`` as aiohttp's StreamReader)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def iter_any(self):
        for chunk in self.chunks:
            yield chunk


def _lines(*chunks: bytes, limit: int | None = None) -> list[bytes]:
    from entitle.adapters.kube.informer import json_lines

    async def collect():
        return [line async for line in (json_lines(Chunks(*chunks)) if limit is None
                                        else json_lines(Chunks(*chunks), limit))]

    return asyncio.run(collect())


def test_watch_lines_of_any_length_split_anywhere():
    big = b'{"type":"ADDED","object":{"spec":{"users":["' + b"u" * 3_000_000 + b'"]}}}'
    stream = b'{"a":1}\n' + big + b'\n\n{"b":2}\n{"c":3}'
    # Cut into pieces that split lines, the newline itself and the big event many times over.
    pieces = [stream[i:i + 65_521] for i in range(0, len(stream), 65_521)]
    assert _lines(*pieces) == [b'{"a":1}', big, b'{"b":2}', b'{"c":3}']
    assert _lines(b'{"a":', b'1}\n{"b"', b':2}\n') == [b'{"a":1}', b'{"b":2}']


def test_a_watch_line_past_the_limit_ends_the_watch():
    import pytest

    from entitle.adapters.kube.informer import EventTooLarge

    with pytest.raises(EventTooLarge):
        _lines(b"x" * 100, b"y" * 100, limit=150)
    assert _lines(b"x" * 100 + b"\n", b"y" * 100 + b"\n", limit=150) == [b"x" * 100, b"y" * 100]
