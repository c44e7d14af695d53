"""Webhook worker processes (``webhook.workers``): several processes decide on one port, share
capacity like replicas do, and never outlive their operator -- stopped or SIGKILLed."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Operator, wait_for
from tests.e2e.helpers import apply, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def _workers_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` and that run as a webhook worker."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat[1]) == pid and b"--webhook-worker" in cmdline:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_two_workers_decide_within_the_cap_and_die_with_the_operator(cluster, tmp_path, sig):
    operator = Operator(cluster, tmp_path, webhook={"workers": 2}).start()
    try:
        workers = wait_for(lambda: _workers_of(operator.proc.pid), timeout=30, message="a worker process")
        tenant, ns = unique("wk"), unique("ns")
        apply(cluster, namespace(ns, tenant), license(unique("l"), tenant, instances={"max": 12}))

        def create(i):
            return apply(cluster, workload(f"w{i}", ns, replicas=1), check=False).returncode == 0

        wait_for(lambda: create("probe"), timeout=30, message="admissions once the license is seen")
        with ThreadPoolExecutor(8) as pool:
            admitted = sum(pool.map(create, range(30)))
        assert 1 + admitted == 12, f"{1 + admitted} admitted against a cap of 12"
    finally:
        operator.stop(sig)
    wait_for(lambda: not any(_alive(w) for w in workers), timeout=30, message="the workers to exit with the operator")
