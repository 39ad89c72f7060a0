"""Which interface carries flannel's traffic, and which addresses the lease advertises.

flanneld (main.go LookupExtIface) tries, in order:

    --iface NAME|ADDRESS        (repeatable: the first that exists and has an address wins)
    --iface-regex PATTERN       (repeatable: matched against names and then addresses)
    --iface-can-reach ADDRESS   (the interface the route to ADDRESS leaves through)
    the default route's interface

and advertises the interface's first global address per enabled family, unless --public-ip /
--public-ipv6 say otherwise.  Upstream picks the interface from the IPv4 default route only
(flannel#2081); here both families go through one path: an IPv6-only node uses its IPv6
default route, and a dual-stack node needs the chosen interface to hold (or be told) both
addresses.

Pure selection (:func:`choose`) over plain data read once (:func:`read_host`), so every rule
is unit-tested without root.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import ConfigError, PreflightError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True)
class Iface:
    index: int
    name: str
    mtu: int
    addresses: Tuple[IPAddress, ...] = ()   # global-scope addresses, kernel order

    def first(self, family: int) -> Optional[IPAddress]:
        return next((a for a in self.addresses if a.version == family), None)


@dataclass(frozen=True)
class RouteInfo:
    dst: Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
    index: int
    priority: int = 0


@dataclass(frozen=True)
class Host:
    """What the node looks like: its interfaces and its main routing table."""

    ifaces: Tuple[Iface, ...]
    routes: Tuple[RouteInfo, ...] = ()

    def by_index(self, index: int) -> Optional[Iface]:
        return next((i for i in self.ifaces if i.index == index), None)


@dataclass(frozen=True)
class Choice:
    """The external interface and the public addresses the lease carries."""

    iface: Iface
    public_ip: Optional[ipaddress.IPv4Address] = None
    public_ipv6: Optional[ipaddress.IPv6Address] = None
    how: str = ""     # for the log line: "--iface eth1", "default route", ...


@dataclass(frozen=True)
class Request:
    ifaces: Sequence[str] = ()
    regexes: Sequence[str] = ()
    can_reach: str = ""
    public_ip: str = ""
    public_ipv6: str = ""
    ipv4: bool = True
    ipv6: bool = False


def route_to(host: Host, dest: IPAddress) -> Optional[RouteInfo]:
    """Longest-prefix match in the main table (lowest metric breaks ties), like the kernel."""
    best: Optional[RouteInfo] = None
    for r in host.routes:
        if r.dst.version != dest.version or dest not in r.dst or not r.index:
            continue
        if best is None or (r.dst.prefixlen, -r.priority) > (best.dst.prefixlen, -best.priority):
            best = r
    return best


def _addr(text: str, what: str, family: int = 0) -> IPAddress:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{what}={text!r} is not an IP address") from None
    if family and addr.version != family:
        raise ConfigError(f"{what}={text!r} is not an IPv{family} address")
    return addr


def _families(req: Request) -> List[int]:
    return [f for f, on in ((4, req.ipv4), (6, req.ipv6)) if on]


def _usable(iface: Iface, req: Request) -> bool:
    """An interface can carry the lease when it has an address of every enabled family
    that --public-ip(v6) does not supply."""
    given = {4: req.public_ip, 6: req.public_ipv6}
    return all(given[f] or iface.first(f) is not None for f in _families(req))


def _pick(host: Host, req: Request) -> Tuple[Iface, str]:
    families = _families(req)
    if req.ifaces:
        tried = []
        for spec in req.ifaces:
            try:
                addr: Optional[IPAddress] = ipaddress.ip_address(spec)
            except ValueError:
                addr = None
            found = [i for i in host.ifaces if (addr in i.addresses if addr else i.name == spec)]
            if found and _usable(found[0], req):
                return found[0], f"--iface {spec}"
            if found:
                lacking = [f"IPv{f}" for f in families if found[0].first(f) is None]
                tried.append(f"{spec} (no {'/'.join(lacking)} address)")
            else:
                tried.append(f"{spec} (no such interface or address)")
        raise PreflightError(f"none of --iface {', '.join(req.ifaces)} can carry the lease: "
                             f"{', '.join(tried)} (ip -br addr shows what the node has)")
    if req.regexes:
        for pattern in req.regexes:
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"--iface-regex={pattern!r} is not a regular expression: {exc}") from None
            for iface in host.ifaces:  # names first, then addresses, as upstream
                if rx.search(iface.name) and _usable(iface, req):
                    return iface, f"--iface-regex {pattern} (name)"
            for iface in host.ifaces:
                if any(rx.search(str(a)) for a in iface.addresses) and _usable(iface, req):
                    return iface, f"--iface-regex {pattern} (address)"
        raise PreflightError(f"no interface matches --iface-regex {', '.join(req.regexes)} "
                             f"(interfaces: {', '.join(i.name for i in host.ifaces) or 'none'})")
    if req.can_reach:
        dest = _addr(req.can_reach, "--iface-can-reach")
        route = route_to(host, dest)
        iface = host.by_index(route.index) if route else None
        if iface is None:
            raise PreflightError(f"--iface-can-reach {dest}: no route to it on this node")
        return iface, f"--iface-can-reach {dest}"
    for family in families:
        route = next((r for r in sorted(host.routes, key=lambda r: r.priority)
                      if r.dst.version == family and r.dst.prefixlen == 0 and r.index), None)
        iface = host.by_index(route.index) if route else None
        if iface is not None:
            return iface, f"IPv{family} default route"
    raise PreflightError("no default route to pick the external interface from: "
                         "name it with --iface (or --iface-regex / --iface-can-reach)")


def choose(host: Host, req: Request) -> Choice:
    """The external interface and public addresses for ``req``; ConfigError for bad flag
    values, PreflightError when the node has nothing that fits."""
    public = {4: _addr(req.public_ip, "--public-ip", 4) if req.public_ip else None,
              6: _addr(req.public_ipv6, "--public-ipv6", 6) if req.public_ipv6 else None}
    iface, how = _pick(host, req)
    for family in _families(req):
        if public[family] is None:
            public[family] = iface.first(family)
        if public[family] is None:
            flag = "--public-ip" if family == 4 else "--public-ipv6"
            raise PreflightError(f"interface {iface.name} ({how}) has no global IPv{family} address and "
                                 f"IPv{family} is enabled: add one, pick another interface or set {flag}")
    return Choice(iface=iface, public_ip=public[4] if req.ipv4 else None,  # type: ignore[arg-type]
                  public_ipv6=public[6] if req.ipv6 else None, how=how)  # type: ignore[arg-type]


def read_host(h: Any) -> Host:
    """The node's interfaces (with global addresses) and main-table routes, via net.Handle."""
    addrs: Dict[int, List[IPAddress]] = {}
    for a in h.addresses():
        if a.scope == RT_SCOPE_UNIVERSE:
            addrs.setdefault(a.index, []).append(ipaddress.ip_address(a.address))
    ifaces = tuple(Iface(l.index, l.name, l.mtu, tuple(addrs.get(l.index, ()))) for l in h.links())
    routes = []
    for r in h.routes(0):
        try:
            dst = ipaddress.ip_network(r.dst, strict=False)
        except ValueError:
            continue
        routes.append(RouteInfo(dst, r.index, r.priority))
    return Host(ifaces, tuple(routes))
