"""``entitle check``: the admission engine over YAML streams, with no cluster.

It feeds the same :class:`~entitle.domain.state.ClusterState` the webhook uses, document by
document: Namespaces and Licenses update the picture, each Workload is a CREATE or UPDATE
(by namespace/name) or, with the annotation ``entitle.dev/check-operation: delete``, a DELETE.

Native and custom kinds (Deployments, Jobs, Pods, VMs...) are decided the same way when an
InstanceSource selects them: the stream's own InstanceSource documents, or -- when it has
none -- the Helm chart's default sources (:data:`DEFAULT_SOURCES`). Outside tenant namespaces,
or not selected, they are admitted untouched (reason ``NotCounted``), as in a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from entitle.api import InstanceSource, License, Workload
from entitle.api.common import parse_time
from entitle.domain.sources import (
    InvalidInstanceCount, Source, claim, matches, object_key, read_source,
)
from entitle.domain import reasons
from entitle.domain.admission import CREATE, DELETE, UPDATE, Decision
from entitle.domain.license_review import LicenseRefused, review_license
from entitle.domain.normalization import InstanceTable
from entitle.domain.ownership import ControllerRef, Watched, covered
from entitle.domain.state import ClusterState, WorkloadRequest
from entitle.api.objects import metadata

DELETE_ANNOTATION = "entitle.dev/check-operation"
EXIT_ALLOWED, EXIT_DENIED, EXIT_BAD_INPUT = 0, 1, 2
_OPERATION_NAMES = {CREATE: "create", UPDATE: "update", DELETE: "delete"}


class BadInput(Exception):
    """An input file, document or field cannot be used; the message says which."""


@dataclass(frozen=True)
class Document:
    path: str
    index: int  # 1-based position in its file
    body: dict[str, Any]

    def where(self, field: str | None = None) -> str:
        kind = self.body.get("kind", "?")
        meta = self.body.get("metadata")
        name = meta.get("name", "?") if isinstance(meta, dict) else "?"
        place = f"{self.path}: document {self.index} ({str(kind)[:64]} {str(name)[:64]})"
        return f"{place}: field {field}" if field else place


def parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        return parse_time(text)
    except ValueError:
        raise BadInput(f"--now {text!r}: not an RFC 3339 timestamp with a time zone "
                       "(e.g. 2026-11-27T12:00:00Z)") from None


def read_documents(paths: list[str], stdin: TextIO | None = None) -> Iterator[Document]:
    for path in paths:
        try:
            text = stdin.read() if path == "-" and stdin is not None else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path}: not a text file (not UTF-8 at byte {exc.start})") from None
        try:
            bodies = list(yaml.safe_load_all(text))
        except RecursionError:
            raise BadInput(f"{path}: invalid YAML: nested too deeply") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise BadInput(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        index = 0
        for body in bodies:
            if body is None:
                continue
            index += 1
            if not isinstance(body, dict):
                raise BadInput(f"{path}: document {index}: expected a mapping, got {type(body).__name__}")
            if body.get("kind") == "List":
                items = body.get("items") or []
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise BadInput(f"{path}: document {index} (List): items must be a list of mappings")
                for item in items:
                    yield Document(path, index, item)
            else:
                yield Document(path, index, body)


def _field_path(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(root)"


def _parse(model, doc: Document, previous: dict | None = None):
    """The document as the cluster would store it, or :class:`BadInput` where the cluster
    would refuse it: its CRD's schema first (``adapters.crd_schema``; an earlier version of
    the same object in the stream makes its immutable fields immutable), then the model."""
    from entitle.adapters.crd_schema import schema_of, violations

    problems = violations(schema_of(model.__name__), {k: v for k, v in doc.body.items() if k == "spec"}, "",
                          {"spec": previous.get("spec")} if previous else None)
    if problems:
        raise BadInput(f"{doc.where(problems[0].split(':', 1)[0])}: the cluster refuses this:"
                       f"{problems[0].split(':', 1)[1]}")
    try:
        return model.model_validate(doc.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadInput(f"{doc.where(_field_path(first))}: {first['msg']}") from None


def _metadata_name(doc: Document) -> str:
    meta = doc.body.get("metadata")
    if not isinstance(meta, dict):
        raise BadInput(f"{doc.where('metadata')}: expected a mapping")
    if not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise BadInput(f"{doc.where('metadata.name')}: required (a string)")
    return meta["name"]


# The Helm chart's default sources (charts/entitle/values.yaml, instanceSources; a test keeps the
# two equal): what a cluster installed with the chart counts.
DEFAULT_SOURCES = [
    {"name": "deployments", "resource": {"group": "apps", "version": "v1", "kind": "Deployment"},
     "instanceKind": "container", "replicasPath": "spec.replicas"},
    {"name": "statefulsets", "resource": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
     "instanceKind": "container", "replicasPath": "spec.replicas"},
    {"name": "jobs", "resource": {"group": "batch", "version": "v1", "kind": "Job"},
     "instanceKind": "container", "replicasPath": "spec.parallelism"},
    {"name": "replicasets", "resource": {"group": "apps", "version": "v1", "kind": "ReplicaSet"},
     "instanceKind": "container", "replicasPath": "spec.replicas", "onlyUncontrolled": True},
    {"name": "pods", "resource": {"group": "", "version": "v1", "kind": "Pod"},
     "instanceKind": "container", "onlyUncontrolled": True},
]
NOT_COUNTED = "NotCounted"


def default_sources() -> list[Source]:
    return [read_source(InstanceSource.model_validate({"metadata": {"name": d["name"]},
                                                       "spec": {k: v for k, v in d.items() if k != "name"}}))
            for d in DEFAULT_SOURCES]


@dataclass
class CheckResult:
    decisions: list[tuple[WorkloadRequest, Decision]]
    state: ClusterState
    skipped: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_DENIED if any(not d.allowed for _, d in self.decisions) else EXIT_ALLOWED


def _group(api_version: Any) -> str:
    return api_version.split("/")[0] if isinstance(api_version, str) and "/" in api_version else ""


def _stream_ref(body: dict, ns: str, seen: dict[str, Watched]) -> ControllerRef | None:
    """The document's controller reference; in a YAML stream owners are often named, not uid'd:
    a reference whose uid no document carries stands for the document of that namespace, kind
    and name."""
    for raw in metadata(body).get("ownerReferences") or ():
        if isinstance(raw, dict) and raw.get("controller") is True:
            group, kind, name = _group(raw.get("apiVersion")), str(raw.get("kind") or ""), str(raw.get("name") or "")
            uid = raw.get("uid")
            if not isinstance(uid, str) or uid not in seen:
                uid = f"{ns}/{group}/{kind}/{name}"
            return ControllerRef(group, kind, name, uid)
    return None


def _check_sourced(state: ClusterState, doc: Document, sources: list[Source], seen: dict[str, Watched],
                   source_kinds: set, now: datetime):
    """A document of a sourced kind: the request and decision, as the sources' webhook makes them
    (the owner rule of ``domain.ownership`` over the documents seen so far)."""
    kind, group = doc.body.get("kind"), _group(doc.body.get("apiVersion"))
    name = _metadata_name(doc)
    meta = doc.body["metadata"]
    ns = meta.get("namespace") or "default"
    if not isinstance(ns, str):
        raise BadInput(f"{doc.where('metadata.namespace')}: expected a string")
    key = object_key(kind, group, name)
    stored = state.workload(ns, key)
    existing = stored.to_model() if stored is not None else None
    delete = isinstance(meta.get("annotations"), dict) and meta["annotations"].get(DELETE_ANNOTATION) == "delete"
    operation = DELETE if delete else (UPDATE if existing else CREATE)
    ref = _stream_ref(doc.body, ns, seen)
    source = None if covered((group, kind), ns, ref, seen.get, source_kinds) else \
        next((s for s in sources if matches(s, doc.body)), None)
    tenant = state.tenant_of(ns)
    if source is None or tenant is None:
        _remember(seen, doc.body, ns, group, kind, name, False, ref)
        return WorkloadRequest(operation, ns, key, None, existing), Decision(True, NOT_COUNTED, tenant=tenant)
    try:
        workload = claim(source, doc.body, state.table) if not delete else None
    except InvalidInstanceCount as exc:
        return (WorkloadRequest(operation, ns, key, None, existing),
                Decision(False, reasons.INVALID_INSTANCE_COUNT, f"{kind} {ns}/{name}: {exc}", tenant=tenant))
    except ValidationError as exc:
        raise BadInput(f"{doc.where()}: {exc.errors()[0]['msg']}") from None
    request = WorkloadRequest(operation, ns, key, workload, existing)
    decision = state.admit(request, now)
    if decision.allowed and not delete:
        _remember(seen, doc.body, ns, group, kind, name, True, ref)
    return request, decision


def _remember(seen: dict[str, Watched], body: dict, ns: str, group: str, kind: str, name: str, counted: bool,
              ref: ControllerRef | None) -> None:
    uid = metadata(body).get("uid")
    synthetic = f"{ns}/{group}/{kind}/{name}"
    watched = Watched(ns, group, kind, name, counted, ref)
    seen[synthetic] = watched
    if isinstance(uid, str):
        seen[uid] = watched


def run_check(documents: list[Document], now: datetime, table: InstanceTable | None = None) -> CheckResult:
    state = ClusterState(table)
    decisions: list[tuple[WorkloadRequest, Decision]] = []
    skipped: list[str] = []
    stream_sources = [read_source(_parse(InstanceSource, d)) for d in documents if d.body.get("kind") == "InstanceSource"]
    sources = sorted(stream_sources or default_sources(), key=lambda s: s.name)
    seen: dict[str, Watched] = {}
    licenses: dict[str, dict] = {}
    source_kinds = {s.kind_key for s in sources}
    for doc in documents:
        kind = doc.body.get("kind")
        if kind == "Namespace":
            name = _metadata_name(doc)
            labels = doc.body["metadata"].get("labels") or {}
            if not isinstance(labels, dict):
                raise BadInput(f"{doc.where('metadata.labels')}: expected a mapping")
            state.set_namespace(name, {str(k): str(v) for k, v in labels.items()})
        elif kind == "License":
            name = _metadata_name(doc)
            previous = licenses.get(name)
            lic = _parse(License, doc, previous)
            try:
                # The License webhook's refusals (notAfter before notBefore, a rule that does not
                # compile...): what the cluster refuses is bad input here too. (Signatures are
                # judged by the operator, which holds the trusted keys.)
                review_license(doc.body, previous, None, None)
            except LicenseRefused as exc:
                raise BadInput(f"{doc.where('spec')}: the cluster refuses this License: {exc.code}: {exc}") from None
            licenses[name] = doc.body
            state.set_license(lic)
        elif kind == "Workload":
            _metadata_name(doc)
            workload = _parse(Workload, doc)
            ns = workload.metadata.namespace or "default"
            workload.metadata.namespace = ns
            name = workload.metadata.name
            stored = state.workload(ns, name)
            existing = stored.to_model() if stored is not None else None
            if workload.metadata.annotations.get(DELETE_ANNOTATION) == "delete":
                request = WorkloadRequest(DELETE, ns, name, None, existing)
            else:
                request = WorkloadRequest(UPDATE if existing else CREATE, ns, name, workload, existing)
            decisions.append((request, state.admit(request, now)))
        elif kind == "InstanceSource":
            continue
        elif any((s.group, s.kind) == (_group(doc.body.get("apiVersion")), kind) for s in sources):
            kind_sources = [s for s in sources if (s.group, s.kind) == (_group(doc.body.get("apiVersion")), kind)]
            decisions.append(_check_sourced(state, doc, kind_sources, seen, source_kinds, now))
        else:
            skipped.append(f"{doc.where()}: kind {kind!r} is not Namespace, License, Workload or a sourced kind; "
                           "skipped")
    return CheckResult(decisions, state, skipped)


def tenants_summary(state: ClusterState, now: datetime) -> dict[str, Any]:
    out = {}
    for tenant in state.tenants():
        ent = state.entitlement(tenant, now)
        usage = state.usage[tenant]
        out[tenant] = {
            "instances": {"used": usage.units, "max": ent.instances.max},
            "seats": {"used": usage.seats, "max": ent.seats.max},
            "features": usage.features(),
        }
    return out


def to_json(result: CheckResult, now: datetime) -> dict[str, Any]:
    return {
        "decisions": [{
            "namespace": req.namespace, "name": req.name.rsplit("/", 1)[-1],
            **({"kind": req.name.split(".", 1)[0]} if "/" in req.name else {}),
            "operation": _OPERATION_NAMES[req.operation],
            "allowed": dec.allowed, "reason": dec.reason, "message": dec.message,
            "warnings": dec.warnings,
        } for req, dec in result.decisions],
        "tenants": tenants_summary(result.state, now),
    }


def to_table(result: CheckResult, now: datetime) -> str:
    rows = [("NAMESPACE", "NAME", "OPERATION", "ALLOWED", "REASON", "MESSAGE")]
    for req, dec in result.decisions:
        rows.append((req.namespace, req.name, _OPERATION_NAMES[req.operation],
                     "yes" if dec.allowed else "NO", dec.reason, dec.message))
        rows += [("", "", "", "", "warning", w) for w in dec.warnings]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    lines.append("")
    lines.append("TENANT  INSTANCES  SEATS  FEATURES")
    for tenant, t in tenants_summary(result.state, now).items():
        fmt = lambda p: f"{p['used']}/{'unlimited' if p['max'] is None else p['max']}"  # noqa: E731
        feats = ",".join(f"{k}={v}" for k, v in t["features"].items()) or "-"
        lines.append(f"{tenant}  {fmt(t['instances'])}  {fmt(t['seats'])}  {feats}")
    return "\n".join(line.rstrip() for line in lines)


def main(files: list[str], now_text: str | None, output: str, stdout: TextIO, stderr: TextIO,
         stdin: TextIO | None = None, table: InstanceTable | None = None) -> int:
    try:
        now = parse_now(now_text)
        if not files:
            raise BadInput("no input: pass -f FILE (or -f - for standard input)")
        result = run_check(list(read_documents(files, stdin)), now, table)
    except BadInput as exc:
        print(f"entitle check: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    for note in result.skipped:
        print(f"entitle check: {note}", file=stderr)
    if output == "json":
        json.dump(to_json(result, now), stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write(to_table(result, now) + "\n")
    return result.exit_code
