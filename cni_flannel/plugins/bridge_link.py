"""bridge's netlink steps (ADD and DEL), each a small function over net.Handle.

Mirrors bridge.go's ensureBridge / setupVeth / ensureAddr / ipam.ConfigureIface.
Every change that ADD must be able to undo is reported to ``undo`` (a
callable taking a description and a zero-argument function).
"""

from __future__ import annotations

import ipaddress
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from cni_flannel.cni.errors import InternalError, InvalidConfig
from cni_flannel.cni.result import IPConfig, Result
from cni_flannel.cni.result import Route as ResultRoute
from cni_flannel.net import ns
from cni_flannel.net.errors import Exists, NotFound
from cni_flannel.net.handle import Handle
from cni_flannel.net.types import Link, Route
from cni_flannel.plugins.bridge_config import BridgeConfig

Undo = Callable[[str, Callable[[], None]], None]
PORT_UP_WAITS = (0.0, 0.05, 0.5, 1.0, 1.0)  # as bridge.go: ~2.5 s for the port to come up


def bridge_if_usable(node: Handle, conf: BridgeConfig) -> Optional[Link]:
    """The existing bridge (None if absent); InvalidConfig if the name is taken by a non-bridge."""
    link = node.find_link(conf.bridge)
    if link is not None and link.kind != "bridge":
        raise InvalidConfig(f'"{conf.bridge}" already exists but is not a bridge',
                            f"it is a {link.kind or 'plain'} device; choose another \"bridge\" name")
    return link


def ensure_bridge(node: Handle, conf: BridgeConfig, undo: Optional[Undo] = None) -> Link:
    """The bridge, made and configured; a bridge this call made is reported to ``undo``."""
    br = bridge_if_usable(node, conf)
    if br is None:
        try:
            made = node.add_bridge(conf.bridge, mtu=conf.mtu,
                                   vlan_filtering=True if conf.vlan_filtering else None)
            if undo is not None:
                undo(f"delete bridge {conf.bridge!r} made by this ADD",
                     lambda: delete_bridge_if_unused(node, made.index))
        except Exists:
            pass  # a concurrent ADD created it first
        br = bridge_if_usable(node, conf)
        if br is None:
            raise InternalError(f"bridge {conf.bridge!r} vanished right after creation")
    if conf.mtu and br.mtu != conf.mtu:
        node.set_mtu(br.index, conf.mtu)
    if conf.vlan_filtering and not br.vlan_filtering:
        node.set_bridge(br.index, vlan_filtering=True)
    if conf.promisc and not br.promisc:
        node.set_promisc(br.index, True)
    try:  # we own the routes of this interface
        node.sysctl_set(f"net/ipv6/conf/{conf.bridge}/accept_ra", "0")
    except Exception:
        pass
    if not br.up:
        node.set_up(br.index)
    return node.link(br.index)


def bridge_unused(bridge_index: int, links: List[Link]) -> bool:
    """No link is a port of the bridge (a concurrent ADD may have joined the one we made)."""
    return not any(l.master == bridge_index for l in links)


def delete_bridge_if_unused(node: Handle, index: int) -> None:
    """Rollback of a bridge ADD made: delete it (its addresses go with it) unless another
    ADD attached a port meanwhile; then it is that pod's bridge too and stays."""
    if bridge_unused(index, node.links()):
        try:
            node.delete_link(index)
        except NotFound:
            pass


def host_veth_name() -> str:
    return "veth" + os.urandom(4).hex()


def setup_veth(node: Handle, pod: Handle, conf: BridgeConfig, netns: str, ifname: str,
               br: Link, undo: Undo) -> Tuple[Link, Link]:
    """Create the pair (``ifname`` in the pod), attach the host end; (host, container) links."""
    if pod.find_link(ifname) is not None:
        raise InvalidConfig(f"container veth name provided ({ifname}) already exists",
                            f"{netns} already has an interface {ifname}; pick another CNI_IFNAME")
    with ns.fd_of(netns) as fd:
        for _ in range(8):
            name = host_veth_name()
            try:
                host = node.add_veth(name, ifname, peer_netns_fd=fd, mtu=conf.mtu, peer_mac=conf.mac or None)
                break
            except Exists:
                if pod.find_link(ifname) is not None:
                    raise
        else:
            raise InternalError("could not find a free host veth name after 8 tries")
    undo(f"delete veth {host.name}", lambda: _delete_quietly(node, host.name))
    container = pod.link(ifname)
    node.set_master(host.index, br.index)
    node.set_port(host.index, hairpin=conf.hairpin, isolated=True if conf.port_isolation else None)
    if conf.vlan or conf.vlans:
        if not conf.preserve_default_vlan:
            for v in node.vlans().get(host.index, []):
                node.delete_vlan(host.index, v.vid)
        if conf.vlan:
            node.add_vlan(host.index, conf.vlan, pvid=True, untagged=True)
        for vid in conf.vlans:
            node.add_vlan(host.index, vid)
    node.set_up(host.index)
    return node.link(host.index), container


