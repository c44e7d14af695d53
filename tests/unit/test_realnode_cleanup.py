"""A real node whose start fails half-way removes what it made (no etcd, apiserver or
containerd left running behind a failed set-up), and the caller sees the step's own error."""

from __future__ import annotations

import pytest

from entitle.devenv import node as nodemod
from entitle.devenv.node import RealCluster


class StepFailed(Exception):
    """The failure a start-up step raises in these tests."""


def _cluster(tmp_path, monkeypatch, stop_fails: bool = False):
    made, stopped = [], []
    monkeypatch.setattr(nodemod, "node_assets_dir", lambda: tmp_path / "assets")
    cluster = RealCluster.create(tmp_path / "node")
    monkeypatch.setattr(cluster, "_network", lambda: made.append("network"), raising=False)
    monkeypatch.setattr(cluster, "_pki", lambda: made.append("pki") or object(), raising=False)
    monkeypatch.setattr(cluster, "_control_plane", lambda pki, timeout: made.append("control plane"), raising=False)

    def containerd(timeout):
        raise StepFailed("containerd did not start")

    def stop(keep_logs=False):
        stopped.append(keep_logs)
        if stop_fails:
            raise RuntimeError("umount failed")

    monkeypatch.setattr(cluster, "_containerd", containerd, raising=False)
    monkeypatch.setattr(cluster, "stop", stop, raising=False)
    return cluster, made, stopped


def test_a_failed_start_stops_what_it_started_and_keeps_the_logs(tmp_path, monkeypatch):
    cluster, made, stopped = _cluster(tmp_path, monkeypatch)
    with pytest.raises(StepFailed, match="containerd did not start"):
        cluster.start()
    assert made == ["network", "pki", "control plane"] and stopped == [True]


def test_a_failing_clean_up_does_not_hide_the_start_error(tmp_path, monkeypatch, capsys):
    cluster, _, stopped = _cluster(tmp_path, monkeypatch, stop_fails=True)
    with pytest.raises(StepFailed):
        cluster.start()
    assert stopped == [True] and "umount failed" in capsys.readouterr().err
