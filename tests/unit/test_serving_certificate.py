"""Mounted certificate files (cert-manager) are re-read when they change, without a restart."""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from entitle.adapters.pki import CertificateAuthority
from entitle.adapters.webhook.server import AdmissionServer
from entitle.operator.config import OperatorConfig
from entitle.operator.serving import ServingCertificate


def write_pair(directory, ca):
    pair = ca.issue("entitle-webhook", hosts=["127.0.0.1"])
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


def test_changed_files_are_served_without_a_restart(tmp_path):
    ca = CertificateAuthority("test-ca")
    first = write_pair(tmp_path, ca)
    cfg = OperatorConfig.model_validate({"webhook": {"certFile": str(tmp_path / "tls.crt"),
                                                     "keyFile": str(tmp_path / "tls.key"),
                                                     "caFile": str(tmp_path / "ca.crt")}})
    cert = ServingCertificate(cfg, api=None)
    assert cert.ca_pem == ca.cert_pem
    assert cert.refresh() is False, "unchanged files are not reloaded"

    async def served_serial(port: int) -> int:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    async def scenario():
        server = AdmissionServer({}, "127.0.0.1", 0, cert.tls)
        await server.start()
        port = server._runner.addresses[0][1]
        try:
            before = await served_serial(port)
            second = write_pair(tmp_path, ca)        # cert-manager renewed the Secret
            assert cert.refresh() is True
            return before, second, await served_serial(port)
        finally:
            await server.stop()

    before, second, after = asyncio.run(scenario())
    assert before == first and after == second != first
