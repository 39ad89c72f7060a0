"""Helpers shared by the etcd subnet manager's integration tests (test_daemon_etcd*.py)."""
from __future__ import annotations

import ipaddress
import threading
from typing import Any, List, Optional

import pytest

from cni_flannel.daemon.etcd import EtcdOptions, EtcdSubnetManager
from cni_flannel.daemon.lease import LeaseAttrs
from cni_flannel.daemon.manager import Event, Snapshot
from tests.harness.etcd import EtcdServer

PREFIX = "/coreos.com/network"
CONFIG = PREFIX + "/config"
SUBNETS = PREFIX + "/subnets/"
NET = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


def attrs(n: int, mac: str = "") -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(f"192.0.2.{n}"), backend_type="vxlan",
                      backend_data={"VNI": 1, "VtepMAC": mac or f"aa:bb:cc:dd:ee:{n:02x}"})


def manager(server: EtcdServer, **opts: Any) -> EtcdSubnetManager:
    opts.setdefault("config_attempts", 1)
    m = EtcdSubnetManager(EtcdOptions(**server.options(**opts)))
    managers.append(m)
    return m


managers: List[EtcdSubnetManager] = []


@pytest.fixture(autouse=True)
def close_managers():
    yield
    while managers:
        managers.pop().close()


class Watch:
    """watch_leases in a thread, collecting what it delivers; stopped at the end of the test."""

    def __init__(self, m: EtcdSubnetManager, sink_gate: Optional[threading.Event] = None) -> None:
        self.batches: List[Any] = []
        self.gate = sink_gate
        self.stop = threading.Event()
        self.thread = threading.Thread(target=m.watch_leases, args=(self.sink, self.stop), daemon=True)
        self.thread.start()

    def sink(self, batch: Any) -> None:
        self.batches.append(batch)
        if self.gate is not None:
            assert self.gate.wait(30), "test never opened the sink gate"

    def snapshots(self) -> List[Snapshot]:
        return [b for b in self.batches if isinstance(b, Snapshot)]

    def events(self) -> List[Event]:
        return [e for b in self.batches if not isinstance(b, Snapshot) for e in b]

    def saw(self, kind: str, subnet: str) -> bool:
        return any(e.type == kind and str(e.lease.subnet) == subnet for e in self.events())

    def close(self) -> None:
        self.stop.set()
        if self.gate is not None:
            self.gate.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "watch_leases did not return after stop"


@pytest.fixture
def watches():
    made: List[Watch] = []
    yield lambda m, gate=None: made.append(Watch(m, gate)) or made[-1]
    for w in made:
        w.close()


def subnet_keys(server: EtcdServer) -> List[str]:
    return [kv["key"][len(SUBNETS):] for kv in server.get_prefix(SUBNETS)]
