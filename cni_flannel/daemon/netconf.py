"""net-conf.json: the cluster's network plan, as flanneld reads it (pkg/subnet/config.go).

    {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}

Defaults follow flannel exactly:
- EnableIPv4 true, EnableIPv6 false; no Backend at all means type "udp" (the docs say vxlan,
  the code says udp); VNI 1.
- SubnetLen 24 when Network is /22 or larger, else Network prefix + 2 (IPv6: 64 when
  IPv6Network is /62 or larger, else prefix + 2).
- SubnetMin is the *second* subnet (the first would put a node address on the network
  address), SubnetMax the last one.
- Rejected: Network smaller than /28 (IPv6 /124), SubnetLen over 30 (IPv6 126), SubnetLen
  that fits fewer than four times, SubnetMin/Max outside the network or not on a subnet
  boundary.

Keys match case-insensitively, as Go's encoding/json does ("network" works), and the last
spelling wins.  Unknown keys are kept in ``unknown_keys`` so the daemon can warn about typos
that flannel silently ignores.

Kubernetes mode (``kube=True``): flannel only runs the subnet-range checks for the etcd
manager — nodes take their subnet from spec.podCIDR(s) — so there the range values are
computed best-effort and never rejected.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import ConfigError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

DEFAULT_PATH = "/etc/kube-flannel/net-conf.json"
BACKEND_TYPES = ("vxlan", "host-gw", "udp")
DEFAULT_BACKEND_TYPE = "udp"  # pkg/subnet/config.go parseBackendType: no Backend -> "udp"
DEFAULT_VNI = 1
DEFAULT_PORTS = {"vxlan": 8472, "udp": 8285}  # what Port 0 means: the kernel's vxlan port, flannel's udp port
MAX_VNI = (1 << 24) - 1

# Per family: (default subnet length, smallest network prefix that still gets it,
# longest allowed SubnetLen, longest allowed network prefix).
_LIMITS = {4: (24, 22, 30, 28), 6: (64, 62, 126, 124)}
_KEYS = {4: ("Network", "SubnetLen", "SubnetMin", "SubnetMax"),
         6: ("IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax")}
_KNOWN = {k.lower() for k in ("EnableIPv4", "EnableIPv6", "EnableNFTables", "Backend", "Networks",
                              "IPv6Networks", *_KEYS[4], *_KEYS[6])}
_BACKEND_KNOWN = {k.lower() for k in ("Type", "VNI", "Port", "MTU", "DirectRouting", "GBP", "Learning")}


class NetConfError(ConfigError):
    """net-conf.json cannot work; the message names the key, the value and what to do."""

    def __init__(self, msg: str, hint: str = "") -> None:
        super().__init__(f"{msg}: {hint}" if hint else msg)
        self.hint = hint


@dataclass(frozen=True)
class Pool:
    """One family's plan: the cluster network and the range node subnets are leased from."""

    network: Network
    subnet_len: int
    subnet_min: Address  # network address of the first leasable subnet
    subnet_max: Address  # network address of the last leasable subnet

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def subnet_size(self) -> int:
        return 1 << (self.network.max_prefixlen - self.subnet_len)

    def subnet_at(self, address: Address) -> Network:
        return ipaddress.ip_network(f"{address}/{self.subnet_len}", strict=False)

    @property
    def first(self) -> Network:
        return self.subnet_at(self.subnet_min)

    @property
    def last(self) -> Network:
        return self.subnet_at(self.subnet_max)


@dataclass(frozen=True)
class Backend:
    type: str = DEFAULT_BACKEND_TYPE
    vni: int = DEFAULT_VNI
    port: int = 0  # 0: the backend's default (DEFAULT_PORTS)
    mtu: int = 0  # 0: take the external interface's MTU
    direct_routing: bool = False
    gbp: bool = False
    learning: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS.get(self.type, 0)


@dataclass(frozen=True)
class NetConf:
    ipv4: Optional[Pool]  # None when EnableIPv4 is false
    ipv6: Optional[Pool]  # None unless EnableIPv6
    backend: Backend = field(default_factory=Backend)
    enable_nftables: bool = False
    unknown_keys: Tuple[str, ...] = ()
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def enable_ipv4(self) -> bool:
        return self.ipv4 is not None

    @property
    def enable_ipv6(self) -> bool:
        return self.ipv6 is not None

    @property
    def pools(self) -> Tuple[Pool, ...]:
        """The enabled families, IPv4 first: the one loop both families go through."""
        return tuple(p for p in (self.ipv4, self.ipv6) if p is not None)

    def pool(self, version: int) -> Optional[Pool]:
        return self.ipv4 if version == 4 else self.ipv6


