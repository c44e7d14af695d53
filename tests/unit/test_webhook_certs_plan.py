"""When the webhook certificate Secret is (re)written: pure planning, no API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509

from entitle.adapters.webhook.certificates import _split_pem, plan

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
HOSTS = ["entitle-webhook.entitle-system.svc", "entitle-webhook.entitle-system.svc.cluster.local"]


def sans(pem: bytes) -> set[str]:
    ext = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName))


def test_nothing_stored_makes_a_ca_and_a_serving_certificate_for_the_hosts():
    data = plan(None, HOSTS, NOW)
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert sans(data["tls.crt"]) == set(HOSTS)
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


def test_a_valid_certificate_is_left_alone():
    data = plan(None, HOSTS, NOW)
    assert plan(data, HOSTS, NOW + timedelta(days=300)) is None


def test_serving_certificate_renewed_30_days_before_expiry_with_the_same_ca():
    data = plan(None, HOSTS, NOW)
    renewed = plan(data, HOSTS, NOW + timedelta(days=336))
    assert renewed is not None and renewed["ca.crt"] == data["ca.crt"] and renewed["ca.key"] == data["ca.key"]
    assert renewed["tls.crt"] != data["tls.crt"]


def test_a_new_service_name_reissues():
    data = plan(None, HOSTS, NOW)
    assert plan(data, HOSTS + ["extra.example"], NOW) is not None


def test_ca_rotation_keeps_trusting_the_old_ca_until_it_expires():
    data = plan(None, HOSTS, NOW)
    rotated = plan(data, HOSTS, NOW + timedelta(days=3300))
    bundle = _split_pem(rotated["ca.crt"])
    assert len(bundle) == 2 and bundle[1] == data["ca.crt"]
    x509.load_pem_x509_certificate(rotated["tls.crt"]).verify_directly_issued_by(
        x509.load_pem_x509_certificate(bundle[0]))
    # Once the old CA has expired it leaves the bundle.
    final = plan(rotated, HOSTS, NOW + timedelta(days=3660))
    assert final is not None and len(_split_pem(final["ca.crt"])) == 1
