"""Results (SPEC.md "Success"), kept in the 1.1 shape and converted on output.

Down-conversion follows pkg/types/{100,040,020}:
  1.1 -> 1.0        drop the 1.1-only fields (interface mtu/socketPath/pciID,
                    route mtu/advmss/priority/table/scope)
  1.0 -> 0.4/0.3.x  add ``version`` ("4"/"6") to every ip
  0.3 -> 0.2/0.1    keep the first IPv4 and the first IPv6 address only, as
                    ``ip4``/``ip6`` with the routes of their family; no
                    interfaces; a result without any IP cannot be expressed.
Up-conversion (parsing a prevResult or a delegate's answer) is the reverse.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .errors import DecodeFailure, IncompatibleVersion
from .version import DEFAULT, SUPPORTED_VERSIONS, at_least


def _family(addr: str) -> int:
    """4 or 6 for an address or CIDR string."""
    return ipaddress.ip_interface(addr).version


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""

    def to_dict(self, v11: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if v11 and self.mtu:
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if v11 and self.socket_path:
            out["socketPath"] = self.socket_path
        if v11 and self.pci_id:
            out["pciID"] = self.pci_id
        return out


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR with the host address, e.g. "10.244.1.2/24"
    gateway: Optional[str] = None
    interface: Optional[int] = None

    @property
    def version(self) -> int:
        return _family(self.address)


@dataclass(frozen=True)
class Route:
    dst: str
    gw: Optional[str] = None
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: Optional[int] = None
    scope: Optional[int] = None

    def to_dict(self, v11: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {"dst": self.dst}
        if self.gw:
            out["gw"] = self.gw
        if v11:
            for key, value in (("mtu", self.mtu), ("advmss", self.advmss), ("priority", self.priority)):
                if value:
                    out[key] = value
            if self.table is not None:
                out["table"] = self.table
            if self.scope is not None:
                out["scope"] = self.scope
        return out


@dataclass(frozen=True)
class DNS:
    nameservers: List[str] = field(default_factory=list)
    domain: str = ""
    search: List[str] = field(default_factory=list)
    options: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> "DNS":
        if not d:
            return cls()
        if not isinstance(d, dict):
            raise DecodeFailure("invalid dns in result", f"expected an object, got {d!r}")
        return cls(
            nameservers=list(d.get("nameservers") or []),
            domain=d.get("domain") or "",
            search=list(d.get("search") or []),
            options=list(d.get("options") or []),
        )


@dataclass(frozen=True)
class Result:
    cni_version: str = "1.1.0"
    interfaces: List[Interface] = field(default_factory=list)
    ips: List[IPConfig] = field(default_factory=list)
    routes: List[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    # -- output -------------------------------------------------------------

    def to_dict(self, version: Optional[str] = None) -> Dict[str, Any]:
        version = version or self.cni_version
        if version not in SUPPORTED_VERSIONS:
            raise IncompatibleVersion(f"cannot convert result to unsupported version {version!r}")
        if not at_least(version, "0.3.0"):
            return self._to_020(version)
        v11 = at_least(version, "1.1.0")
        out: Dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_dict(v11) for i in self.interfaces]
        if self.ips:
            ips = []
            for ip in self.ips:
                d: Dict[str, Any] = {}
                if not at_least(version, "1.0.0"):
                    d["version"] = str(ip.version)
                if ip.interface is not None:
                    d["interface"] = ip.interface
                d["address"] = ip.address
                if ip.gateway:
                    d["gateway"] = ip.gateway
                ips.append(d)
            out["ips"] = ips
        if self.routes:
            out["routes"] = [r.to_dict(v11) for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    def _to_020(self, version: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {"cniVersion": version}
        for fam in (4, 6):
            ip = next((i for i in self.ips if i.version == fam), None)
            if ip is None:
                continue
            block: Dict[str, Any] = {"ip": ip.address}
            if ip.gateway:
                block["gateway"] = ip.gateway
            routes = [r.to_dict(False) for r in self.routes if _family(r.dst) == fam]
            if routes:
                block["routes"] = routes
            out[f"ip{fam}"] = block
        if "ip4" not in out and "ip6" not in out:
            raise IncompatibleVersion(
                f"cannot convert result to version {version}: it has no IP address",
                "results before 0.3.0 must carry an ip4 or ip6 address; use cniVersion 0.3.1 or later",
            )
        out["dns"] = self.dns.to_dict()
        return out

    # -- input --------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Any) -> "Result":
        """Parse a result of any supported version into the 1.1 shape."""
        if not isinstance(d, dict):
            raise DecodeFailure("invalid result", f"expected a JSON object, got {type(d).__name__}")
        version = d.get("cniVersion") or DEFAULT
        if version not in SUPPORTED_VERSIONS:
            raise IncompatibleVersion(f"result has unsupported cniVersion {version!r}")
        try:
            if not at_least(version, "0.3.0"):
                return cls._from_020(d)
            return cls(
                cni_version="1.1.0",
                interfaces=[
                    Interface(
                        name=i["name"],
                        mac=i.get("mac", ""),
                        mtu=int(i.get("mtu") or 0),
                        sandbox=i.get("sandbox", ""),
                        socket_path=i.get("socketPath", ""),
                        pci_id=i.get("pciID", ""),
                    )
                    for i in d.get("interfaces") or []
                ],
                ips=[_parse_ip(ip) for ip in d.get("ips") or []],
                routes=[_parse_route(r) for r in d.get("routes") or []],
                dns=DNS.from_dict(d.get("dns")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeFailure("invalid result", f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_020(cls, d: Dict[str, Any]) -> "Result":
        ips: List[IPConfig] = []
        routes: List[Route] = []
        for key in ("ip4", "ip6"):
            block = d.get(key)
            if not block:
                continue
            ips.append(_parse_ip({"address": block["ip"], "gateway": block.get("gateway")}))
            routes.extend(_parse_route(r) for r in block.get("routes") or [])
        return cls(cni_version="1.1.0", ips=ips, routes=routes, dns=DNS.from_dict(d.get("dns")))


def _parse_ip(d: Dict[str, Any]) -> IPConfig:
    address = d["address"]
    ipaddress.ip_interface(address)  # validates
    gateway = d.get("gateway") or None
    if gateway:
        ipaddress.ip_address(gateway)
    interface = d.get("interface")
    if interface is not None and (not isinstance(interface, int) or isinstance(interface, bool) or interface < 0):
        raise ValueError(f"invalid interface index {interface!r}")
    return IPConfig(address=address, gateway=gateway, interface=interface)


def _parse_route(d: Dict[str, Any]) -> Route:
    dst = d["dst"]
    ipaddress.ip_network(dst, strict=False)
    gw = d.get("gw") or None
    if gw:
        ipaddress.ip_address(gw)
    return Route(
        dst=dst,
        gw=gw,
        mtu=int(d.get("mtu") or 0),
        advmss=int(d.get("advmss") or 0),
        priority=int(d.get("priority") or 0),
        table=d.get("table"),
        scope=d.get("scope"),
    )
