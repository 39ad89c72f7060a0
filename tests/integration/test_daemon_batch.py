"""Batched netlink changes (cni_flannel/net/batch.py) against the real kernel: a vxlan backend
with 40 peers reconciles in batches, deletes in batches, reports a failing entry by peer and
skips that peer's route, and what it leaves is exactly what one-request-at-a-time leaves."""
from __future__ import annotations

import json

import pytest

from cni_flannel.daemon.backends import apply as apply_mod
from cni_flannel.daemon.backends.base import PeerError
from cni_flannel.daemon.backends.vxlan import VxlanBackend
from cni_flannel.daemon.lease import Lease
from cni_flannel.daemon.manager import Event
from cni_flannel.net.handle import Handle
from tests.harness.netns import run, temp_netns


def peer(i: int, mac: str = "") -> Lease:
    return Lease.from_dict({"Subnet": f"10.{1 + i // 256}.{i % 256}.0/24", "PublicIP": f"198.19.0.{1 + i}",
                            "BackendData": {"VNI": 1, "VtepMAC": mac or f"0a:00:00:00:00:{i:02x}"}})


def state(ns: str):
    def j(*argv):
        return json.loads(run(["ip", "-n", ns, "-j", *argv]).stdout or "[]")
    neigh = sorted((n["dst"], n["lladdr"]) for n in j("neigh", "show", "dev", "flannel.1", "nud", "permanent"))
    fdb = sorted((f["mac"], f.get("dst")) for f in json.loads(
        run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", "flannel.1"]).stdout) if f.get("dst"))
    routes = sorted((r["dst"], r.get("gateway"), tuple(r.get("flags", [])))
                    for r in j("route", "show", "dev", "flannel.1") if r.get("protocol") != "kernel")
    return neigh, fdb, routes


@pytest.fixture
def ns():
    with temp_netns("batch") as name:
        run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run(["ip", "-n", name, "addr", "add", "198.18.0.1/15", "dev", "eth0"])
        run(["ip", "-n", name, "link", "set", "eth0", "up"])
        yield name


def backend(ns: str) -> VxlanBackend:
    be = VxlanBackend({"Type": "vxlan"}, networks=["10.0.0.0/8"], handle=Handle(f"/run/netns/{ns}"))
    be.setup(Lease.from_dict({"Subnet": "10.0.1.0/24", "PublicIP": "198.18.0.1"}))
    return be


def test_batches_leave_what_single_requests_leave(ns, monkeypatch):
    peers = [peer(i) for i in range(40)]
    be = backend(ns)
    calls = []
    real = apply_mod._batched
    monkeypatch.setattr(apply_mod, "_batched", lambda *a: calls.append(1) or real(*a))
    plan = be.reconcile(peers)
    assert calls and len(plan.add) == 120
    batched = state(ns)
    assert len(batched[0]) == len(batched[1]) == len(batched[2]) == 40
    assert ("10.1.5.0/24", "10.1.5.0", ("onlink",)) in batched[2]
    assert be.reconcile().empty  # what was written reads back as wanted
    be.handle([Event("removed", p) for p in peers[:30]])
    assert len(calls) == 2 and [len(x) for x in state(ns)] == [10, 10, 10]
    # The same end state one request at a time.
    monkeypatch.setattr(apply_mod, "BATCH_FROM", 10 ** 6)
    be.handle([Event("added", p) for p in peers[:30]])
    assert len(calls) == 2 and state(ns) == batched


def test_a_failing_entry_names_its_peer_and_skips_its_route(ns):
    be = backend(ns)
    bad = peer(99, mac="01:00:5e:00:00:01")  # a multicast MAC: the kernel refuses the FDB entry
    with pytest.raises(PeerError) as info:
        be.reconcile([peer(i) for i in range(20)] + [bad])
    assert info.value.peers == [bad.name]
    routes = [r[0] for r in state(ns)[2]]
    assert len(routes) == 20 and "10.1.99.0/24" not in routes
