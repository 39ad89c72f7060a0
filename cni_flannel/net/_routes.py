"""Address and route operations of :class:`cni_flannel.net.handle.Handle` (mixin).

IPv4 and IPv6 share every code path: the family comes from the address text.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, List, Optional

from cni_flannel.net import _nl
from cni_flannel.net.errors import Exists, NotFound, translate
from cni_flannel.net.types import (RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, Address,
                                   Route, normalize_cidr)

RTNH_F_ONLINK = 0x4
RTPROT_BOOT = 3
RTN_UNICAST = 1
IFA_F_NODAD = 0x2


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _to_address(msg: Any) -> Address:
    ip = _nl.attr(msg, "IFA_LOCAL") or _nl.attr(msg, "IFA_ADDRESS")
    return Address(index=msg["index"], address=ip, prefixlen=msg["prefixlen"], scope=msg["scope"])


def _to_route(msg: Any) -> Route:
    family = msg["family"]
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    dst = _nl.attr(msg, "RTA_DST") or zero
    metrics = _nl.attr(msg, "RTA_METRICS")
    mtu = advmss = 0
    if metrics is not None:
        mtu = metrics.get_attr("RTAX_MTU") or 0
        advmss = metrics.get_attr("RTAX_ADVMSS") or 0
    return Route(dst=f"{dst}/{msg['dst_len']}", gw=_nl.attr(msg, "RTA_GATEWAY"),
                 index=_nl.attr(msg, "RTA_OIF", 0) or 0,
                 table=_nl.attr(msg, "RTA_TABLE", msg["table"]), scope=msg["scope"],
                 priority=_nl.attr(msg, "RTA_PRIORITY", 0) or 0,
                 onlink=bool(msg["flags"] & RTNH_F_ONLINK), mtu=mtu, advmss=advmss,
                 src=_nl.attr(msg, "RTA_PREFSRC"), proto=msg["proto"])


class RouteOps:
    netns: Optional[str]
    _nl: "_nl.Socket"

    def _where(self) -> str:  # pragma: no cover - provided by LinkOps
        return ""

    # --- addresses ---------------------------------------------------------
    def addresses(self, index: Optional[int] = None, family: int = 0) -> List[Address]:
        """Addresses (of link ``index`` / of ``family`` 4 or 6 when given)."""
        af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, 0)
        with translate(f"listing addresses{self._where()}"):
            replies = self._nl.request(_nl.new("addr", family=af), _nl.RTM_GETADDR, dump=True)
        out = [_to_address(m) for m in replies]
        return [a for a in out if index is None or a.index == index]

    def _addr_msg(self, index: int, cidr: str, nodad: bool = False) -> Any:
        iface = ipaddress.ip_interface(cidr)
        ip = str(iface.ip)
        attrs: List[list] = [["IFA_ADDRESS", ip]]
        if iface.version == 4:
            attrs.append(["IFA_LOCAL", ip])
            if iface.network.prefixlen < 31:  # what `ip addr add … brd +` and Go's netlink do
                attrs.append(["IFA_BROADCAST", str(iface.network.broadcast_address)])
        if nodad:
            attrs.append(["IFA_FLAGS", IFA_F_NODAD])
        return _nl.new("addr", family=_family(ip), prefixlen=iface.network.prefixlen,
                       index=index, scope=0, attrs=attrs)

    def add_address(self, index: int, cidr: str, nodad: bool = False) -> None:
        """Add ``cidr`` ("10.244.1.1/24") to link ``index``; Exists when it is there."""
        with translate(f"adding address {cidr} to link {index}{self._where()}"):
            self._nl.request(self._addr_msg(index, cidr, nodad), _nl.RTM_NEWADDR,
                             _nl.NLM_F_CREATE | _nl.NLM_F_EXCL)

    def delete_address(self, index: int, cidr: str) -> None:
        with translate(f"deleting address {cidr} from link {index}{self._where()}"):
            self._nl.request(self._addr_msg(index, cidr), _nl.RTM_DELADDR)

    def flush_addresses(self, index: int, family: int = 0) -> None:
        """Remove every global-scope address of ``family`` (4/6/0 for both) from ``index``."""
        for addr in self.addresses(index, family):
            if addr.scope == 0:
                try:
                    self.delete_address(index, addr.cidr)
                except NotFound:
                    pass

    # --- routes ------------------------------------------------------------
    def routes(self, family: int = 0, table: Optional[int] = RT_TABLE_MAIN) -> List[Route]:
        """Routes of ``family`` (4/6/0) in ``table`` (None: every table)."""
        out: List[Route] = []
        for af in ((socket.AF_INET, socket.AF_INET6) if family == 0 else
                   (socket.AF_INET if family == 4 else socket.AF_INET6,)):
            with translate(f"listing routes{self._where()}"):
                replies = self._nl.request(_nl.new("route", family=af), _nl.RTM_GETROUTE, dump=True)
            out.extend(_to_route(m) for m in replies)
        return [r for r in out if table is None or r.table == table]

    def _route_msg(self, route: Route) -> Any:
        net = ipaddress.ip_network(normalize_cidr(route.dst), strict=False)
        af = socket.AF_INET if net.version == 4 else socket.AF_INET6
        attrs: List[list] = [["RTA_TABLE", route.table]]
        if net.prefixlen:
            attrs.append(["RTA_DST", str(net.network_address)])
        if route.gw:
            attrs.append(["RTA_GATEWAY", route.gw])
        if route.index:
            attrs.append(["RTA_OIF", route.index])
        if route.priority:
            attrs.append(["RTA_PRIORITY", route.priority])
        if route.src:
            attrs.append(["RTA_PREFSRC", route.src])
        metrics = [[k, v] for k, v in (("RTAX_MTU", route.mtu), ("RTAX_ADVMSS", route.advmss)) if v]
        if metrics:
            attrs.append(["RTA_METRICS", {"attrs": metrics}])
        scope = route.scope
        if scope == RT_SCOPE_UNIVERSE and not route.gw and route.index and net.version == 4:
            scope = RT_SCOPE_LINK  # a directly connected destination, as `ip route add … dev`
        return _nl.new("route", family=af, dst_len=net.prefixlen, src_len=0, tos=0,
                       table=route.table if route.table < 256 else 252, proto=route.proto or
                       RTPROT_BOOT, scope=scope, type=RTN_UNICAST,
                       flags=RTNH_F_ONLINK if route.onlink else 0, attrs=attrs)

    def _describe(self, route: Route) -> str:
        via = f" via {route.gw}" if route.gw else ""
        dev = f" dev {route.index}" if route.index else ""
        return f"route {route.dst}{via}{dev}{self._where()}"

    def add_route(self, route: Route, replace: bool = False) -> None:
        """Add ``route`` (Exists when present), or create-or-replace it with ``replace``."""
        flags = _nl.NLM_F_CREATE | (_nl.NLM_F_REPLACE if replace else _nl.NLM_F_EXCL)
        with translate(f"adding {self._describe(route)}"):
            self._nl.request(self._route_msg(route), _nl.RTM_NEWROUTE, flags)

    def delete_route(self, route: Route) -> None:
        msg = self._route_msg(route)
        msg["scope"] = 255  # RT_SCOPE_NOWHERE: match any scope, as `ip route del`
        msg["proto"] = 0
        with translate(f"deleting {self._describe(route)}"):
            self._nl.request(msg, _nl.RTM_DELROUTE)

    def ensure_route(self, route: Route) -> bool:
        """Add ``route`` unless the same one exists; True when it was added."""
        try:
            self.add_route(route)
        except Exists:
            return False
        return True
