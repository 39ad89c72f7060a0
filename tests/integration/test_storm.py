"""The storm, short (tests/reliability/storm.py; `make reliability --part storm` runs 110 pods x 10
rounds on three firewall backends, ours and Debian's Go side by side): one round of pods through
libcni and go-cni at once, each with a hostPort, while kube-proxy rewrites its chains and flanneld's
masquerade resyncs — and the storm's own checks are shown to catch a forgotten hostPort and a DEL
that never came."""
from __future__ import annotations

import os
import random

import pytest

from tests.reliability.storm import bad, problems, storm

PODS = int(os.environ.get("CNI_STORM_PODS", "30"))
SELF_PODS = max(2, PODS // 3)


def _clean(row: dict, pods: int = PODS) -> None:
    assert not problems(row), problems(row)
    assert row["adds"] == 2 * pods and row["dels"] == 2 * pods, row  # every pod went up and down twice
    assert row["kube_proxy"]["writes"] > 1 and row["masq"]["resyncs"] > 1, row  # the writers really ran


def test_storm_agent() -> None:
    row = storm("agent", "iptables-nft", rounds=1, pods=PODS, seed=random.randrange(1 << 30))
    _clean(row)
    assert row["agent_served"] >= 4 * PODS, row  # flannel + portmap per ADD/DEL went through the agent


def test_storm_self_contained() -> None:
    """The frozen plugins doing the work themselves (slower: fewer pods), on iptables-legacy."""
    row = storm("ours", "iptables-legacy", rounds=1, pods=SELF_PODS, seed=random.randrange(1 << 30))
    _clean(row, SELF_PODS)


@pytest.mark.parametrize("fault,counter", [("skip-portmap", "lost_hostports"), ("skip-del", "end_leftovers"),
                                           ("portmap-backend", "not_in_backend")])
def test_storm_catches_a_fault(fault: str, counter: str) -> None:
    """A check that cannot observe a failure is a defect: a pod without its hostPort mapping, a pod
    whose DEL never came, and hostPorts written to another backend than the row names (portmap left
    on its default on the nftables row) must show up in the counts."""
    row = storm("agent", "nftables", rounds=1, pods=4, seed=1, break_=fault)
    assert row[counter] >= 1, row
    assert bad(row) > 0, row
