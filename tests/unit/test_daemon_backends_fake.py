"""An in-memory stand-in for cni_flannel.net.handle.Handle: the calls the daemon backends make,
with the kernel's replace/delete semantics for routes, neighbours and VXLAN FDB entries
(checked against a real kernel in tests/integration/test_daemon_backends*.py). The other
test_daemon_backends* modules import FakeKernel from here; the tests below pin its semantics."""
from __future__ import annotations

import errno
import ipaddress
from dataclasses import replace
from typing import Dict, List, Optional, Tuple, Union

from cni_flannel.net.errors import NetFailure, failure
from cni_flannel.net.types import IFF_UP, Address, Link, Neighbour, Route, VxlanInfo

NUD_PERMANENT = 0x80


class FakeKernel:
    def __init__(self, ext_ip: str = "198.18.0.1/15", mtu: int = 1500) -> None:
        self._next = 1
        self.links: Dict[int, Link] = {}
        self.addrs: List[Address] = []
        self.routes_: Dict[Tuple[str, int], Route] = {}
        self.neighs: Dict[Tuple[int, str], Neighbour] = {}
        self.fdb: Dict[Tuple[int, str, Optional[str]], Neighbour] = {}
        self.fail: Dict[str, int] = {}   # substring of a call -> errno to fail it with
        self.calls: List[str] = []
        self.lo = self._new(Link(0, "lo", mtu=65536, flags=IFF_UP))
        self.eth0 = self._new(Link(0, "eth0", mtu=mtu, flags=IFF_UP, mac="02:00:00:00:00:01"))
        for cidr in ext_ip.split(","):
            self.add_address(self.eth0.index, cidr)
        self.calls.clear()

    def _new(self, link: Link) -> Link:
        link = replace(link, index=self._next)
        self._next += 1
        self.links[link.index] = link
        return link

    def _call(self, text: str) -> None:
        self.calls.append(text)
        for needle, err in self.fail.items():
            if needle in text:
                raise failure(text, err)

    # --- links ---
    def link(self, ref: Union[int, str]) -> Link:
        link = self.find_link(ref)
        if link is None:
            raise failure(f"link {ref!r}", errno.ENODEV)
        return link

    def find_link(self, ref: Union[int, str]) -> Optional[Link]:
        for link in self.links.values():
            if ref in (link.index, link.name):
                return link
        return None

    def add_vxlan(self, name: str, vni: int, local: Optional[str] = None, port: int = 0,
                  learning: bool = True, gbp: bool = False, link: int = 0, mtu: int = 0,
                  mac: Optional[str] = None) -> Link:
        self._call(f"add vxlan {name}")
        if self.find_link(name):
            raise failure(name, errno.EEXIST)
        return self._new(Link(0, name, kind="vxlan", mac=mac or "02:aa:00:00:00:00", mtu=mtu or 1500,
                              vxlan=VxlanInfo(vni, local, port, learning, gbp, link)))

    def delete_link(self, ref: Union[int, str]) -> None:
        index = self.link(ref).index
        self._call(f"delete link {index}")
        del self.links[index]
        self.addrs = [a for a in self.addrs if a.index != index]
        self.routes_ = {k: r for k, r in self.routes_.items() if r.index != index}
        self.neighs = {k: n for k, n in self.neighs.items() if n.index != index}
        self.fdb = {k: n for k, n in self.fdb.items() if n.index != index}

    def set_mtu(self, ref: Union[int, str], mtu: int) -> None:
        link = self.link(ref)
        self.links[link.index] = replace(link, mtu=mtu)

    def set_up(self, ref: Union[int, str], up: bool = True) -> None:
        link = self.link(ref)
        self.links[link.index] = replace(link, flags=link.flags | IFF_UP if up else link.flags & ~IFF_UP)

    def sysctl_set(self, key: str, value: str) -> None:
        self.calls.append(f"sysctl {key}={value}")

    # --- addresses ---
    def addresses(self, index: Optional[int] = None, family: int = 0) -> List[Address]:
        return [a for a in self.addrs if (index is None or a.index == index)
                and (not family or a.family == family)]

    def add_address(self, index: int, cidr: str, nodad: bool = False) -> None:
        iface = ipaddress.ip_interface(cidr)
        self.addrs.append(Address(index, str(iface.ip), iface.network.prefixlen))
        if iface.network.prefixlen < iface.max_prefixlen:  # the connected route
            self.routes_[(str(iface.network), 0)] = Route(str(iface.network), index=index, proto=2)

    def delete_address(self, index: int, cidr: str) -> None:
        self.addrs = [a for a in self.addrs if not (a.index == index and a.cidr == cidr)]

    # --- routes ---
    def routes(self, family: int = 0, table: Optional[int] = 254) -> List[Route]:
        out = []
        for r in self.routes_.values():
            if r.family == 6 and not r.priority:
                r = replace(r, priority=1024)  # the kernel's IPv6 default metric
            if not family or r.family == family:
                out.append(r)
        return out

    @staticmethod
    def _key(route: Route) -> Tuple[str, int]:
        return (route.dst, 0 if route.family == 6 and route.priority == 1024 else route.priority)

    def add_route(self, route: Route, replace: bool = False) -> None:
        self._call(f"add route {route.dst} via {route.gw}")
        if self._key(route) in self.routes_ and not replace:
            raise failure("route", errno.EEXIST)
        self.routes_[self._key(route)] = Route(route.dst, route.gw, route.index, onlink=route.onlink,
                                              priority=route.priority, proto=3)

    def delete_route(self, route: Route) -> None:
        self._call(f"delete route {route.dst} via {route.gw}")
        have = self.routes_.get(self._key(route))
        if have is None or (route.gw and have.gw != route.gw) or (route.index and have.index != route.index):
            raise failure("route", errno.ESRCH)
        del self.routes_[self._key(route)]

    # --- neighbours and FDB ---
    def neighbours(self, index: Optional[int] = None, bridge: bool = False) -> List[Neighbour]:
        table = self.fdb if bridge else self.neighs
        return [n for n in table.values() if index is None or n.index == index]

    def set_neighbour(self, index: int, ip: str, mac: str) -> None:
        self._call(f"set neighbour {ip} {mac}")
        self.neighs[(index, ip)] = Neighbour(index, ip, mac, NUD_PERMANENT)

    def delete_neighbour(self, index: int, ip: str) -> None:
        self._call(f"delete neighbour {ip}")
        if self.neighs.pop((index, ip), None) is None:
            raise failure("neighbour", errno.ENOENT)

    def set_fdb(self, index: int, mac: str, dst: Optional[str] = None) -> None:
        self._call(f"set fdb {mac} {dst}")
        for key in [k for k in self.fdb if k[:2] == (index, mac)][:1]:  # replace: the first remote
            del self.fdb[key]
        self.fdb[(index, mac, dst)] = Neighbour(index, dst, mac, NUD_PERMANENT, bridge=True)

    def delete_fdb(self, index: int, mac: str, dst: Optional[str] = None) -> None:
        self._call(f"delete fdb {mac} {dst}")
        if self.fdb.pop((index, mac, dst), None) is None:
            raise failure("fdb", errno.ENOENT)


def test_fake_route_replace_matches_on_destination_and_metric():
    k = FakeKernel()
    k.add_route(Route("10.244.2.0/24", "198.18.0.2", k.eth0.index))
    k.add_route(Route("10.244.2.0/24", "10.244.2.0", 9, onlink=True), replace=True)
    assert [(r.gw, r.index) for r in k.routes() if r.dst == "10.244.2.0/24"] == [("10.244.2.0", 9)]


def test_fake_fdb_replace_overwrites_the_first_remote_and_delete_needs_the_dst():
    k = FakeKernel()
    k.set_fdb(5, "0a:00:00:00:00:02", "198.18.0.2")
    k.set_fdb(5, "0a:00:00:00:00:02", "198.18.0.9")
    assert [n.ip for n in k.neighbours(5, bridge=True)] == ["198.18.0.9"]
    try:
        k.delete_fdb(5, "0a:00:00:00:00:02", "198.18.0.2")
    except NetFailure as exc:
        assert exc.errno == errno.ENOENT
    else:
        raise AssertionError("deleting an absent FDB remote succeeded")
