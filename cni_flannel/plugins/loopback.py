"""loopback (type ``loopback``): bring ``lo`` up in the container.

Behaves like containernetworking/plugins plugins/main/loopback:

ADD     set ``lo`` up in CNI_NETNS (CNI_IFNAME is ignored: this is always
        ``lo``); every address on it must be a loopback address.  Chained
        after another plugin, print the prevResult unchanged; otherwise report
        interfaces [{name: lo, mac: 00:00:00:00:00:00, sandbox: CNI_NETNS}] and
        the first IPv4 and first IPv6 address of ``lo`` (127.0.0.1/8, ::1/128)
        with interface 0.
DEL     set ``lo`` down; an empty, missing or already-removed CNI_NETNS is
        success (kubernetes/kubernetes#43014).
CHECK   fail unless ``lo`` is up.
STATUS  always ready; GC has nothing to collect.
"""

from __future__ import annotations

import ipaddress
from typing import List

from cni_flannel.cni.errors import InternalError
from cni_flannel.cni.request import Request
from cni_flannel.cni.result import Interface, IPConfig, Result

LO = "lo"
LO_MAC = "00:00:00:00:00:00"


def add(req: Request) -> Result:
    from cni_flannel.net.handle import Handle

    with Handle(req.netns) as h:
        lo = h.link(LO)
        h.set_up(lo.index)
        ips: List[IPConfig] = []
        for family in (4, 6):
            addrs = h.addresses(lo.index, family)
            for addr in addrs:
                if not ipaddress.ip_address(addr.address).is_loopback:
                    raise InternalError(
                        f"loopback interface found with non-loopback address {addr.address!r}",
                        f"remove it from {LO} in {req.netns}")
            if addrs:
                ips.append(IPConfig(address=addrs[0].cidr, interface=0))
    conf = req.config
    if conf.prev_result is not None:
        return conf.prev_result
    return Result(cni_version=conf.cni_version,
                  interfaces=[Interface(name=LO, mac=LO_MAC, sandbox=req.netns)], ips=ips)


def delete(req: Request) -> None:
    from cni_flannel.net import ns

    if not ns.exists(req.netns):
        return  # nothing left to set down
    from cni_flannel.net.errors import NotFound
    from cni_flannel.net.handle import Handle

    try:
        with Handle(req.netns) as h:
            h.set_up(LO, up=False)
    except NotFound:
        pass


def check(req: Request) -> None:
    from cni_flannel.net.handle import Handle

    with Handle(req.netns) as h:
        if not h.link(LO).up:
            raise InternalError("loopback interface is down", f"in {req.netns}")


def status(req: Request) -> None:
    return None


def gc(req: Request) -> None:
    return None
