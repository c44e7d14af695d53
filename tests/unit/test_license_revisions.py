"""Revisions and the audit trail (domain.revisions): what the mutating License webhook stamps and
how the leader numbers specs -- pure, no server."""

from __future__ import annotations

from entitle.domain import revisions as rv
from tests.unit.builders import NOW


def _lic(spec: dict, annotations: dict | None = None) -> dict:
    meta = {"name": "gold"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": meta, "spec": spec}


SPEC = {"tenant": "acme", "instances": {"max": 10}}


def test_spec_hash_ignores_formatting_and_defaults_but_not_values_or_signature():
    base = rv.spec_hash(SPEC)
    assert rv.spec_hash({"instances": {"max": 10}, "tenant": "acme"}) == base          # key order
    assert rv.spec_hash({**SPEC, "enforcement": "Enforce"}) == base                     # a default
    assert rv.spec_hash({**SPEC, "instances": {"max": 11}}) != base
    assert rv.spec_hash({**SPEC, "signature": {"keyID": "k", "value": "AA=="}}) != base  # re-signed: new revision
    # An unreadable spec still hashes (never raises): the webhook must not crash on it.
    assert rv.spec_hash({"tenant": 5, "instances": "x"}) == rv.spec_hash({"tenant": 5, "instances": "x"})


def test_create_is_stamped_with_who_how_and_when():
    wanted = rv.stamp(None, _lic(SPEC), "alice", "kubectl-client-side-apply", NOW)
    assert wanted[rv.CHANGED_BY] == "alice"
    assert wanted[rv.FIELD_MANAGER] == "kubectl-client-side-apply"
    assert wanted[rv.CHANGED_AT] == "2026-11-27T12:00:00Z"
    assert wanted[rv.SPEC_HASH] == rv.spec_hash(SPEC)
    assert wanted[rv.ROLLBACK_OF] is None and wanted[rv.ROLLBACK_TO] is None


def test_an_update_without_a_spec_change_keeps_the_stored_trail_even_if_forged():
    trail = {rv.CHANGED_BY: "alice", rv.CHANGED_AT: "2026-01-01T00:00:00Z", rv.SPEC_HASH: rv.spec_hash(SPEC)}
    old = _lic(SPEC, dict(trail))
    forged = _lic(SPEC, {**trail, rv.CHANGED_BY: "mallory", "team": "x"})
    wanted = rv.stamp(old, forged, "mallory", "kubectl-edit", NOW)
    assert wanted[rv.CHANGED_BY] == "alice" and wanted[rv.CHANGED_AT] == "2026-01-01T00:00:00Z"
    ops = rv.annotation_patch(forged, wanted)
    assert {"op": "add", "path": "/metadata/annotations/entitle.dev~1changed-by", "value": "alice"} in ops
    assert all("team" not in op["path"] for op in ops)   # other annotations are the user's


def test_a_spec_change_restamps_and_a_rollback_is_recorded_once():
    old = _lic(SPEC, {rv.CHANGED_BY: "alice", rv.SPEC_HASH: rv.spec_hash(SPEC), rv.ROLLBACK_OF: "1"})
    new = _lic({**SPEC, "instances": {"max": 5}}, {rv.CHANGED_BY: "alice", rv.ROLLBACK_TO: "2"})
    wanted = rv.stamp(old, new, "bob", None, NOW)
    assert wanted[rv.CHANGED_BY] == "bob" and wanted[rv.FIELD_MANAGER] is None
    assert wanted[rv.ROLLBACK_OF] == "2" and wanted[rv.ROLLBACK_TO] is None
    ops = rv.annotation_patch(new, wanted)
    assert {"op": "remove", "path": "/metadata/annotations/entitle.dev~1rollback-to"} in ops
    # An absurd rollback target is not recorded.
    absurd = _lic({**SPEC, "instances": {"max": 4}}, {rv.ROLLBACK_TO: "1e30"})
    assert rv.stamp(old, absurd, "bob", None, NOW)[rv.ROLLBACK_OF] is None


def test_patch_on_an_object_without_annotations_adds_the_map():
    ops = rv.annotation_patch(_lic(SPEC), rv.stamp(None, _lic(SPEC), "alice", None, NOW))
    assert len(ops) == 1 and ops[0]["path"] == "/metadata/annotations"
    assert ops[0]["value"][rv.CHANGED_BY] == "alice" and rv.ROLLBACK_TO not in ops[0]["value"]


def test_audit_is_unknown_when_the_stamp_is_for_another_spec():
    stamped = _lic(SPEC, {rv.CHANGED_BY: "alice", rv.SPEC_HASH: rv.spec_hash(SPEC), rv.ROLLBACK_OF: "3"})
    assert rv.audit_of(stamped).changed_by == "alice" and rv.audit_of(stamped).rollback_of == 3
    bypassed = _lic({**SPEC, "instances": {"max": 99}}, stamped["metadata"]["annotations"])
    assert rv.audit_of(bypassed).changed_by == rv.UNKNOWN_AUTHOR


def test_numbering_gives_each_distinct_spec_one_number_for_good():
    numbering = rv.Numbering()
    assert numbering.number("a") == (1, True)
    assert numbering.number("b") == (2, True)
    assert numbering.number("a") == (1, False)     # a rollback to a's spec is revision 1 again
    assert numbering.number("c") == (3, True)
    resumed = rv.Numbering({"a": 1, "b": 2, "c": 3})   # a new leader, loaded from the cluster
    assert resumed.number("d") == (4, True) and resumed.number("b") == (2, False)
