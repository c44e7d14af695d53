"""Items of a start-up list read like watch events: the apiserver leaves kind/apiVersion off a
list's items (the list carries them), and an anchor named from an empty kind is refused."""

from __future__ import annotations

import asyncio

from entitle.adapters.kube.informer import Informer
from entitle.operator.sources import anchor_name


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
