"""The vxlan backend (flannel pkg/backend/vxlan), one code path for IPv4 and IPv6.

Per address family of the node's lease, a VTEP ``flannel.<VNI>`` / ``flannel-v6.<VNI>``:
nolearning, dstport 8472, local = the node's public IP, MTU = underlay − 50 (IPv4 underlay) /
− 70 (IPv6: upstream uses 50 for both, flannel#1781), address ``<subnet .0>/32`` (/128), up.
No L2/L3-miss handling: per peer we add, before its route,

    neighbour  <peer subnet .0> lladdr <peer VtepMAC> dev flannel.1 nud permanent
    FDB        <peer VtepMAC> dst <peer public IP> dev flannel.1 self permanent
    route      <peer subnet> via <peer subnet .0> dev flannel.1 onlink

or, with DirectRouting and a peer on a directly connected network, only the host-gw route
``<peer subnet> via <peer public IP> dev <ext>``.

Beyond upstream: a device that exists with other attributes, or that disappears while we
run, is recreated with the same VtepMAC and *every* current peer re-added (``reconcile``);
stale entries on our devices are removed at startup (flannel#2554).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from cni_flannel.daemon.backends.apply import Scope
from cni_flannel.daemon.backends.base import Backend, Refusal
from cni_flannel.daemon.errors import BackendError
from cni_flannel.daemon.lease import Lease, LeaseAttrs, Side, vtep_mac
from cni_flannel.daemon.netconf import vtep_device_name
from cni_flannel.daemon.backends.plan import (Entry, Fdb, Neigh, RouteEntry, State,
                                              directly_connected)
from cni_flannel.net.errors import NotFound
from cni_flannel.net.types import Link

log = logging.getLogger("cni_flannel.daemon.backends")

OVERHEAD = {4: 50, 6: 70}  # outer IP (20/40) + UDP 8 + VXLAN 8 + inner Ethernet 14


def device_name(vni: int, family: int) -> str:
    return vtep_device_name(vni, family)


@dataclass(frozen=True)
class VtepSpec:
    name: str
    family: int
    vni: int
    local: str
    port: int
    learning: bool
    gbp: bool
    link: int                   # ifindex of the external interface
    mtu: int
    address: str                # "10.244.1.0/32"


def vtep_spec(vni: int, port: int, learning: bool, gbp: bool, side: Side, ext_index: int,
              underlay_mtu: int) -> VtepSpec:
    if not side.public_ip:
        raise BackendError(f"the node's IPv{side.family} subnet {side.subnet} has no public "
                           f"IPv{side.family} address for the VXLAN device to send from")
    return VtepSpec(name=device_name(vni, side.family), family=side.family, vni=vni,
                    local=side.public_ip, port=port, learning=learning, gbp=gbp, link=ext_index,
                    mtu=underlay_mtu - OVERHEAD[side.family],
                    address=f"{side.subnet.network_address}/{side.subnet.max_prefixlen}")


def incompatible(spec: VtepSpec, link: Link) -> str:
    """Why the existing ``link`` cannot serve as ``spec`` ('' when it can).  MTU and address
    are fixed in place; these need a new device."""
    vx = link.vxlan
    if link.kind != "vxlan" or vx is None:
        return f"kind {link.kind or 'plain'!r}, not vxlan"
    checks = [("VNI", vx.vni, spec.vni), ("local", vx.local, spec.local),
              ("dstport", vx.port, spec.port), ("learning", vx.learning, spec.learning),
              ("gbp", vx.gbp, spec.gbp)]
    if vx.link and spec.link:
        checks.append(("dev (ifindex)", vx.link, spec.link))
    return ", ".join(f"{what} {have} (want {want})" for what, have, want in checks if have != want)


def random_mac() -> str:
    """A locally administered unicast MAC, set explicitly at creation so that udev's
    MACAddressPolicy cannot change the VtepMAC peers already know."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def peer_entries(side: Side, dev: str, peer: str, direct_via: str = "") -> Tuple[List[Entry], str]:
    """The entries for one family of one peer, or ([], why it is refused)."""
    gw = str(side.subnet.network_address)
    if not side.public_ip:
        return [], f"no public IPv{side.family} address in its lease"
    if direct_via:
        return [RouteEntry(str(side.subnet), side.public_ip, direct_via, peer=peer)], ""
    if not side.vtep_mac:
        return [], f"no VtepMAC in its IPv{side.family} backend data"
    mac = side.vtep_mac.lower()
    return [Neigh(dev, gw, mac, peer=peer), Fdb(dev, mac, side.public_ip, peer=peer),
            RouteEntry(str(side.subnet), gw, dev, onlink=True, peer=peer)], ""


