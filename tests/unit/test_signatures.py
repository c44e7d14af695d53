"""Signed licenses: RFC 8785 canonical JSON (the RFC's own vectors), signatures that survive
reformatting and the apiserver's defaulting, and fail on any tampering, renaming, unknown or
retired key -- through the pure functions and the offline CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import rfc8785
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle.domain import reasons
from entitle.domain.signatures import sign, signed_bytes, verify

SPEC = {"tenant": "acme", "notAfter": "2027-01-01T00:00:00Z", "instances": {"max": 50}, "seats": {"max": 20},
        "features": [{"name": "sso"}, {"name": "audit", "requires": ["sso"]}],
        "rules": [{"name": "small", "expression": "workload.spec.replicas <= 10"}]}


def test_rfc8785_section_3_2_2_vector():
    value = json.loads('{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], '
                       r'"string": "\u20ac$\u000F\u000aA\u0027\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}')
    assert rfc8785.dumps(value) == ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                                    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()


def test_rfc8785_section_3_2_3_sorting_by_utf16_code_units():
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
             "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}
    keys = list(json.loads(rfc8785.dumps(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def _signed(key, name="acme-enterprise", spec=None, key_id="vendor-1"):
    spec = json.loads(json.dumps(spec or SPEC))
    spec["signature"] = sign(name, spec, key, key_id)
    return spec


def test_valid_then_every_kind_of_tampering_is_caught():
    key = Ed25519PrivateKey.generate()
    keys = {"vendor-1": key.public_key()}
    spec = _signed(key)
    assert verify("acme-enterprise", spec, keys) is None
    raised = json.loads(json.dumps(spec))
    raised["instances"]["max"] = 51
    assert verify("acme-enterprise", raised, keys) == reasons.SIGNATURE_INVALID
    assert verify("acme-enterprise-copy", spec, keys) == reasons.SIGNATURE_INVALID, "a renamed copy cannot stack"
    flipped = json.loads(json.dumps(spec))
    raw = bytearray(__import__("base64").b64decode(flipped["signature"]["value"]))
    raw[0] ^= 1
    flipped["signature"]["value"] = __import__("base64").b64encode(bytes(raw)).decode()
    assert verify("acme-enterprise", flipped, keys) == reasons.SIGNATURE_INVALID
    garbage = json.loads(json.dumps(spec))
    garbage["signature"]["value"] = "not base64!"
    assert verify("acme-enterprise", garbage, keys) == reasons.SIGNATURE_INVALID
    unsigned = {k: v for k, v in spec.items() if k != "signature"}
    assert verify("acme-enterprise", unsigned, keys) == reasons.SIGNATURE_MISSING
    other = _signed(Ed25519PrivateKey.generate(), key_id="someone-else")
    assert verify("acme-enterprise", other, keys) == reasons.UNKNOWN_SIGNING_KEY
    forged = _signed(Ed25519PrivateKey.generate(), key_id="vendor-1")       # right id, wrong key
    assert verify("acme-enterprise", forged, keys) == reasons.SIGNATURE_INVALID


def test_key_rotation_old_and_new_keys_both_trusted_then_the_old_retired():
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    by_old, by_new = _signed(old, key_id="v2025"), _signed(new, key_id="v2026")
    both = {"v2025": old.public_key(), "v2026": new.public_key()}
    assert verify("acme-enterprise", by_old, both) is None and verify("acme-enterprise", by_new, both) is None
    assert verify("acme-enterprise", by_old, {"v2026": new.public_key()}) == reasons.UNKNOWN_SIGNING_KEY


def test_formatting_key_order_timestamp_spelling_and_apiserver_defaults_do_not_matter():
    key = Ed25519PrivateKey.generate()
    spec = _signed(key)
    keys = {"vendor-1": key.public_key()}
    reordered = dict(reversed(list(json.loads(json.dumps(spec)).items())))
    reordered["notAfter"] = "2027-01-01T00:00:00+00:00"
    reordered["enforcement"] = "Enforce"                    # what CRD defaulting would add
    round_tripped = yaml.safe_load(yaml.safe_dump(reordered, default_flow_style=True))
    assert verify("acme-enterprise", round_tripped, keys) is None
    assert signed_bytes("acme-enterprise", spec) == signed_bytes("acme-enterprise", round_tripped)


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "entitle.cli", "license", *args], input=stdin, text=True,
                          capture_output=True)


def test_the_cli_offline_keygen_sign_verify_tamper_rename(tmp_path: Path):
    assert _cli("keygen", "--key-id", "vendor-2026", "--out", str(tmp_path)).returncode == 0
    private = tmp_path / "vendor-2026.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in private.read_text() and "PUBLIC KEY" in (tmp_path / "vendor-2026.pub").read_text()
    assert _cli("keygen", "--key-id", "vendor-2026", "--out", str(tmp_path)).returncode == 2, "never overwrites"
    doc = {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "acme-enterprise"},
           "spec": SPEC}
    (tmp_path / "lic.yaml").write_text(yaml.safe_dump(doc))
    signed = _cli("sign", "--key", str(private), "-f", str(tmp_path / "lic.yaml"))
    assert signed.returncode == 0, signed.stderr
    assert yaml.safe_load(signed.stdout)["spec"]["signature"]["keyID"] == "vendor-2026"
    pub = str(tmp_path / "vendor-2026.pub")
    ok = _cli("verify", "--public-key", pub, "-f", "-", stdin=signed.stdout)
    assert (ok.returncode, ok.stdout.strip()) == (0, "acme-enterprise: valid")
    tampered = _cli("verify", "--public-key", pub, "-f", "-", stdin=signed.stdout.replace("max: 50", "max: 500"))
    assert (tampered.returncode, tampered.stdout.strip()) == (1, "acme-enterprise: SignatureInvalid")
    renamed = _cli("verify", "--public-key", pub, "-f", "-", stdin=signed.stdout.replace("acme-enterprise", "acme-2"))
    assert (renamed.returncode, renamed.stdout.strip()) == (1, "acme-2: SignatureInvalid")
    assert _cli("verify", "--public-key", str(tmp_path / "missing.pub"), "-f", "-", stdin=signed.stdout).returncode == 2
    assert _cli("verify", "--public-key", pub, "-f", "-", stdin="{not yaml").returncode == 2
    assert _cli("verify", "--public-key", pub, "-f", "-", stdin="kind: ConfigMap\n").returncode == 2
    bad = _cli("sign", "--key", pub, "-f", str(tmp_path / "lic.yaml"))
    assert bad.returncode == 2 and "private key" in bad.stderr and "Traceback" not in bad.stderr
