"""Pseudonymization of user and guest names (DESIGN "Privacy"): ``HMAC-SHA256(key, name)``
in hex. Distinct names stay distinct and one name always maps to one pseudonym, so seat
counting over pseudonyms equals seat counting over names; without the key nobody maps a
pseudonym back (a plain hash of a short user name could be reversed by guessing)."""

from __future__ import annotations

import hashlib
import hmac

from entitle.domain.records import SESSION_TYPE, WORKLOAD_TYPE

MARK = "namesPseudonymized"


def pseudonym(key: bytes, name: str) -> str:
    return hmac.new(key, name.encode(), hashlib.sha256).hexdigest()


def pseudonymize_record(record: dict, key: bytes) -> dict:
    """The record with ``data.users`` and ``data.guests`` pseudonymized (once: a record built
    from an already pseudonymized one -- a vanished Workload's last record -- is left alone)."""
    data = record.get("data")
    if record.get("type") not in (WORKLOAD_TYPE, SESSION_TYPE) or not isinstance(data, dict) or data.get(MARK):
        return record
    data = dict(data)
    if record.get("type") == SESSION_TYPE:
        user = str(data.get("user", ""))
        data["user"] = pseudonym(key, user)
        if data.get("seat") == f"user:{user}":
            data["seat"] = f"user:{data['user']}"
        data[MARK] = True
        return {**record, "data": data}
    for field in ("users", "guests"):
        if isinstance(data.get(field), list):
            data[field] = sorted(pseudonym(key, str(name)) for name in data[field])
    data[MARK] = True
    return {**record, "data": data}
