"""After a daemon crash while peers left, start-up reconcile leaves 0 stale entries — one round
per backend of tests/reliability/daemon_restart.py (`make reliability` runs more): n1 SIGKILLed,
peers deleted, expired and joined while it is down, the real node n3 gone too, n1 restarted."""
from __future__ import annotations

import pytest

from tests.reliability.daemon_restart import BACKENDS, rounds


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_after_peers_left_leaves_nothing_stale(backend: str) -> None:
    row = rounds(backend, 1)
    assert row["departed"] == 3, row  # one deleted, one expired, the real node n3
    assert row["stale_total"] == 0 and row["tracebacks"] == 0 and row["not_back"] == 0, row
