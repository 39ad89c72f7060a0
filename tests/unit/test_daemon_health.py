"""/healthz, /readyz and /metrics over a real socket on 127.0.0.1 (no root needed)."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from cni_flannel.daemon.errors import ConfigError
from cni_flannel.daemon.health import Status, serve
from cni_flannel.daemon.metrics import Metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoints():
    status, metrics, port = Status(), Metrics(), free_port()
    server = serve("127.0.0.1", port, status, metrics.registry)
    try:
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 503
        status.ready = True
        assert get(port, "/readyz") == (200, "ok\n")
        metrics.peers.set(3)
        metrics.reconcile_actions.labels(kind="route", action="add").inc()
        code, text = get(port, "/metrics")
        assert code == 200 and "flannel_peers 3.0" in text
        assert 'flannel_reconcile_actions_total{action="add",kind="route"} 1.0' in text
        assert "flannel_lease_expiry_timestamp_seconds" in text
        assert get(port, "/nope")[0] == 404
    finally:
        server.shutdown()


def test_port_zero_is_off_and_a_taken_port_is_a_clear_error():
    assert serve("127.0.0.1", 0, Status(), Metrics().registry) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot serve health checks on 127.0.0.1"):
            serve("127.0.0.1", s.getsockname()[1], Status(), Metrics().registry)
