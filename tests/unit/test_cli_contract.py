"""Per-class guarantee (d): every CLI exits 0/1/2 per contract on any input, never with a
traceback -- fuzzed with arbitrary bytes, arbitrary YAML/JSON, schema-valid objects at their
extremes, damaged ledgers and arbitrary flag values."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitle import cli
from entitle.adapters.metering.ledger import Ledger
from tests.strategies import crd_schema, date_times, from_schema

pytestmark = pytest.mark.hostile  # the project's hostile-input suite: pytest -m hostile

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.data_too_large])


def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="strict")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:          # argparse
                code = exc.code
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def assert_contract(code, err, allowed=(0, 1, 2)):
    assert code in allowed, (code, err)
    assert "Traceback" not in err and "unexpected error" not in err, err


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(),
                    st.text(max_size=30), st.binary(max_size=10).map(lambda b: b.decode("latin-1")))
trees = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
                     max_leaves=25)
documents = st.one_of(
    trees,
    st.fixed_dictionaries({"kind": st.sampled_from(["Namespace", "License", "Workload", "List", "Other"]),
                           "metadata": trees, "spec": trees, "items": trees}),
    st.fixed_dictionaries({"kind": st.just("Workload"), "metadata": st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=5), "namespace": st.text(max_size=5)}), "spec": st.fixed_dictionaries(
        {}, optional={"replicas": scalars, "users": trees, "features": trees, "instanceKind": scalars})}),
)


@FUZZ
@given(st.binary(max_size=2000))
def test_check_on_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "in.yaml"
    path.write_bytes(data)
    code, _, err = run("check", "-f", str(path), "-o", "json")
    assert_contract(code, err)


@FUZZ
@given(st.lists(documents, max_size=5), st.one_of(st.none(), st.text(max_size=30), date_times()))
def test_check_on_arbitrary_yaml_and_now(tmp_path_factory, docs, now):
    path = tmp_path_factory.mktemp("fuzz") / "in.yaml"
    try:
        path.write_text(yaml.safe_dump_all(docs))
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    argv = ["check", "-f", str(path), "-o", "table"] + (["--now", now] if now is not None else [])
    code, _, err = run(*argv)
    assert_contract(code, err)


def _license_docs():
    return st.builds(lambda spec, n: {"apiVersion": "entitle.dev/v1alpha1", "kind": "License",
                                      "metadata": {"name": f"l{n}"}, "spec": spec},
                     from_schema(crd_schema("License")["properties"]["spec"], {"tenant": st.just("acme")}),
                     st.integers(0, 3))


def _workload_docs():
    return st.builds(lambda spec, n: {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
                                      "metadata": {"name": f"w{n}", "namespace": "ns"}, "spec": spec},
                     from_schema(crd_schema("Workload")["properties"]["spec"]), st.integers(0, 3))


@FUZZ
@given(st.lists(st.one_of(_license_docs(), _workload_docs()), max_size=6), date_times())
def test_check_on_schema_valid_objects_never_says_bad_input(tmp_path_factory, docs, now):
    """Schema-valid objects are decided (0 or 1), never bad input -- but for what the cluster's
    License webhook refuses (a rule that does not compile, notAfter before notBefore) and for a
    later document changing an immutable field of an earlier one of the same name: exit 2,
    saying so, as the cluster would refuse it."""
    path = tmp_path_factory.mktemp("fuzz") / "in.yaml"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns", "labels": {"entitle.dev/tenant": "acme"}}}
    path.write_text(yaml.safe_dump_all([namespace, *docs]))
    code, out, err = run("check", "-f", str(path), "-o", "json", "--now", now)
    if code == 2 and "the cluster refuses this" in err:
        return
    assert_contract(code, err, allowed=(0, 1))
    json.loads(out)


@FUZZ
@given(st.binary(max_size=3000), st.booleans())
def test_export_on_arbitrary_bytes(tmp_path_factory, data, as_ledger):
    path = tmp_path_factory.mktemp("fuzz") / "input"
    path.write_bytes(data)
    code, _, err = run("usage", "export", "--ledger" if as_ledger else "--events", str(path),
                       "--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z")
    assert_contract(code, err, allowed=(0, 2))


records = st.fixed_dictionaries({
    "specversion": st.just("1.0"), "id": st.one_of(st.text(max_size=8), st.integers()),
    "source": st.one_of(st.just("s"), scalars), "type": st.sampled_from(["dev.entitle.workload.v1", "dev.entitle.license.v1", "x"]),
    "subject": scalars, "time": st.one_of(date_times(), scalars),
    "data": st.one_of(trees, st.fixed_dictionaries({"tenant": scalars, "operation": st.sampled_from(
        ["created", "updated", "deleted", "movedIn", "movedOut", "activated", "expired", "bad"]), "uid": scalars,
        "units": scalars, "users": trees, "features": trees, "generation": scalars, "entitlement": trees})),
})


@FUZZ
@given(st.lists(records, max_size=8), date_times(), date_times(), st.sampled_from(["csv", "json"]))
def test_export_on_arbitrary_records_and_bounds(tmp_path_factory, recs, start, end, fmt):
    path = tmp_path_factory.mktemp("fuzz") / "events.jsonl"
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in recs))
    code, _, err = run("usage", "export", "--events", str(path), "--from", start, "--to", end, "--format", fmt)
    assert_contract(code, err, allowed=(0, 2))


@FUZZ
@given(st.integers(0, 2**20), st.binary(min_size=1, max_size=64))
def test_export_on_a_damaged_ledger(tmp_path_factory, offset, garbage):
    path = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    ledger = Ledger(path)
    ledger.append([{"specversion": "1.0", "id": str(i), "source": "s", "type": "dev.entitle.workload.v1",
                    "subject": "acme", "time": "2026-01-01T00:00:00Z",
                    "data": {"tenant": "acme", "uid": str(i), "operation": "created", "units": 1, "padding": "x" * 500}}
                   for i in range(200)])
    ledger.close()
    data = bytearray(path.read_bytes())
    offset %= len(data)
    data[offset:offset + len(garbage)] = garbage
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    code, _, err = run("usage", "export", "--ledger", str(path), "--from", "2026-01-01T00:00:00Z",
                       "--to", "2026-02-01T00:00:00Z")
    assert_contract(code, err, allowed=(0, 2))


def test_a_damaged_ledger_page_is_named_not_a_traceback(tmp_path):
    path = tmp_path / "l.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, source, id, type, subject, time, body)")
    db.executemany("INSERT INTO records (source, id, type, subject, time, body) VALUES ('s', ?, 't', 'x', 't', ?)",
                   [(str(i), json.dumps({"p": "y" * 100})) for i in range(3000)])
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    data[8192:8392] = b"\xab" * 200
    path.write_bytes(bytes(data))
    code, _, err = run("usage", "export", "--ledger", str(path), "--from", "2026-01-01T00:00:00Z",
                       "--to", "2026-02-01T00:00:00Z")
    assert code == 2 and "damaged" in err or "malformed" in err, err


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=6))
def test_arbitrary_arguments(argv):
    for head in (["check"], ["usage", "export"], ["crds", "--root", "/nonexistent"], []):
        code, _, err = run(*head, *argv)
        assert_contract(code, err)


def test_no_traceback_at_the_process_level_on_a_binary_file(tmp_path):
    path = tmp_path / "bin"
    path.write_bytes(bytes(range(256)) * 10)
    for argv in (["check", "-f", str(path)], ["usage", "export", "--events", str(path), "--from",
                                              "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"]):
        proc = subprocess.run([sys.executable, "-m", "entitle.cli", *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
