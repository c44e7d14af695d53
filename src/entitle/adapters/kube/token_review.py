"""Who is calling: a bearer token reviewed by the apiserver (TokenReview), cached for the
token's own lifetime so the hot path makes no API call per request.

Only ServiceAccount tokens name a namespace (``system:serviceaccount:<namespace>:<name>``);
any other authenticated user has none. Concurrent requests with one new token share one
review; a refused token is remembered briefly, so a client retrying a bad token cannot turn
every request into an apiserver call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Caller:
    authenticated: bool
    username: str | None = None
    namespace: str | None = None      # set for ServiceAccount tokens only
    groups: tuple[str, ...] = ()
    uid: str | None = None


class TokenReviewUnavailable(Exception):
    """The apiserver could not review the token (not a verdict on the token): answer 500."""


def _expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (read after the apiserver accepted the token), else None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, AttributeError):
        return None


class TokenReviewer:
    """``audiences``: the token must be bound to one of them (the TokenReview asks for them and
    the apiserver answers which ones the token carries); empty: the apiserver's own audience."""

    def __init__(self, review: Callable[..., Awaitable[dict[str, Any]]], max_ttl: float = 300.0,
                 refused_ttl: float = 10.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.time, audiences: tuple[str, ...] = ()) -> None:
        self._review, self.max_ttl, self.refused_ttl = review, max_ttl, refused_ttl
        self.audiences = tuple(audiences)
        self.max_entries, self.clock = max_entries, clock
        self._cache: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future] = {}
        self.reviews = 0

    async def caller(self, token: str) -> Caller:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            caller = await self._fresh(token)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()          # retrieved: no "never retrieved" warning
            raise
        finally:
            self._inflight.pop(digest, None)
        future.set_result(caller)
        if caller.authenticated:
            expiry = _expiry(token)
            until = now + self.max_ttl if expiry is None else min(expiry, now + self.max_ttl)
        else:
            until = now + self.refused_ttl
        self._cache[digest] = (caller, until)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return caller

    async def _fresh(self, token: str) -> Caller:
        self.reviews += 1
        try:
            answer = await (self._review(token, self.audiences) if self.audiences else self._review(token))
            status = answer.get("status") or {}
        except Exception as exc:  # the apiserver, not the token
            raise TokenReviewUnavailable(str(exc)[:200]) from None
        if not status.get("authenticated"):
            return Caller(False)
        if self.audiences and not set(self.audiences) & set(status.get("audiences") or ()):
            # An apiserver token (or one for another service) is refused: a service that takes
            # such tokens collects credentials to the whole cluster.
            return Caller(False)
        user = status.get("user") or {}
        username = user.get("username") or ""
        namespace = None
        if username.startswith(SA_PREFIX):
            namespace = username[len(SA_PREFIX):].split(":", 1)[0] or None
        groups = tuple(g for g in user.get("groups") or () if isinstance(g, str))
        return Caller(True, username, namespace, groups, user.get("uid") if isinstance(user.get("uid"), str) else None)


def kube_review(async_api: Any) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A TokenReview through the operator's own API client."""

    async def review(token: str, audiences: tuple[str, ...] = ()) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        _, answer = await async_api.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)
        return answer or {}

    return review


class AccessReviewer:
    """May this caller ``verb`` the non-resource ``path``? A SubjectAccessReview, cached per
    caller for ``ttl`` seconds (what kube-rbac-proxy does in front of /metrics)."""

    def __init__(self, review: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], ttl: float = 60.0,
                 max_entries: int = 1_000, clock: Callable[[], float] = time.time) -> None:
        self._review, self.ttl, self.max_entries, self.clock = review, ttl, max_entries, clock
        self._cache: OrderedDict[tuple, tuple[bool, float]] = OrderedDict()

    async def allowed(self, caller: Caller, verb: str, path: str) -> bool:
        key = (caller.username, caller.groups, verb, path)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        spec: dict[str, Any] = {"user": caller.username, "groups": list(caller.groups),
                                "nonResourceAttributes": {"path": path, "verb": verb}}
        if caller.uid:
            spec["uid"] = caller.uid
        try:
            answer = await self._review(spec)
        except Exception as exc:  # the apiserver, not the caller
            raise TokenReviewUnavailable(str(exc)[:200]) from None
        verdict = bool((answer.get("status") or {}).get("allowed"))
        self._cache[key] = (verdict, now + self.ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return verdict


def kube_access_review(async_api: Any) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def review(spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        _, answer = await async_api.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        return answer or {}

    return review