def load(path: str = DEFAULT_PATH, kube: bool = False) -> NetConf:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise NetConfError(f"cannot read {path}: {exc.strerror}",
                           "mount the flannel ConfigMap's net-conf.json there or pass its path") from None
    return parse(text, path, kube=kube)


def vtep_device_name(vni: int, family: int) -> str:
    """The vxlan backend's device per family, named as upstream's: flannel.<VNI>, flannel-v6.<VNI>."""
    return f"flannel.{vni}" if family == 4 else f"flannel-v6.{vni}"


def parse(text: str, source: str = "net-conf.json", kube: bool = False) -> NetConf:
    try:
        raw = json.loads(text)
        folded = json.loads(text, object_pairs_hook=_fold)
    except ValueError as exc:
        raise NetConfError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(folded, dict):
        raise NetConfError(f"{source} must be a JSON object, got {_show(raw)}")
    c = _Reader(folded, source)
    enable4 = c.boolean("EnableIPv4", True)
    enable6 = c.boolean("EnableIPv6", False)
    if not enable4 and not enable6:
        raise NetConfError(f"{source}: EnableIPv4 and EnableIPv6 are both false",
                           "enable at least one family")
    backend = _backend(c, folded.get("backend"), source)
    if enable6 and backend.type == "udp":
        raise NetConfError(f"{source}: Backend.Type udp carries IPv4 only, but EnableIPv6 is true",
                           'use "Type": "vxlan" or "host-gw" for IPv6')
    if backend.type == "vxlan":
        from cni_flannel.cni.names import interface_name_problem

        for family in (4, 6) if enable6 else (4,):
            name = vtep_device_name(backend.vni, family)
            if (family == 4 and not enable4) or not interface_name_problem(name):
                continue
            raise NetConfError(f"{source}: Backend.VNI={backend.vni} makes the VTEP name {name}, longer than "
                               f"the kernel's 15 bytes", "use a VNI of at most "
                               + ("9999999" if family == 4 else "9999") + " (upstream names the devices alike)")
    pools = {v: _pool(c, v, kube) if on else None for v, on in ((4, enable4), (6, enable6))}
    unknown = tuple(k for k in (raw if isinstance(raw, dict) else {}) if k.lower() not in _KNOWN)
    return NetConf(ipv4=pools[4], ipv6=pools[6], backend=backend,
                   enable_nftables=c.boolean("EnableNFTables", False), unknown_keys=unknown,
                   raw=raw)


def _pool(c: _Reader, version: int, kube: bool) -> Pool:
    net_key, len_key, min_key, max_key = _KEYS[version]
    default_len, big_prefix, max_len, max_prefix = _LIMITS[version]
    network = c.network(net_key, version)
    if network is None:
        raise NetConfError(f"{c.source}: {net_key} is missing",
                           f'set it to the pod network, e.g. "{net_key}": '
                           f'"{"10.244.0.0/16" if version == 4 else "fd00:10:244::/56"}"'
                           + ("" if version == 6 else ', or set "EnableIPv4": false for IPv6 only'))
    check = not kube
    subnet_len = c.uint(len_key)
    if subnet_len:  # 0 means unset, as in flannel
        if check and subnet_len > max_len:
            raise NetConfError(f"{c.source}: {len_key}={subnet_len} is too long: a node subnet needs room for "
                               f"the gateway and pods", f"use {max_len} or less")
        if check and subnet_len < network.prefixlen + 2:
            raise NetConfError(f"{c.source}: {len_key}={subnet_len} splits {net_key}={network} into fewer than "
                               f"four subnets (the first is never leased)",
                               f"use {network.prefixlen + 2} or more, or a larger {net_key}")
    else:
        if check and network.prefixlen > max_prefix:
            raise NetConfError(f"{c.source}: {net_key}={network} is too small: flannel needs at least a "
                               f"/{max_prefix}", f"use a larger {net_key}")
        subnet_len = default_len if network.prefixlen <= big_prefix else network.prefixlen + 2
    # Out-of-range lengths get this far only in kube mode, where they are never used: clamp.
    subnet_len = max(min(subnet_len, network.max_prefixlen), network.prefixlen)
    size = 1 << (network.max_prefixlen - subnet_len)
    base = int(network.network_address)
    lo = c.address(min_key, version)
    hi = c.address(max_key, version)
    lo = lo if lo is not None else ipaddress.ip_address(min(base + size, int(network.broadcast_address)))
    hi = hi if hi is not None else ipaddress.ip_address(base + network.num_addresses - size)
    if check:
        for key, addr in ((min_key, lo), (max_key, hi)):
            if addr not in network:
                raise NetConfError(f"{c.source}: {key}={addr} is outside {net_key}={network}",
                                   f"pick a subnet inside {network} or drop {key} for the default")
            if int(addr) % size:
                aligned = ipaddress.ip_address(int(addr) - int(addr) % size)
                raise NetConfError(f"{c.source}: {key}={addr} is not on a /{subnet_len} boundary",
                                   f"use {aligned} (the start of its /{subnet_len})")
        if int(lo) > int(hi):
            raise NetConfError(f"{c.source}: {min_key}={lo} is above {max_key}={hi}: no subnet to lease",
                               "swap them or widen the range")
    return Pool(network=network, subnet_len=subnet_len, subnet_min=lo, subnet_max=hi)


