"""What a backend is configured from, as plain data: leases, lease events, Backend options.

A :class:`Lease` is one node's subnet lease as flanneld stores it (etcd value plus the subnet
key; the Kubernetes annotations carry the same fields):

    {"Subnet": "10.244.2.0/24", "PublicIP": "198.18.0.2", "BackendType": "vxlan",
     "BackendData": {"VNI": 1, "VtepMAC": "0a:58:..."},
     "IPv6Subnet": "fd00:10:244:2::/64", "PublicIPv6": "2001:db8::2",
     "BackendV6Data": {"VNI": 1, "VtepMAC": "0a:58:..."}}

IPv4 and IPv6 share every code path: :meth:`Lease.sides` gives one :class:`Side` per family.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from cni_flannel.cni.errors import InvalidConfig, PluginError

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ADDED = "added"
REMOVED = "removed"

DEFAULT_VNI = 1
DEFAULT_PORT = 8472  # the Linux kernel's VXLAN port, which flannel uses (not IANA's 4789)


class BackendError(PluginError):
    """A backend could not program the data plane."""


class PeerError(BackendError):
    """Some peers could not be programmed (or were refused); ``.peers`` names them."""

    def __init__(self, msg: str, peers: Sequence[str]) -> None:
        super().__init__(msg)
        self.peers = list(peers)


@dataclass(frozen=True)
class Side:
    """One address family of a lease: what a backend programs for it."""
    family: int                 # 4 or 6
    subnet: IPNetwork
    public_ip: Optional[str]
    vtep_mac: Optional[str]


@dataclass(frozen=True)
class Lease:
    subnet: Optional[str] = None
    public_ip: Optional[str] = None
    ipv6_subnet: Optional[str] = None
    public_ipv6: Optional[str] = None
    backend_type: str = "vxlan"
    vtep_mac: Optional[str] = None      # BackendData.VtepMAC
    vtep_mac_v6: Optional[str] = None   # BackendV6Data.VtepMAC

    def __post_init__(self) -> None:
        if not self.subnet and not self.ipv6_subnet:
            raise InvalidConfig("a lease needs a Subnet or an IPv6Subnet")
        for value, version, what in ((self.subnet, 4, "Subnet"), (self.ipv6_subnet, 6, "IPv6Subnet")):
            if value:
                try:
                    net = ipaddress.ip_network(value)
                except ValueError as exc:
                    raise InvalidConfig(f"lease {what} {value!r} is not a network: {exc}") from None
                if net.version != version:
                    raise InvalidConfig(f"lease {what} {value!r} is not an IPv{version} network")
        for value, version, what in ((self.public_ip, 4, "PublicIP"), (self.public_ipv6, 6, "PublicIPv6")):
            if value:
                try:
                    ok = ipaddress.ip_address(value).version == version
                except ValueError:
                    ok = False
                if not ok:
                    raise InvalidConfig(f"lease {what} {value!r} is not an IPv{version} address")

    @property
    def name(self) -> str:
        """How errors and logs name this lease: '10.244.2.0/24 (198.18.0.2)'."""
        parts = [f"{s.subnet} ({s.public_ip or 'no public IP'})" for s in self.sides()]
        return " & ".join(parts)

    @property
    def key(self) -> str:
        """The lease's identity: its subnets, as flannel's etcd key '10.244.2.0-24&fd00::-64'."""
        return "&".join(str(s.subnet).replace("/", "-") for s in self.sides())

    def sides(self) -> List[Side]:
        out = []
        if self.subnet:
            out.append(Side(4, ipaddress.ip_network(self.subnet), self.public_ip, self.vtep_mac))
        if self.ipv6_subnet:
            out.append(Side(6, ipaddress.ip_network(self.ipv6_subnet), self.public_ipv6,
                            self.vtep_mac_v6))
        return out

    def side(self, family: int) -> Optional[Side]:
        return next((s for s in self.sides() if s.family == family), None)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Lease":
        if not isinstance(d, dict):
            raise InvalidConfig(f"a lease must be a JSON object, not {d!r}")
        data = d.get("BackendData") or {}
        v6data = d.get("BackendV6Data") or {}
        return cls(subnet=d.get("Subnet"), public_ip=d.get("PublicIP"),
                   ipv6_subnet=d.get("IPv6Subnet"), public_ipv6=d.get("PublicIPv6"),
                   backend_type=d.get("BackendType", "vxlan"),
                   vtep_mac=data.get("VtepMAC") if isinstance(data, dict) else None,
                   vtep_mac_v6=v6data.get("VtepMAC") if isinstance(v6data, dict) else None)

    @classmethod
    def from_lease(cls, lease: Any) -> "Lease":
        """From a :class:`cni_flannel.daemon.lease.Lease` (what the lease managers read)."""
        attrs = lease.attrs
        text = lambda v: str(v) if v is not None else None  # noqa: E731
        mac = lambda data: data.get("VtepMAC") if isinstance(data, dict) else None  # noqa: E731
        return cls(subnet=text(lease.subnet), public_ip=text(attrs.public_ip),
                   ipv6_subnet=text(lease.ipv6_subnet), public_ipv6=text(attrs.public_ipv6),
                   backend_type=attrs.backend_type or "vxlan",
                   vtep_mac=mac(attrs.backend_data), vtep_mac_v6=mac(attrs.backend_v6_data))

    def to_dict(self, vni: Optional[int] = None) -> Dict[str, Any]:
        out: Dict[str, Any] = {"BackendType": self.backend_type}
        for key, value in (("Subnet", self.subnet), ("PublicIP", self.public_ip),
                           ("IPv6Subnet", self.ipv6_subnet), ("PublicIPv6", self.public_ipv6)):
            if value:
                out[key] = value
        for key, mac in (("BackendData", self.vtep_mac), ("BackendV6Data", self.vtep_mac_v6)):
            if mac:
                out[key] = {"VtepMAC": mac, **({"VNI": vni} if vni is not None else {})}
        return out


@dataclass(frozen=True)
class Event:
    type: str                   # ADDED or REMOVED
    lease: Lease

    def __post_init__(self) -> None:
        if self.type not in (ADDED, REMOVED):
            raise InvalidConfig(f"lease event type {self.type!r} is neither {ADDED!r} nor {REMOVED!r}")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Event":
        return cls(type=str(d.get("type", "")).lower(), lease=Lease.from_dict(d.get("lease")))


@dataclass(frozen=True)
class BackendConfig:
    """net-conf.json's Backend section (the keys flanneld reads for vxlan and host-gw)."""
    type: str = "vxlan"
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    gbp: bool = False
    learning: bool = False
    direct_routing: bool = False
    mtu: Optional[int] = None   # the underlay MTU; default: the external interface's

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "BackendConfig":
        d = d or {}
        if not isinstance(d, dict):
            raise InvalidConfig(f"Backend must be a JSON object, not {d!r}")

        def get(key: str, kind: type, default: Any, lo: int = 0, hi: int = 0) -> Any:
            value = d.get(key, default)
            if value is None:
                return default
            if kind is bool and not isinstance(value, bool) or kind is int and (
                    not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi):
                want = f"an integer in {lo}..{hi}" if kind is int else "true or false"
                raise InvalidConfig(f"Backend.{key} = {value!r}: must be {want}")
            return value

        port = get("Port", int, 0, 0, 65535) or DEFAULT_PORT  # 0: the default, as upstream
        mtu = get("MTU", int, 0, 0, 65535) or None  # 0: unset, as upstream
        if mtu is not None and mtu < 68:
            raise InvalidConfig(f"Backend.MTU = {mtu}: must be at least 68 (IPv4's minimum)")
        return cls(type=str(d.get("Type") or "vxlan"), vni=get("VNI", int, DEFAULT_VNI, 0, 16777215),
                   port=port, gbp=get("GBP", bool, False), learning=get("Learning", bool, False),
                   direct_routing=get("DirectRouting", bool, False),
                   mtu=mtu)
