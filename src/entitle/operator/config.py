"""Operator configuration (the Helm chart renders it into a ConfigMap)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from entitle.domain.normalization import DEFAULT_WEIGHTS, InstanceTable
from entitle.api.objects import first_error


# Strict: an unknown or misspelt key (``statusIntervalSecs``, ``webhok``) or an invalid enum
# value stops the start with exit 2 and names it (DESIGN "Integrity against the tenant":
# configuration is strict) -- never a silent run on defaults.
STRICT = ConfigDict(populate_by_name=True, extra="forbid")

FailurePolicy = Literal["Fail", "Ignore"]

# Who creates the children of the built-in controllers: kube-controller-manager's own identity,
# or (with --use-service-account-credentials) one ServiceAccount per controller in kube-system.
# A tenant cannot act as any of them (no token of kube-system, no impersonation).
CONTROLLER_USERS = ("system:kube-controller-manager",
                    *(f"system:serviceaccount:kube-system:{name}-controller"
                      for name in ("replicaset", "deployment", "statefulset", "job", "cronjob")))


class GeneratedCertificates(BaseModel):
    """The operator makes and rotates its own serving certificate (no cert-manager)."""

    model_config = STRICT

    # Secret in the operator's namespace holding ca.crt, ca.key, tls.crt, tls.key.
    secret_name: str = Field("entitle-webhook-tls", alias="secretName")
    # DNS names of the webhook Service (the first is the certificate's common name).
    hosts: list[str]
    # How often every replica re-checks the Secret (rotation, a peer's new certificate).
    check_seconds: float = Field(3600.0, alias="checkSeconds")


class WebhookConfig(BaseModel):
    model_config = STRICT

    listen_host: str = Field("0.0.0.0", alias="listenHost")
    port: int = 9443
    # Mounted certificate files (cert-manager): re-read when they change on disk.
    cert_file: str | None = Field(None, alias="certFile")
    key_file: str | None = Field(None, alias="keyFile")
    # CA bundle the apiserver verifies the serving certificate with (registerURL mode).
    ca_file: str | None = Field(None, alias="caFile")
    # Only the apiserver reviews: the CA of the client certificate the apiserver presents to
    # webhooks (its AdmissionConfiguration's kubeConfigFile). A review from any other client is
    # refused before it is read. Use a CA dedicated to that certificate, not the cluster's CA
    # (which signs every user's and kubelet's certificate) -- or narrow it with clientNames.
    client_ca_file: str | None = Field(None, alias="clientCAFile")
    # Accepted client certificate names (common name or DNS SAN); empty: any the CA signed.
    client_names: list[str] = Field(default_factory=list, alias="clientNames")
    generated: GeneratedCertificates | None = None
    # The Validating/MutatingWebhookConfiguration pair (both carry this name): the operator
    # publishes its CA into them (generated certificates) or writes them (registerURL).
    configuration_name: str = Field("entitle", alias="configurationName")
    # Out-of-cluster (development, tests): register the webhook configurations pointing at
    # this URL, with a CA the operator generates. In-cluster the Helm chart owns them.
    register_url: str | None = Field(None, alias="registerURL")
    timeout_seconds: int = Field(5, alias="timeoutSeconds")
    # On shutdown, answer this long with "Connection: close" (and readiness failing) before
    # stopping, so no keep-alive connection is cut under a review in flight.
    drain_seconds: float = Field(3.0, alias="drainSeconds")
    # Processes serving the webhook port (SO_REUSEPORT): one per core the replica may use.
    workers: int = Field(1, ge=1, le=64)
    failure_policy: FailurePolicy = Field("Fail", alias="failurePolicy")
    # The License webhooks (refusals, what-if warnings, audit stamps). Ignore by default: while
    # no replica answers, a cluster admin can still fix or remove a License; the controller
    # still makes a bad one Valid=False, and the leader keeps its revision with an unknown author.
    license_failure_policy: FailurePolicy = Field("Ignore", alias="licenseFailurePolicy")
    # Who puts the usage-record finalizer on new Workloads (registerURL mode; the chart decides
    # in-cluster): the chart's MutatingAdmissionPolicy -- no webhook round trip -- or the
    # mutating webhook. auto: the policy when it is installed.
    usage_finalizer: Literal["auto", "policy", "webhook"] = Field("auto", alias="usageFinalizer")
    # The cluster's own controllers (see CONTROLLER_USERS): their children of objects that are all
    # counted skip the sources' webhook (matchConditions); everyone else's reach it.
    controller_users: list[str] = Field(default_factory=lambda: list(CONTROLLER_USERS), alias="controllerUsers")


class LedgerConfig(BaseModel):
    """Where usage records are kept first (DESIGN "Billing delivery": ledger backends)."""

    model_config = STRICT

    # SQLite (the embedded default): one file per replica, on a local volume -- never a file
    # shared by two processes over a network filesystem (SQLite's locking is not safe there).
    path: str | None = None
    # PostgreSQL DSN (``postgresql://user@host:5432/entitle``): every replica writes this one
    # database. ``postgresFile``: read the DSN from a file (a mounted Secret) instead.
    postgres: str | None = None
    postgres_file: str | None = Field(None, alias="postgresFile")

    def dsn(self) -> str | None:
        if self.postgres_file:
            try:
                return Path(self.postgres_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"ledger.postgresFile {self.postgres_file}: {exc.strerror or exc}") from None
        return self.postgres


class OfrepConfig(BaseModel):
    """The OpenFeature Remote Evaluation Protocol endpoint (DESIGN "Entitlements for
    applications"): off without a port."""

    model_config = STRICT

    port: int | None = Field(None, ge=1, le=65535)
    listen_host: str = Field("0.0.0.0", alias="listenHost")
    # Plain HTTP inside the cluster unless a certificate is configured.
    cert_file: str | None = Field(None, alias="certFile")
    key_file: str | None = Field(None, alias="keyFile")
    # A reviewed token is trusted for its own lifetime, at most this long.
    token_cache_seconds: float = Field(300.0, alias="tokenCacheSeconds", gt=0)
    # Callers' tokens must be bound to this audience (a projected ServiceAccount token): a token
    # for the apiserver is refused, so this port never collects credentials to the cluster.
    # null: any token the apiserver accepts (not recommended).
    audience: str | None = Field("entitle", min_length=1)


class FleetConfig(BaseModel):
    """Member mode (DESIGN "Fleet"; docs/fleet.md): fleet Licenses are read from the hub and
    their caps shared with the other members through capacity leases. Off without a hub."""

    model_config = STRICT

    hub_kubeconfig: str | None = Field(None, alias="hubKubeconfig")
    # This member's name in the hub's lease books (unique in the fleet).
    cluster: str | None = Field(None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    hub_namespace: str = Field("entitle-fleet", alias="hubNamespace")
    # How long a lease may be spent after the write that renewed it; peers reclaim it only
    # after this plus the grace (measured on their own clocks).
    lease_seconds: int = Field(300, alias="leaseSeconds", ge=10, le=86_400)
    grace_seconds: int = Field(30, alias="graceSeconds", ge=1, le=3_600)
    # Units (seats) reserved for this member for ever: all it admits when cut off past its lease.
    floor: dict[str, int] = Field(default_factory=dict)
    # How much more than needed a growth takes (fewer hub writes), per pool.
    chunk: dict[str, int] = Field(default_factory=lambda: {"instances": 10, "seats": 5})

    @model_validator(mode="after")
    def _complete(self) -> FleetConfig:
        if self.hub_kubeconfig and not self.cluster:
            raise ValueError("fleet.cluster is required with fleet.hubKubeconfig")
        for name, values in (("floor", self.floor), ("chunk", self.chunk)):
            for pool, n in values.items():
                if pool not in ("instances", "seats") or n < 0:
                    raise ValueError(f"fleet.{name}.{pool}: pools are instances and seats, values >= 0")
        return self


class PrivacyConfig(BaseModel):
    """DESIGN "Privacy": user and guest names pseudonymized in everything entitle writes out."""

    model_config = STRICT

    pseudonymize_users: bool = Field(False, alias="pseudonymizeUsers")
    # The HMAC key (a mounted Secret's file); required when pseudonymizeUsers is true.
    key_file: str | None = Field(None, alias="keyFile")

    def key(self) -> bytes | None:
        if not self.pseudonymize_users:
            return None
        if not self.key_file:
            raise ValueError("privacy.pseudonymizeUsers needs privacy.keyFile (the HMAC key, from a Secret)")
        try:
            key = Path(self.key_file).read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"privacy.keyFile {self.key_file}: {exc.strerror or exc}") from None
        if len(key) < 16:
            raise ValueError(f"privacy.keyFile {self.key_file}: the key must have at least 16 bytes")
        return key


class OperatorConfig(BaseModel):
    model_config = STRICT

    normalization: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    # The operator's own namespace: reservation holds (one ConfigMap per tenant) and the
    # controller Lease live here.
    namespace: str = "entitle-system"
    # Controller leadership (status, events, sinks): a replica that stops renewing for this
    # long is replaced.
    lease_seconds: float = Field(15.0, alias="leaseSeconds")
    ledger_path: str = Field("/var/lib/entitle/ledger.db", alias="ledgerPath")
    # ``ledger: {path}`` or ``ledger: {postgres: DSN}``; ``ledgerPath`` is the older spelling of
    # ``ledger.path`` and still honoured.
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    ofrep: OfrepConfig = Field(default_factory=OfrepConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    source: str = "entitle.dev/operator"
    # How long a capacity hold outlives its admission: longer than the webhook timeout plus the
    # watch lag, so an admitted object is counted from the watch before its hold lapses.
    reservation_seconds: float = Field(15.0, alias="reservationSeconds")
    # Escrow (docs/admission-concurrency.md): a replica reserves a chunk of a tenant's headroom
    # with one write and spends it in memory; chunks start at escrowInitialChunk units (seats,
    # feature slots), double while used up, never exceed escrowMaxChunk nor a share of the
    # headroom. false: one hold written per raising admission.
    escrow: bool = True
    escrow_initial_chunk: int = Field(8, alias="escrowInitialChunk", ge=1)
    escrow_max_chunk: int = Field(512, alias="escrowMaxChunk", ge=1)
    # A grant is paid from for this long after it is written; peers stop counting it this long
    # plus the webhook's timeout plus a watch margin (2.5 s) after they first saw it -- so the
    # capacity a stopped replica held returns within about 10 s (docs/admission-concurrency.md).
    escrow_lease_seconds: float = Field(2.0, alias="escrowLeaseSeconds", gt=0, le=60)
    status_interval_seconds: float = Field(1.0, alias="statusIntervalSeconds")
    # The leader's status writes are paced to this (coalesced per object, Licenses first).
    status_writes_per_second: float = Field(100.0, alias="statusWritesPerSecond", gt=0)
    # Where ledger records go next: [{type: jsonl, path}, {type: http, url, headers}, {type: kafka, ...}].
    sinks: list[dict] = Field(default_factory=list)
    metrics_port: int | None = Field(8080, alias="metricsPort")
    # Where /metrics listens; default: the webhook's listenHost.
    metrics_host: str | None = Field(None, alias="metricsHost")
    # /metrics lists every tenant's usage, caps and licenses: it answers only a bearer token the
    # apiserver authenticates (TokenReview) and authorizes for `get` on the non-resource URL
    # /metrics (SubjectAccessReview), over HTTPS with the webhook's certificate -- as
    # kube-rbac-proxy does. false: plain HTTP, open to whoever reaches the port.
    metrics_authentication: bool = Field(True, alias="metricsAuthentication")
    # Tests inject time: when set and the file exists, its RFC 3339 content is "now".
    clock_file: str | None = Field(None, alias="clockFile")
    # Trusted license signing keys: key id -> Ed25519 public key (SubjectPublicKeyInfo PEM).
    # Several for rotation. Empty: licenses need no signature (DESIGN "Licenses from a vendor").
    signing_keys: dict[str, str] = Field(default_factory=dict, alias="signingKeys")

    @field_validator("signing_keys")
    @classmethod
    def _readable_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        from entitle.adapters.licensing.keys import KeyFileError, public_from_pem

        for key_id, pem in keys.items():
            try:
                public_from_pem(pem)
            except KeyFileError as exc:
                raise ValueError(f"signingKeys.{key_id}: {exc}") from None
        return keys

    def public_keys(self) -> dict:
        from entitle.adapters.licensing.keys import public_from_pem

        return {key_id: public_from_pem(pem) for key_id, pem in self.signing_keys.items()}

    @field_validator("sinks")
    @classmethod
    def _distinct_sink_names(cls, sinks: list[dict]) -> list[dict]:
        from entitle.adapters.metering.sinks.base import default_name

        seen: dict[str, int] = {}
        for index, spec in enumerate(sinks):
            if not isinstance(spec, dict) or spec.get("type") not in ("jsonl", "http", "kafka"):
                raise ValueError(f"sinks[{index}]: type must be jsonl, http or kafka")
            name = spec.get("name") or default_name(spec)
            if name in seen:
                raise ValueError(f"sinks[{seen[name]}] and sinks[{index}] are both named {name!r}: give each "
                                 "sink its own name (the key of its position in the ledger)")
            seen[name] = index
        return sinks

    @field_validator("ledger")
    @classmethod
    def _one_ledger(cls, ledger: LedgerConfig) -> LedgerConfig:
        if ledger.postgres and ledger.postgres_file:
            raise ValueError("set either postgres or postgresFile, not both")
        if ledger.path and (ledger.postgres or ledger.postgres_file):
            raise ValueError("set either path (SQLite) or postgres, not both")
        return ledger

    def open_ledger(self) -> Any:
        from entitle.adapters.metering.backends import open_ledger

        dsn = self.ledger.dsn()
        return open_ledger(self.ledger.path or self.ledger_path, postgres=dsn)

    def ledger_name(self) -> str:
        """The ledger for logs: the SQLite path, or the PostgreSQL server without credentials."""
        if self.ledger.postgres or self.ledger.postgres_file:
            from entitle.adapters.metering.postgres import _redacted

            return "postgres " + _redacted(self.ledger.dsn() or "")
        return self.ledger.path or self.ledger_path

    def instance_table(self) -> InstanceTable:
        return InstanceTable(self.normalization)

    def now(self) -> datetime:
        if self.clock_file and Path(self.clock_file).exists():
            text = Path(self.clock_file).read_text().strip()
            if text:
                return datetime.fromisoformat(text.replace("Z", "+00:00"))
        return datetime.now(timezone.utc)


class ConfigError(ValueError):
    """The operator's configuration file cannot be read or is not valid; the message says where."""


def load(path: str | None) -> OperatorConfig:
    if not path:
        return OperatorConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return OperatorConfig.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_error(exc)}") from None
