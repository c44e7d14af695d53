"""Signed licenses against the real apiserver: with trusted keys, a License signed by the vendor
grants; the same License tampered with, renamed, unsigned or bound to another cluster is
Valid=False with the DESIGN reason and grants nothing (its tenant's Workloads are denied)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle.domain.signatures import sign
from tests.conftest import Operator, wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def _condition(cluster, name, ctype="Valid") -> dict:
    status = (get(cluster, "license", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), {})


def _signed(key, name, tenant, **spec):
    body = license(name, tenant, **spec)
    body["spec"]["signature"] = sign(name, body["spec"], key, "vendor-1")
    return body


def test_signed_tampered_renamed_unsigned_and_rebound_licenses(cluster, tmp_path):
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    good_tenant, bad_tenant, ns_good, ns_bad = unique("sg"), unique("sb"), unique("ns"), unique("ns")
    good = _signed(key, unique("good"), good_tenant, instances={"max": 5})
    tampered = _signed(key, unique("tamp"), bad_tenant, instances={"max": 5})
    tampered["spec"]["instances"]["max"] = 500
    renamed = json.loads(json.dumps(good))
    renamed["metadata"]["name"] = unique("copy")
    renamed["spec"]["tenant"] = good_tenant
    # The renamed copy differs only by name: the signature no longer matches.
    unsigned = license(unique("unsigned"), bad_tenant, instances={"max": 5})
    elsewhere = _signed(key, unique("bound"), bad_tenant, instances={"max": 5}, clusterID="another-cluster")
    # Stored while no entitle replica answered (the License webhooks fail open, by design):
    # the controller still makes each of them Valid=False, granting nothing.
    apply(cluster, namespace(ns_good, good_tenant), namespace(ns_bad, bad_tenant), tampered, unsigned, renamed)
    operator = Operator(cluster, tmp_path, extra_config={"signingKeys": {"vendor-1": pem}}).start()
    try:
        apply(cluster, good, elsewhere)   # accepted by the webhook (a foreign binding only warns)
        # With the webhook answering, bad signatures are refused outright.
        for body, reason in ((tampered, "SignatureInvalid"), (unsigned, "SignatureMissing"), (renamed, "SignatureInvalid")):
            fresh = json.loads(json.dumps(body))
            fresh["metadata"]["name"] = unique("again")
            refused = apply(cluster, fresh, check=False)
            assert refused.returncode != 0 and reason in refused.stderr, refused.stderr
        expected = {good["metadata"]["name"]: "True", tampered["metadata"]["name"]: "SignatureInvalid",
                    renamed["metadata"]["name"]: "SignatureInvalid", unsigned["metadata"]["name"]: "SignatureMissing",
                    elsewhere["metadata"]["name"]: "ClusterMismatch"}

        def verdicts():
            out = {}
            for name in expected:
                cond = _condition(cluster, name)
                out[name] = "True" if cond.get("status") == "True" else cond.get("reason")
            return out

        wait_for(lambda: verdicts() == expected, timeout=60, message=f"license verdicts {expected}")
        assert apply(cluster, workload("w", ns_good, replicas=2), check=False).returncode == 0
        denied = apply(cluster, workload("w", ns_bad, replicas=1), check=False)
        assert denied.returncode != 0 and "NoActiveLicense" in denied.stderr
    finally:
        operator.stop()
