"""Leader election on a coordination.k8s.io Lease: one replica runs the controller duties
(status, events, sinks) while every replica keeps watching and serving the webhook.

Why not Kopf peering: a paused (standby) Kopf operator stops its watch streams, and a webhook
replica deciding from a frozen picture would count stale usage. Here every replica stays live.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubernetes import client
from kubernetes.client.rest import ApiException


class LeaseElector:
    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, identity: str,
                 duration: timedelta = timedelta(seconds=15)) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity, self.duration = namespace, name, identity, duration

    def _body(self, now: datetime, transitions: int, acquired: datetime, rv: str | None) -> dict:
        body = {"metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration.total_seconds()),
                         "acquireTime": acquired.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                         "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "leaseTransitions": transitions}}
        if rv:
            body["metadata"]["resourceVersion"] = rv
        return body

    def try_acquire_or_renew(self) -> bool:
        """True while this identity holds the lease. Compare-and-swap on resourceVersion."""
        now = datetime.now(timezone.utc)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(self.namespace, self._body(now, 0, now, None))
                return True
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time
        expired = renewed is None or now > renewed + timedelta(seconds=spec.lease_duration_seconds or 15)
        if holder != self.identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        acquired = spec.acquire_time if holder == self.identity and spec.acquire_time else now
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace,
                                              self._body(now, transitions, acquired, lease.metadata.resource_version))
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.renew_time = None
                lease.spec.holder_identity = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException:
            pass
