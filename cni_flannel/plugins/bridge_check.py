"""bridge CHECK: is the attachment ADD reported (the prevResult) still in place?

As bridge.go cmdCheck, plus what it misses: MTU, hairpin, masquerade and
spoof-check rules, and gateway-less routes (which the 1.1.1 reference wrongly reports missing).
Errors are InternalError (999) with the reference's wording where it has one.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from cni_flannel.cni.errors import InternalError, InvalidConfig
from cni_flannel.cni.request import Request
from cni_flannel.cni.result import Interface
from cni_flannel.net.handle import Handle
from cni_flannel.net.types import Link
from cni_flannel.plugins import bridge_masq, bridge_spoofchk
from cni_flannel.plugins.bridge_config import BridgeConfig


def _fail(msg: str, details: str = "") -> InternalError:
    return InternalError(msg, details)


def check_attachment(conf: BridgeConfig, req: Request) -> None:
    prev = req.config.prev_result
    if prev is None:
        raise InvalidConfig("Required prevResult missing", "CHECK needs the result of ADD as prevResult")
    br_if: Optional[Interface] = None
    cont_if: Optional[Interface] = None
    for intf in prev.interfaces:
        if intf.name == conf.bridge and not intf.sandbox:
            br_if = intf
        elif intf.name == req.ifname and intf.sandbox == req.netns:
            cont_if = intf
    with Handle() as node, Handle(req.netns) as pod:
        br = node.find_link(conf.bridge)
        if br is None or br.kind != "bridge":
            raise _fail(f"CNI created bridge {conf.bridge} in host namespace was not found")
        if br_if is not None and br_if.mac and br_if.mac != br.mac:
            raise _fail(f"Bridge interface {conf.bridge} Mac doesn't match: {br_if.mac}")
        if br.promisc != conf.promisc:
            raise _fail(f"Bridge interface {conf.bridge} configured Promisc Mode {conf.promisc} "
                        f"doesn't match current state: {br.promisc}")
        if cont_if is None:
            raise _fail(f"Sandbox in prevResult doesn't match configured netns: {req.netns}")
        cont = pod.find_link(req.ifname)
        if cont is None or cont.kind != "veth":
            raise _fail(f"CNI created interface in container {req.ifname} not found")
        if cont_if.mac and cont_if.mac != cont.mac:
            raise _fail(f"Interface {cont.name} Mac {cont_if.mac} doesn't match container Mac: {cont.mac}")
        host = _host_veth(node, br, prev.interfaces, cont)
        if host is None:
            raise _fail(f"CNI veth created for bridge {conf.bridge} was not found")
        if bool(host.port.get("hairpin")) != conf.hairpin:
            raise _fail(f"hairpin mode of {host.name} is {bool(host.port.get('hairpin'))}, configured {conf.hairpin}")
        if conf.mtu:
            for link in (br, host, cont):
                if link.mtu != conf.mtu:
                    raise _fail(f"MTU of {link.name} is {link.mtu}, configured {conf.mtu}")
        _check_ips_and_routes(pod, cont, prev)
    if conf.macspoofchk:
        problems = bridge_spoofchk.missing(req.container_id, req.ifname, host.name, cont.mac)
        if problems:
            raise _fail("spoof-check rules missing or wrong", "; ".join(problems))
    if conf.ip_masq and prev.ips:
        problems = bridge_masq.missing(conf, req.container_id, req.ifname, prev.ips)
        if problems:
            raise _fail("masquerade rules missing or wrong", "; ".join(problems))


def _host_veth(node: Handle, br: Link, interfaces, cont: Link) -> Optional[Link]:
    """The host veth: named in prevResult, port of the bridge, peer of the container end."""
    for intf in interfaces:
        if intf.sandbox or intf.name in (br.name, cont.name):
            continue
        link = node.find_link(intf.name)
        if link is None or link.kind != "veth" or link.master != br.index:
            continue
        if intf.mac and intf.mac != link.mac:
            raise _fail(f"Interface {intf.name} Mac doesn't match: {intf.mac} not found")
        return link
    return None


def _check_ips_and_routes(pod: Handle, cont: Link, prev) -> None:
    have = {a.cidr for a in pod.addresses(cont.index)}
    for ipc in prev.ips:
        want = str(ipaddress.ip_interface(ipc.address))
        if want not in have:
            raise _fail(f"Failed to match addr {want} on interface {cont.name}")
    routes = pod.routes(0, table=None)
    for r in prev.routes:
        dst = str(ipaddress.ip_network(r.dst, strict=False))
        found = [x for x in routes if x.dst == dst and (not r.gw or x.gw == r.gw)]
        if not found:
            via = f" via {r.gw}" if r.gw else ""
            raise _fail(f"Failed to find route {dst}{via} in the container")
