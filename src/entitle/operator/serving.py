"""The webhook's serving certificate: where it comes from, and keeping it fresh while serving."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from entitle.adapters.webhook.server import ReloadableTLS
from entitle.operator import config as configmod

log = logging.getLogger("entitle")


class ServingCertificate:
    """Where the webhook's certificate comes from, and how it is kept fresh while serving:
    ``generated`` (the operator's own, in a Secret, rotated), mounted files (cert-manager;
    re-read when they change), or — neither configured — a loopback certificate for development."""

    def __init__(self, cfg: configmod.OperatorConfig, api: Any) -> None:
        self.cfg, self.directory = cfg, Path(tempfile.mkdtemp(prefix="entitle-webhook-"))
        hook = cfg.webhook
        self.keeper = None
        if hook.generated is not None:
            from entitle.adapters.webhook.certificates import WebhookCertificates

            self.keeper = WebhookCertificates(api.api_client, cfg.namespace, hook.generated.secret_name,
                                              hook.generated.hosts, hook.configuration_name)
            bundle = self.keeper.ensure()
            self.certfile, self.keyfile = self._write(bundle.cert_pem, bundle.key_pem)
            self.ca_pem = bundle.ca_bundle
        elif hook.cert_file and hook.key_file:
            self.certfile, self.keyfile = hook.cert_file, hook.key_file
            self.ca_pem = Path(hook.ca_file or hook.cert_file).read_bytes()
        else:
            from entitle.adapters.pki import CertificateAuthority

            ca = CertificateAuthority("entitle-webhook-ca")
            pair = ca.issue("entitle-webhook", hosts=["127.0.0.1", "localhost"])
            self.certfile, self.keyfile = self._write(pair.cert_pem, pair.key_pem)
            self.ca_pem = ca.cert_pem
        self.tls = ReloadableTLS(self.certfile, self.keyfile, hook.client_ca_file, hook.client_names)
        # /metrics over HTTPS with the same certificate (no client certificate asked for).
        self.metrics_tls = ReloadableTLS(self.certfile, self.keyfile)
        self._loaded = self._fingerprint()

    def _write(self, cert: bytes, key: bytes) -> tuple[str, str]:
        (self.directory / "tls.crt").write_bytes(cert)
        (self.directory / "tls.key").write_bytes(key)
        os.chmod(self.directory / "tls.key", 0o600)
        return str(self.directory / "tls.crt"), str(self.directory / "tls.key")

    def _fingerprint(self) -> bytes:
        return Path(self.certfile).read_bytes() + Path(self.keyfile).read_bytes()

    def refresh(self) -> bool:
        """Re-check the source; reload the serving context when the certificate changed."""
        if self.keeper is not None:
            bundle = self.keeper.ensure()
            if bundle.cert_pem + bundle.key_pem != self._loaded:
                self._write(bundle.cert_pem, bundle.key_pem)
        if self.tls.reload_client_ca():
            log.info("webhook client CA reloaded")
        current = self._fingerprint()
        if current == self._loaded:
            return False
        self.tls.load(self.certfile, self.keyfile)
        self.metrics_tls.load(self.certfile, self.keyfile)
        self._loaded = current
        log.info("webhook serving certificate reloaded")
        return True

    async def keep_fresh(self) -> None:
        generated = self.cfg.webhook.generated
        period = generated.check_seconds if generated else 30.0
        while True:
            await asyncio.sleep(period)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # keep serving the current certificate; try again later
                log.warning("webhook certificate check failed: %s", exc)