def _backend(c: _Reader, value: Any, source: str) -> Backend:
    if value is None:  # absent (or null): flannel's default, not the docs'
        return Backend()
    if not isinstance(value, dict):
        raise NetConfError(f"{source}: Backend must be an object, got {_show(value)}",
                           'e.g. "Backend": {"Type": "vxlan"}')
    b = _Reader(value, source, "Backend.")
    kind = b.text("Type")
    if kind not in BACKEND_TYPES:
        hint = f"use one of {', '.join(BACKEND_TYPES)}"
        if kind and kind.lower() in BACKEND_TYPES:
            hint = f'backend types are lower case: use "{kind.lower()}"'
        raise NetConfError(f"{source}: Backend.Type={kind or '(missing)'} is not a backend this daemon has", hint)
    vni = b.uint("VNI", DEFAULT_VNI)
    port = b.uint("Port")
    mtu = b.uint("MTU")
    if vni > MAX_VNI:
        raise NetConfError(f"{source}: Backend.VNI={vni} does not fit in 24 bits", f"use 0 to {MAX_VNI}")
    if port > 65535:
        raise NetConfError(f"{source}: Backend.Port={port} is not a UDP port", "use 1 to 65535, or 0 for the default")
    if mtu and not 68 <= mtu <= 65535:
        raise NetConfError(f"{source}: Backend.MTU={mtu} is not a valid MTU",
                           "give the underlay's MTU (68 to 65535), or drop it to use the interface's")
    raw = {k: v for k, v in value.items()}
    return Backend(type=kind, vni=vni, port=port, mtu=mtu, direct_routing=b.boolean("DirectRouting", False),
                   gbp=b.boolean("GBP", False), learning=b.boolean("Learning", False), raw=raw)


def parse_backend(value: Any, source: str = "net-conf.json", default_type: str = "") -> Backend:
    """net-conf.json's Backend section alone (a dict; keys case-insensitive, as Go reads them).
    ``default_type`` fills a missing Type (the backend driver names its backend itself)."""
    if isinstance(value, dict):
        value = json.loads(json.dumps(value), object_pairs_hook=_fold)
        if default_type and not value.get("type"):
            value["type"] = default_type
    elif value is None and default_type:
        value = {"type": default_type}
    return _backend(_Reader({}, source), value, source)


def _fold(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    # Go's encoding/json matches struct fields case-insensitively; the last key given wins.
    out: Dict[str, Any] = {}
    for key, value in pairs:
        out[key.lower()] = value
    return out


def _show(value: Any) -> str:
    return json.dumps(value)


class _Reader:
    """Typed access to a case-folded object, with errors that name the key as written in the docs."""

    def __init__(self, obj: Dict[str, Any], source: str, prefix: str = "") -> None:
        self.obj, self.source, self.prefix = obj, source, prefix

    def _get(self, key: str) -> Any:
        return self.obj.get(key.lower())

    def _bad(self, key: str, value: Any, want: str) -> NetConfError:
        return NetConfError(f"{self.source}: {self.prefix}{key}={_show(value)} must be {want}")

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false (a JSON boolean, not a string)")
        return value

    def uint(self, key: str, default: int = 0) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad(key, value, "a non-negative whole number")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        return value

    def network(self, key: str, version: int) -> Optional[Network]:
        text = self.text(key)
        if not text:
            return None
        try:
            net = ipaddress.ip_network(text, strict=False)  # host bits are masked off, as net.ParseCIDR does
        except ValueError:
            raise self._bad(key, text, "a CIDR such as " + ("10.244.0.0/16" if version == 4 else "fd00:10:244::/56")) from None
        if "/" not in text or net.version != version:
            raise self._bad(key, text, f"an IPv{version} CIDR with a prefix length")
        return net

    def address(self, key: str, version: int) -> Optional[Address]:
        text = self.text(key)
        if not text:
            return None
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            addr = None
        if addr is None or addr.version != version:
            raise self._bad(key, text, f"an IPv{version} address (the subnet's network address, no /len)")
        return addr
