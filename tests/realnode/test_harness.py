"""The real-node harness itself: `entitle dev up --node` beside the suite's own node (two
harnesses on one machine must not collide), everything non-loopback inside the node's network
namespace, and `entitle dev down --node` leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.realnode.conftest import Node


def _host_addresses() -> set[str]:
    out = subprocess.run(["ip", "-json", "addr"], capture_output=True, text=True, check=True)
    return {a["local"] for link in json.loads(out.stdout) for a in link.get("addr_info", [])}


def _host_state() -> dict:
    mounts = Path("/proc/self/mountinfo").read_text()
    return {
        "addresses": _host_addresses(),
        "routes": subprocess.run(["ip", "route"], capture_output=True, text=True).stdout,
        "iptables": "".join(subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
                            for table in ("filter", "nat", "mangle")),
        "netns": set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set(),
        "mounts": {line.split()[4] for line in mounts.splitlines()},
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def test_dev_up_node_beside_another_node_and_down_leaves_nothing_behind(node: Node, tmp_path):
    before = _host_state()
    directory = tmp_path / "second-node"
    up = subprocess.run([sys.executable, "-m", "entitle.cli", "dev", "up", "--node", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = up.stdout.strip().splitlines()[-1]
        kubectl = str(Path(node.cluster.bin("kubectl")))
        nodes = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "json"],
                               capture_output=True, text=True, timeout=60)
        status = json.loads(nodes.stdout)["items"][0]["status"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        # Both nodes run at once: the suite's is still serving.
        assert node.ready_replicas() == ["entitle-0", "entitle-1"]
        # The host's network namespace gained nothing but the two node namespaces' names.
        during = _host_state()
        assert during["addresses"] == before["addresses"]
        assert during["routes"] == before["routes"] and during["ip_forward"] == before["ip_forward"]
        assert during["iptables"] == before["iptables"], "no iptables rule in the host's namespace"
    finally:
        down = subprocess.run([sys.executable, "-m", "entitle.cli", "dev", "down", "--node", "--dir", str(directory)],
                              capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    after = _host_state()
    assert after["netns"] == before["netns"]
    assert not {m for m in after["mounts"] - before["mounts"]}, "mounts left behind"
    assert not directory.exists()
    assert after["addresses"] == before["addresses"] and after["iptables"] == before["iptables"]
    leftovers = subprocess.run(["pgrep", "-af", str(directory)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), leftovers