class VxlanBackend(Backend):
    type = "vxlan"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.specs: Dict[int, VtepSpec] = {}   # per family
        self.vteps: Dict[int, Link] = {}
        self.macs: Dict[int, str] = {}         # the VtepMAC per family our lease advertises

    def lease_attrs(self, public_ip: Any = None, public_ipv6: Any = None,
                    previous: Optional[LeaseAttrs] = None) -> LeaseAttrs:
        """Lease with the VtepMAC of the device that already exists (a restart: peers keep
        theirs pointing at it), else the one ``previous`` (the store's record) names, else a
        fresh one; setup() then creates the device with it."""
        data: Dict[int, Any] = {}
        for family, ip in ((4, public_ip), (6, public_ipv6)):
            if ip is None:
                continue
            link = self.h.find_link(device_name(self.config.vni, family))
            old = None
            if previous is not None:
                old = vtep_mac(previous.backend_data if family == 4 else previous.backend_v6_data)
            mac = link.mac if link is not None and link.kind == "vxlan" and link.mac else (old or random_mac())
            self.macs[family] = mac
            data[family] = {"VNI": self.config.vni, "VtepMAC": mac}
        return LeaseAttrs(public_ip=public_ip, public_ipv6=public_ipv6, backend_type=self.type,
                          backend_data=data.get(4), backend_v6_data=data.get(6))

    # --- devices ---------------------------------------------------------------------
    def _setup_devices(self) -> Dict[str, Any]:
        assert self.node is not None and self.ext is not None
        c = self.config
        self.specs = {s.family: vtep_spec(c.vni, c.effective_port, c.learning, c.gbp, s, self.ext.index,
                                          self.underlay_mtu) for s in self.node.sides()}
        self._ensure_devices()
        out: Dict[str, Any] = {"BackendType": self.type}
        for family, link in self.vteps.items():
            key = "BackendData" if family == 4 else "BackendV6Data"
            out[key] = {"VNI": c.vni, "VtepMAC": link.mac}
        return out

    def _ensure_devices(self) -> None:
        for family, spec in self.specs.items():
            self.vteps[family] = self._ensure_vtep(spec)

    def _ensure_vtep(self, spec: VtepSpec) -> Link:
        h = self.h
        link = h.find_link(spec.name)
        # Keep the VtepMAC peers already have (ours from before, or the old device's after a
        # restart): a new one would leave every peer's neighbour and FDB entry pointing nowhere.
        known = self.vteps.get(spec.family)
        mac = known.mac if known else (link.mac if link is not None and link.mac
                                       else self.macs.get(spec.family) or random_mac())
        if link is not None:
            why = incompatible(spec, link)
            if why:
                log.warning("%s exists with %s; recreating it", spec.name, why)
                try:
                    h.delete_link(link.index)
                except NotFound:
                    pass
                link = None
        if link is None:
            link = h.add_vxlan(spec.name, spec.vni, local=spec.local, port=spec.port,
                               learning=spec.learning, gbp=spec.gbp, link=spec.link,
                               mtu=spec.mtu, mac=mac)
            log.info("created %s (VNI %d, local %s, dstport %d, MTU %d, VtepMAC %s)", spec.name,
                     spec.vni, spec.local, spec.port, spec.mtu, link.mac)
        if link.mtu != spec.mtu:
            h.set_mtu(link.index, spec.mtu)
        if spec.family == 6:
            try:  # a VTEP has no business accepting router advertisements (as upstream)
                h.sysctl_set(f"net/ipv6/conf/{spec.name}/accept_ra", "0")
            except Exception as exc:  # noqa: BLE001 - best effort, like upstream
                log.debug("accept_ra on %s: %s", spec.name, exc)
        # Exactly one global address: <subnet .0>/32 — an old one (subnet change) goes.
        have = [a for a in h.addresses(link.index, spec.family) if a.scope == 0]
        for addr in have:
            if addr.cidr != spec.address:
                h.delete_address(link.index, addr.cidr)
        if spec.address not in [a.cidr for a in have]:
            h.add_address(link.index, spec.address, nodad=spec.family == 6)
        if not link.up:
            h.set_up(link.index)
        return h.link(link.index)

    def _devices_intact(self) -> bool:
        for family, spec in self.specs.items():
            link = self.h.find_link(spec.name)
            if link is None or link.index != self.vteps[family].index or incompatible(spec, link):
                return False
        return True

    @property
    def mtu(self) -> int:
        return min(spec.mtu for spec in self.specs.values())

    # --- peers -----------------------------------------------------------------------
    def scope(self) -> Scope:
        assert self.ext is not None
        devices = {self.specs[f].name: link.index for f, link in self.vteps.items()}
        return Scope(devices=devices, ext=(self.ext.name, self.ext.index),
                     networks=self._owned_networks())

    def desired(self, peers: Iterable[Lease]) -> Tuple[State, List[Refusal]]:
        entries: List[Entry] = []
        refused: List[Refusal] = []
        for lease in peers:
            for side in lease.sides():
                spec = self.specs.get(side.family)
                if spec is None:
                    continue  # a family this node does not run
                direct = ""
                if (self.config.direct_routing and side.public_ip and self.ext is not None
                        and directly_connected(side.public_ip, self.ext_cidrs)):
                    direct = self.ext.name
                got, why = peer_entries(side, spec.name, lease.name, direct)
                entries += got
                if why:
                    refused.append((lease, why))
        return State.of(entries), refused
