"""Every kind of usage record entitle writes is read back by the CloudEvents SDK itself (not only
by our reading of the spec): attributes, the JSON format, and the batch the HTTP sink posts."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from cloudevents.core.formats.json import JSONFormat

from entitle.api import Workload
from entitle.api.limits import TIME_MAX, TIME_MIN
from entitle.domain import records
from entitle.domain.entitlement import Entitlement, PoolEntitlement
from entitle.domain.normalization import InstanceTable

pytestmark = pytest.mark.hostile  # the project's hostile-input suite: pytest -m hostile

WORKLOAD = Workload.model_validate({"metadata": {"name": "w", "namespace": "ns", "uid": "u-1", "generation": 2},
                                    "spec": {"replicas": 3, "users": ["ann"], "guests": ["gus"], "features": ["sso"]}})


def every_record() -> list[dict]:
    table = InstanceTable()
    out = []
    for when in (datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=timezone.utc), TIME_MIN, TIME_MAX):
        for operation in ("created", "updated", "deleted"):
            out.append(records.workload_record(WORKLOAD, operation, "acme", when, table, ("lic",)))
        out += records.moved_records(WORKLOAD, "acme", "beta", when, table, ("lic",))
        for operation in ("activated", "updated", "expired", "deleted"):
            out.append(records.license_record("lic", "uid", "acme", operation, 1, when,
                                              Entitlement("acme", ("lic",), PoolEntitlement(10, 2))))
    out.append(records.vanished_workload_record(out[0], TIME_MAX))
    return out


def test_the_sdk_reads_every_record_with_its_attributes():
    fmt = JSONFormat()
    for record in every_record():
        event = fmt.read(None, json.dumps(record).encode())
        attributes = event.get_attributes()
        assert attributes["specversion"] == "1.0"
        assert attributes["id"] == record["id"] and attributes["source"] == record["source"]
        assert attributes["type"] == record["type"] and attributes["subject"] == record["subject"]
        assert attributes["time"].tzinfo is not None
        assert event.get_data() == record["data"]
        # What the SDK writes back is the same record.
        again = json.loads(fmt.write(event))
        assert {k: again[k] for k in ("id", "source", "type", "subject", "data")} == \
            {k: record[k] for k in ("id", "source", "type", "subject", "data")}


def test_the_http_sink_batch_is_a_cloudevents_batch():
    fmt = JSONFormat()
    batch = json.dumps(every_record()).encode()
    for item in json.loads(batch):
        fmt.read(None, json.dumps(item).encode())
