"""Webhook worker processes: admission on every core.

One Python process decides ~3,000 reviews/s (the GIL). With ``webhook.workers: N`` the operator
process starts N-1 more processes that serve the same port (``SO_REUSEPORT``: the kernel spreads
connections over them). Each worker keeps its own picture from its own watches and decides
exactly like a replica -- capacity is shared through the hold object's holds and escrow grants,
which is what makes several replicas safe already -- but records nothing, writes no status and
never leads: those stay with the operator process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("entitle.workers")


def worker_config(cfg: Any, certfile: str, keyfile: str, directory: Path) -> Path:
    """The operator's configuration, as a worker runs it: the operator's serving certificate
    (re-read when it changes), no registration, no metrics port, no ledger."""
    data = cfg.model_dump(by_alias=True, exclude_none=True, mode="json")
    hook = data["webhook"]
    hook.pop("generated", None)
    hook.pop("registerURL", None)
    hook.update({"certFile": certfile, "keyFile": keyfile, "workers": 1})
    data.update({"metricsPort": None, "ledgerPath": ":memory:", "ledger": {"path": ":memory:"},
                 "ofrep": {}, "privacy": {}})
    path = directory / "worker.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Workers:
    """Starts, watches over and stops the worker processes."""

    def __init__(self, count: int, config: Path) -> None:
        self.count, self.config = count, config
        self.processes: list[subprocess.Popen | None] = [None] * count
        self.stopping = False

    def _start(self, index: int) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "ENTITLE_LIVENESS"}   # one liveness port: the operator's
        env["ENTITLE_WORKER_INDEX"] = str(index + 1)
        env["ENTITLE_PARENT_PID"] = str(os.getpid())
        return subprocess.Popen([sys.executable, "-m", "entitle.cli", "run", "--config", str(self.config),
                                 "--webhook-worker"], env=env)

    async def supervise(self) -> None:
        while not self.stopping:
            for index, proc in enumerate(self.processes):
                if proc is None or proc.poll() is not None:
                    if proc is not None:
                        log.warning("webhook worker %d exited with %s; restarting", index + 1, proc.returncode)
                    self.processes[index] = self._start(index)
            await asyncio.sleep(2)

    def stop(self, timeout: float = 20) -> None:
        # First: no restarts. A worker orphaned by a restart racing the shutdown once kept
        # serving the port after its operator was gone (found by the admission benchmark).
        self.stopping = True
        for proc in self.processes:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            if proc is not None:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()


def bind_to_parent() -> None:
    """In a worker, first thing: SIGTERM when the operator process dies, however it dies
    (SIGKILL, OOM), so a worker never outlives its operator; and if the operator is already
    gone, exit now. Linux (prctl PR_SET_PDEATHSIG); elsewhere only the second half."""
    import signal

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    parent = os.environ.get("ENTITLE_PARENT_PID")
    if parent and parent.isdigit() and os.getppid() != int(parent):
        log.error("webhook worker: its operator process %s is gone; exiting", parent)
        raise SystemExit(0)
