"""Test doubles for the daemon's main loop (no root): an in-memory subnet manager, a masquerade
manager that records calls, a preflight probe.  Real etcd is exercised by the integration tests."""
from __future__ import annotations

import ipaddress
import json
import threading
import time
from typing import Any, List, Optional

from cni_flannel.daemon import netconf
from cni_flannel.daemon.errors import LeaseRevoked, OutOfSubnets, StoreUnavailable
from cni_flannel.daemon.lease import Lease, LeaseAttrs
from cni_flannel.daemon.manager import Snapshot, SubnetManager
from cni_flannel.daemon.preflight import Probe

CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


def netconf_of(**kw: Any) -> netconf.NetConf:
    """net-conf.json with ``kw`` over a vxlan 10.244.0.0/16 default, parsed."""
    kw.setdefault("Network", "10.244.0.0/16")
    kw.setdefault("Backend", {"Type": "vxlan"})
    return netconf.parse(json.dumps(kw))


class MemoryManager(SubnetManager):
    """Leases in a dict; acquire hands out 10.244.<n>.0/24 from n=1 (re-using one whose PublicIP
    is ours); the watch sends a Snapshot, then whatever ``push`` is given."""

    name = "memory"

    def __init__(self, conf: str = CONF, ttl: Optional[float] = None, unavailable: int = 0,
                 peers: List[Lease] = ()) -> None:
        self.conf_text = conf
        self.ttl = ttl
        self.unavailable = unavailable      # first N calls raise StoreUnavailable
        self.leases = {p.key: p for p in peers}
        self.batches: List[Any] = []
        self.cond = threading.Condition()
        self.renewals = 0
        self.fail_renew = False
        self.closed = False
        self.calls = 0

    def _maybe_down(self) -> None:
        self.calls += 1
        if self.calls <= self.unavailable:
            raise StoreUnavailable("etcd at http://192.0.2.1:2379: connection refused")

    def network_config(self) -> netconf.NetConf:
        self._maybe_down()
        return netconf.parse(self.conf_text, "<prefix>/config")

    def acquire_lease(self, attrs: LeaseAttrs, previous: Optional[Lease] = None) -> Lease:
        self._maybe_down()
        exp = time.time() + self.ttl if self.ttl else None
        for key, lease in self.leases.items():
            if lease.attrs.public_ip == attrs.public_ip:
                self.leases[key] = Lease(lease.subnet, None, attrs, exp)
                return self.leases[key]
        for n in range(1, 255):
            net = ipaddress.ip_network(f"10.244.{n}.0/24")
            lease = Lease(net, None, attrs, exp)
            if lease.key not in self.leases:
                self.leases[lease.key] = lease
                return lease
        raise OutOfSubnets("out of subnets")

    def renew_lease(self, lease: Lease) -> Lease:
        self.renewals += 1
        if self.fail_renew:
            raise StoreUnavailable("renew: etcd unreachable")
        if lease.key not in self.leases:
            raise LeaseRevoked("Lease has been revoked")
        renewed = Lease(lease.subnet, lease.ipv6_subnet, lease.attrs, time.time() + (self.ttl or 0))
        self.leases[lease.key] = renewed
        return renewed

    def push(self, batch: Any) -> None:
        with self.cond:
            self.batches.append(batch)
            self.cond.notify_all()

    def watch_leases(self, sink: Any, stop: threading.Event) -> None:
        sink(Snapshot(list(self.leases.values())))
        while not stop.is_set():
            with self.cond:
                self.cond.wait(0.05)
                batches, self.batches = self.batches, []
            for b in batches:
                sink(b)

    def close(self) -> None:
        self.closed = True


class RecordingMasq:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.calls: List[str] = []
        self.drift: List[str] = []

    def reconcile(self) -> None:
        self.calls.append("reconcile")

    def check(self) -> List[str]:
        self.calls.append("check")
        return list(self.drift)

    def apply(self) -> None:
        self.calls.append("apply")
        self.drift = []


def probe(bridge_nf: bool = True, forward: str = "1", kernel: bool = True) -> Probe:
    written: List[str] = []

    def sysctl_set(key: str) -> None:
        written.append(key)

    p = Probe(exists=lambda path: bridge_nf, sysctl_get=lambda key: forward, sysctl_set=sysctl_set,
              kernel_has=lambda what: kernel)
    p.written = written  # type: ignore[attr-defined]
    return p
