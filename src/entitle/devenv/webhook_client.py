"""The apiserver's webhook client certificate (DESIGN "Integrity against the tenant": only the
apiserver reviews): a CA of its own, one client certificate, and the AdmissionConfiguration
that makes the apiserver present it to every admission webhook.

The CA signs nothing else -- not users, not kubelets -- so a webhook that trusts it trusts the
apiserver alone. Its certificate is written as ``webhook-client-ca.crt`` beside the cluster's
kubeconfig; the operator takes it as ``webhook.clientCAFile`` (the chart: from a Secret).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from entitle.adapters.pki import CertificateAuthority

CLIENT_NAME = "kube-apiserver-webhook-client"
CA_FILE = "webhook-client-ca.crt"


def write_webhook_client(directory: Path, ca_copy_dir: Path, apiserver_dir: str | None = None) -> Path:
    """Write the CA, the client certificate, the kubeconfig and the AdmissionConfiguration into
    ``directory``; copy the CA certificate to ``ca_copy_dir/webhook-client-ca.crt``. Returns the
    AdmissionConfiguration's path (``kube-apiserver --admission-control-config-file``).
    ``apiserver_dir``: where the apiserver will read the files, when not ``directory`` (a kind
    or kubeadm control-plane node)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority("entitle-webhook-client-ca", days=3650)
    client = ca.issue(CLIENT_NAME, client=True, days=3650)
    # Nothing else is ever signed with it: its key is not kept.
    (directory / CA_FILE).write_bytes(ca.cert_pem)
    (ca_copy_dir / CA_FILE).write_bytes(ca.cert_pem)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    # "*" is the default entry: every webhook (URL or Service) gets this certificate.
    kubeconfig = directory / "webhook-client.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "users": [{"name": "*", "user": {"client-certificate-data": b64(client.cert_pem),
                                         "client-key-data": b64(client.key_pem)}}]}))
    os.chmod(kubeconfig, 0o600)
    admission = directory / "admission-configuration.yaml"
    admission.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
        "plugins": [{"name": plugin, "configuration": {
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": f"{apiserver_dir.rstrip('/')}/{kubeconfig.name}" if apiserver_dir else str(kubeconfig)}}
            for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")]}))
    return admission