def _delete_quietly(h: Handle, name: str) -> None:
    try:
        h.delete_link(name)
    except NotFound:
        pass


def gateways(result: Result, conf: BridgeConfig) -> Tuple[Result, List[str]]:
    """bridge.go calcGateways: ips point at interface 2, gateways default to subnet+1 when
    isGateway, default routes are added for isDefaultGateway; returns the bridge addresses."""
    ips: List[IPConfig] = []
    routes = list(result.routes)
    bridge_addrs: List[str] = []
    has_default = {4: False, 6: False}
    for r in routes:
        net = ipaddress.ip_network(r.dst, strict=False)
        if r.gw and net.prefixlen == 0:
            has_default[net.version] = True
    for ipc in result.ips:
        iface = ipaddress.ip_interface(ipc.address)
        gw = ipc.gateway
        if gw is None and conf.is_gateway:
            gw = str(iface.network.network_address + 1)
        ips.append(IPConfig(address=ipc.address, gateway=gw, interface=2))
        if conf.is_default_gateway and not has_default[iface.version]:
            routes.append(ResultRoute(dst="0.0.0.0/0" if iface.version == 4 else "::/0", gw=gw))
            has_default[iface.version] = True
        if conf.is_gateway and gw:
            bridge_addrs.append(f"{gw}/{iface.network.prefixlen}")
    out = Result(cni_version=result.cni_version, interfaces=list(result.interfaces), ips=ips,
                 routes=routes, dns=result.dns)
    return out, bridge_addrs


def configure_container(pod: Handle, conf: BridgeConfig, ifname: str, result: Result) -> None:
    """Sysctls, addresses, link up, routes in the pod (ipam.ConfigureIface)."""
    dad = {"net/ipv6/conf/%s/accept_dad": "1" if conf.enable_dad else "0",
           "net/ipv4/conf/%s/arp_notify": "1"}
    if conf.enable_dad:
        dad["net/ipv6/conf/%s/enhanced_dad"] = "1"
    for key, value in dad.items():
        try:
            pod.sysctl_set(key % ifname, value)
        except Exception:
            pass  # e.g. IPv6 disabled in the pod: as the reference, not fatal
    link = pod.link(ifname)
    for ipc in result.ips:
        pod.add_address(link.index, ipc.address, nodad=not conf.enable_dad and ":" in ipc.address)
    pod.set_up(link.index)
    gw_of: Dict[int, Optional[str]] = {}
    for ipc in result.ips:
        gw_of.setdefault(ipc.version, ipc.gateway)
    for r in result.routes:
        version = ipaddress.ip_network(r.dst, strict=False).version
        gw = r.gw or gw_of.get(version)
        route = Route(dst=r.dst, gw=gw, index=link.index, mtu=r.mtu, advmss=r.advmss,
                      priority=r.priority, table=r.table or 254)
        try:
            pod.add_route(route)
        except Exists:
            pass


def ensure_gateway_address(node: Handle, br: Link, cidr: str, force: bool) -> None:
    """bridge.go ensureAddr: the gateway on the bridge, with the reference's conflict rule."""
    want = ipaddress.ip_interface(cidr)
    for a in node.addresses(br.index, want.version):
        if a.scope != 0:
            continue  # link-local
        have = ipaddress.ip_interface(a.cidr)
        if have == want:
            return
        if want.version == 4 or want.ip in have.network or have.ip in want.network:
            if not force:
                raise InternalError(
                    f'failed to set bridge addr: "{br.name}" already has an IP address different from {cidr}',
                    f"{a.cidr} is on it; set forceAddress to replace it, or remove it")
            node.delete_address(br.index, a.cidr)
    try:
        node.add_address(br.index, cidr)
    except Exists:
        pass
    node.set_mac(br.index, node.link(br.index).mac)  # pin the MAC, or it follows the lowest port


def enable_forwarding(node: Handle, versions: List[int]) -> None:
    for v in sorted(set(versions)):
        node.sysctl_set("net/ipv4/ip_forward" if v == 4 else "net/ipv6/conf/all/forwarding", "1")


def wait_port_up(node: Handle, name: str) -> Link:
    link = node.link(name)
    for delay in PORT_UP_WAITS:
        time.sleep(delay)
        link = node.link(name)
        if link.operstate == "UP":
            return link
    raise InternalError(f"bridge port in error state: {link.operstate}", f"host veth {name}")


def delete_container_iface(netns: str, ifname: str) -> List[Any]:
    """DEL: remove ``ifname`` from the pod if it (and the netns) still exist; its addresses."""
    if not ns.exists(netns):
        return []
    with Handle(netns) as pod:
        link = pod.find_link(ifname)
        if link is None or link.kind != "veth":
            return []  # gone, or not the veth ADD makes (e.g. CNI_IFNAME=lo): not ours to delete
        addrs = pod.addresses(link.index)
        try:
            pod.delete_link(link.index)
        except NotFound:
            pass
        return addrs
