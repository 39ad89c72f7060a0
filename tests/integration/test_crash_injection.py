"""Crash injection, short (tests/reliability/crashes.py; `make reliability` runs >= 1,000 crashes):
SIGKILLs at the named crash points and at random delays, through the self-contained path and the
agent hand-off, then DEL or GC as a runtime would — and nothing may be left on the node.
(Debian's Go plugins run the same rounds in `make reliability`, as a measurement: they leak.)"""
from __future__ import annotations

import os
import random

import pytest

from tests.conftest import agent_requests, forbid_fallback, start_agent
from tests.reliability.crashes import CrashLab

ROUNDS = int(os.environ.get("CNI_CRASH_ROUNDS", "2"))
PODS = 5


@pytest.mark.parametrize("path", ["self-contained", "agent"])
def test_crashes_leave_nothing(make_node, path: str) -> None:
    node = make_node()
    agent = start_agent(node) if path == "agent" else None
    if agent:  # the agent must do the work: no silent self-contained fallback
        forbid_fallback(node)
    lab = CrashLab(node, kind="flannel", agent_pid=agent.pid if agent else None, rng=random.Random())
    for number in range(ROUNDS):
        lab.round(PODS, number)
    counts = lab.counts
    assert counts["crashes"] >= ROUNDS, counts  # the kills happened
    assert not lab.leftover_rounds, lab.leftover_rounds
    assert counts["del_failures"] == 0 and counts["gc_failures"] == 0 and counts["tracebacks"] == 0, counts
    assert counts["hangs"] == 0, counts
    if agent:  # the hand-off path really served (no silent fallback to the self-contained one)
        assert len([r for r in agent_requests(node) if "flannel ADD crash-" in r]) >= ROUNDS, agent_requests(node)


def test_reboot_then_one_gc_leaves_nothing(node) -> None:
    """Namespaces gone, state files left (a reboot): one GC with the valid list cleans the node."""
    lab = CrashLab(node, kind="flannel")
    assert lab.reboot_round(4) == 0, lab.leftover_rounds
    assert lab.counts["gc_failures"] == 0 and lab.counts["add_failures"] == 0, lab.counts


def test_interrupted_saves_are_removed_by_del_and_gc(node) -> None:
    """A flannel ADD killed between writing its saved config's temp file and the rename leaves
    .<id>.tmp.<pid> (found by the 1,000-crash run): the container's DEL removes it, and so does
    a GC that does not name the container."""
    lab = CrashLab(node, kind="flannel")
    for name in (".ghost.tmp.7", ".gone.tmp.8"):
        node.write_file(f"/var/lib/cni/flannel/{name}", '{"type":')
    assert lab.leftovers()["saved_configs"] == [".ghost.tmp.7", ".gone.tmp.8"]
    assert lab._chain_del("ghost", "")
    assert lab.leftovers()["saved_configs"] == [".gone.tmp.8"]
    lab.gc([("keep", "eth0")])
    assert lab.counts["gc_failures"] == 0, lab.counts
    assert not any(lab.leftovers().values()), lab.leftovers()
