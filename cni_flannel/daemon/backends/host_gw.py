"""The host-gw backend (flannel pkg/backend/hostgw + route_network.go), IPv4 and IPv6 alike.

Per peer and family: ``<peer subnet> via <peer public IP> dev <ext>``.  The peer must be on
a network the external interface is directly connected to — anything else would need a
router that knows the pod subnets, so such a peer is refused with an error naming it (upstream
adds the route and lets the kernel fail or, worse, succeed through a default route).  The MTU
is the underlay's: nothing is encapsulated.

Reconcile owns the routes through the external interface inside the cluster Network: the
ones belonging to no current peer are removed (flannel#2554).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from cni_flannel.daemon.backends.apply import Scope
from cni_flannel.daemon.backends.base import Backend, Refusal
from cni_flannel.daemon.errors import BackendError
from cni_flannel.daemon.lease import Lease
from cni_flannel.daemon.backends.plan import Entry, RouteEntry, State, directly_connected


class HostGwBackend(Backend):
    type = "host-gw"

    def _setup_devices(self) -> Dict[str, Any]:
        assert self.node is not None and self.ext is not None
        ours = {a.address for a in self.h.addresses(self.ext.index) if a.scope == 0}
        for side in self.node.sides():
            # Peers route to our public IP, so it must be ours, not a NAT's (as upstream).
            if side.public_ip not in ours:
                raise BackendError(
                    f"host-gw: the node's public IP {side.public_ip} is not an address of "
                    f"{self.ext.name!r} (behind NAT?); host-gw needs nodes on one L2 network")
        return {"BackendType": self.type}

    @property
    def mtu(self) -> int:
        return self.underlay_mtu

    def scope(self) -> Scope:
        assert self.ext is not None
        return Scope(ext=(self.ext.name, self.ext.index), networks=self._owned_networks())

    def desired(self, peers: Iterable[Lease]) -> Tuple[State, List[Refusal]]:
        assert self.node is not None and self.ext is not None
        families = {s.family for s in self.node.sides()}
        entries: List[Entry] = []
        refused: List[Refusal] = []
        for lease in peers:
            for side in lease.sides():
                if side.family not in families:
                    continue
                if not side.public_ip:
                    refused.append((lease, f"no public IPv{side.family} address in its lease"))
                elif not directly_connected(side.public_ip, self.ext_cidrs):
                    refused.append((lease, f"{side.public_ip} is not on a network directly "
                                           f"connected to {self.ext.name} "
                                           f"({', '.join(self.ext_cidrs) or 'no addresses'}); "
                                           "host-gw needs every node on one L2 network (use vxlan)"))
                else:
                    entries.append(RouteEntry(str(side.subnet), side.public_ip, self.ext.name,
                                              peer=lease.name))
        return State.of(entries), refused
